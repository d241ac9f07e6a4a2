"""RollbackCallback: go back to the last healthy state, with lower learning rates, when training breaks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import Schedule

from sb3_safe.callback_options import RollbackOptions
from sb3_safe.callbacks.guard import NonFiniteGuardCallback
from sb3_safe.callbacks.monitor import HealthMonitorCallback
from sb3_safe.checkpoints import save_with_stats
from sb3_safe.confirmation import SnapshotConfirmer
from sb3_safe.health import Finding, gain_lost
from sb3_safe.runs import RunFolder, append_jsonl
from sb3_safe.schedules import adaptive_rate_of
from sb3_safe.snapshots import Snapshot, restore_snapshot, take_snapshot

__all__ = ["RollbackCallback", "RollbackOptions", "ScaledSchedule"]


class ScaledSchedule:
    """A learning-rate schedule multiplied by a constant (picklable, so saved models keep it)."""

    def __init__(self, schedule: Schedule, factor: float) -> None:
        self.schedule = schedule
        self.factor = factor

    def __call__(self, progress_remaining: float) -> float:
        return float(self.schedule(progress_remaining)) * self.factor

    def __repr__(self) -> str:
        return f"ScaledSchedule({self.schedule!r}, {self.factor})"


class RollbackCallback(BaseCallback):
    """
    Keep the last healthy state and go back to it, with lower learning rates, when training breaks.

    Composed of: a :class:`~sb3_safe.callbacks.NonFiniteGuardCallback` of its own (NaN/inf
    observations and rewards are zeroed as they arrive), snapshots
    (:mod:`sb3_safe.snapshots`: policy ``state_dict`` with value-normalizer statistics,
    optimizer state, VecNormalize statistics, copied in memory after every healthy update),
    and :class:`~sb3_safe.confirmation.SnapshotConfirmer`, which decides when a snapshot is
    healthy: after ``confirm_updates`` further clean updates, once the episodes started after
    it (at least ``confirm_episodes``) have not lost ``reward_collapse_fraction`` of the
    training's gain (the monitor's reward-collapse rule); a snapshot still short of episodes
    after ``confirm_max_updates`` updates is confirmed on updates alone.

    When the monitor reports a critical finding (non-finite values, value divergence, reward
    collapse), the healthy snapshot is restored bit for bit, the learning rates are multiplied
    by ``lr_factor``, the environments are reset, the discarded policy's episodes are
    forgotten, and training goes on. The next trouble after ``max_rollbacks`` rollbacks
    restores the snapshot once more, saves it as ``last_healthy_model.zip`` and stops
    training (``exhausted`` is then true).

    :param monitor: The :class:`HealthMonitorCallback` to act on (default: a silent one of its own)
    :param lr_factor: See :class:`RollbackOptions`
    :param max_rollbacks: See :class:`RollbackOptions`
    :param confirm_updates: See :class:`RollbackOptions`
    :param confirm_episodes: See :class:`RollbackOptions`
    :param confirm_max_updates: See :class:`RollbackOptions`
    :param save_path: Folder for ``last_healthy_model.zip`` (default: the logger's folder, if any)
    :param verbose: 1 prints each rollback
    """

    def __init__(
        self,
        monitor: HealthMonitorCallback | None = None,
        lr_factor: float = 0.5,
        max_rollbacks: int = 3,
        confirm_updates: int = 2,
        confirm_episodes: int = 5,
        confirm_max_updates: int = 10,
        save_path: str | Path | None = None,
        verbose: int = 1,
    ) -> None:
        super().__init__(verbose)
        self.options = RollbackOptions(lr_factor, max_rollbacks, confirm_updates, confirm_episodes, confirm_max_updates)
        #: Whether the monitor is this callback's own (not in the callback list: this callback drives it)
        self._own_monitor = monitor is None
        self.monitor = monitor or HealthMonitorCallback(verbose=0)
        self.guard = NonFiniteGuardCallback(self.monitor)
        self.confirmer: SnapshotConfirmer[Snapshot] = SnapshotConfirmer(confirm_updates, confirm_episodes, confirm_max_updates)
        self.save_path = None if save_path is None else Path(save_path)
        self.rollbacks = 0
        self.exhausted = False
        #: The snapshot a rollback restores
        self.healthy: Snapshot | None = None
        self._last_id: int | None = None
        # Global timestep at which each environment's current episode started.
        self._episode_start = np.zeros(0, dtype=np.int64)

    def _init_callback(self) -> None:
        if getattr(self.monitor, "model", None) is None:
            self.monitor.init_callback(self.model)
        self.guard.init_callback(self.model)
        if self.save_path is None and self.logger is not None and self.logger.get_dir():
            self.save_path = Path(self.logger.get_dir())  # type: ignore[arg-type]

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        self.guard.update_locals(locals_)

    def _on_training_start(self) -> None:
        if self._own_monitor:
            self.monitor.on_training_start(self.locals, self.globals)
        self.guard.on_training_start(self.locals, self.globals)
        self.healthy = self.snapshot()
        starts = np.asarray(self.model._last_episode_starts, dtype=bool)
        self._episode_start = np.where(starts, self.num_timesteps, -1).astype(np.int64)

    def _on_rollout_start(self) -> None:
        self._after_update()
        self.guard.on_rollout_start()

    def _on_rollout_end(self) -> None:
        # Idempotent: harmless when the monitor is also in the callback list, needed when it is not.
        self.monitor.on_rollout_end()

    def _on_training_end(self) -> None:
        # The last update can break too: leave the model in its last healthy state, not that one.
        self._after_update()

    def _on_step(self) -> bool:
        self.guard.on_step()
        dones = self.locals.get("dones")
        if dones is not None and dones.any() and len(self._episode_start) == len(dones):
            infos = self.locals.get("infos") or [{}] * len(dones)
            for env_index in np.flatnonzero(dones):
                episode = infos[env_index].get("episode")
                if episode is not None:
                    self.confirmer.episode_finished(int(self._episode_start[env_index]), float(episode["r"]))
                self._episode_start[env_index] = self.num_timesteps
        return not self.exhausted

    def _after_update(self) -> None:
        self.monitor.check()
        update_id = self.monitor.last_update_id
        if update_id is None or update_id == self._last_id:
            return
        self._last_id = update_id
        if self.monitor.critical:
            self._roll_back(self.monitor.latest)
        else:
            self._advance()

    # -- snapshots

    def snapshot(self) -> Snapshot:
        """:return: A snapshot of the model now (see :func:`sb3_safe.snapshots.take_snapshot`)"""
        return take_snapshot(self.model, health=self.monitor.history)

    def restore(self, snapshot: Snapshot) -> None:
        """Restore a snapshot bit for bit."""
        restore_snapshot(self.model, snapshot)

    def _advance(self) -> None:
        snapshot = self.snapshot()
        confirmed = self.confirmer.add(snapshot.timesteps, snapshot, self._healthy_return)
        if confirmed is not None:
            self.healthy = confirmed

    def _healthy_return(self, mean_return: float) -> bool:
        thresholds = self.monitor.thresholds
        lost = gain_lost(self.monitor.history, mean_return, thresholds)
        return lost is None or lost < thresholds.reward_collapse_fraction

    # -- rollback

    def _roll_back(self, findings: list[Finding]) -> None:
        assert self.healthy is not None
        self.confirmer.clear()
        self.restore(self.healthy)
        if self.healthy.health is not None:
            self.monitor.restore_history(self.healthy.health)
        # The episodes in the buffer were played by the policy just thrown away: left there, they
        # keep ep_rew_mean low and raise reward_collapse again right after the rollback.
        for buffer in (self.model.ep_info_buffer, self.model.ep_success_buffer):
            if buffer is not None:
                buffer.clear()
        reasons = ", ".join(f.code for f in findings if f.severity == "critical")
        if self.rollbacks >= self.options.max_rollbacks:
            self._stop(reasons)
            return
        self.rollbacks += 1
        adaptive = adaptive_rate_of(self.model)
        if adaptive is not None:
            adaptive.back_off(self.options.lr_factor)  # the rate and its ceiling (the rule would climb back)
        else:
            self.model.lr_schedule = ScaledSchedule(self.model.lr_schedule, self.options.lr_factor)
        critic = getattr(self.model, "critic_lr_schedule", None)
        if critic is not None:
            self.model.critic_lr_schedule = ScaledSchedule(critic, self.options.lr_factor)  # type: ignore[attr-defined]
        # The environments may hold NaN state (a NaN observation feeds NaN actions back in): start them afresh.
        env = self.model.get_env()
        assert env is not None
        self.model._last_obs = env.reset()  # type: ignore[assignment]
        self.model._last_episode_starts = np.ones(env.num_envs, dtype=bool)
        self._episode_start = np.full(env.num_envs, self.num_timesteps, dtype=np.int64)
        lr = self.model.lr_schedule(self.model._current_progress_remaining)
        self.logger.record("health/rollbacks", self.rollbacks)
        event = {
            "event": "rollback",
            "timestep": self.num_timesteps,
            "restored_timestep": self.healthy.timesteps,
            "reasons": reasons,
            "rollbacks": self.rollbacks,
            "learning_rate": lr,
        }
        append_jsonl(self.monitor.log_path, event)
        if self.verbose >= 1:
            print(
                f"[rollback] step {self.num_timesteps:,}: {reasons}; restored the state from step "
                f"{self.healthy.timesteps:,}, learning rate now {lr:.3g} "
                f"(rollback {self.rollbacks}/{self.options.max_rollbacks}).",
                flush=True,
            )

    def _stop(self, reasons: str) -> None:
        assert self.healthy is not None
        self.exhausted = True
        if self.save_path is not None:
            save_with_stats(self.model, RunFolder(self.save_path).last_healthy_model)
        append_jsonl(self.monitor.log_path, {"event": "stopped", "timestep": self.num_timesteps, "reasons": reasons})
        if self.verbose >= 1:
            print(
                f"[rollback] step {self.num_timesteps:,}: {reasons} again after {self.rollbacks} rollbacks; stopping "
                f"with the last healthy model (from step {self.healthy.timesteps:,}).",
                flush=True,
            )

    @property
    def summary(self) -> str:
        """One sentence on what happened, for the command line."""
        if not self.exhausted:
            return f"{self.rollbacks} rollback(s)"
        return (
            f"training stopped after {self.rollbacks} rollbacks: the run kept breaking "
            f"({', '.join(sorted(self.monitor.critical_codes))}). "
            "The last healthy model is last_healthy_model.zip in the run folder; resume from it with "
            "--checkpoint and a lower learning_rate, or use the safe profile"
        )
