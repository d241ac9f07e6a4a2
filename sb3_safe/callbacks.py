"""
SB3 callbacks that watch training health and roll back to the last healthy state instead of crashing.

Use them in any SB3 script::

    from sb3_safe.callbacks import HealthMonitorCallback, RollbackCallback

    monitor = HealthMonitorCallback()
    model.learn(100_000, callback=[monitor, RollbackCallback(monitor=monitor)])

With :class:`sb3_safe.SafePPO` they read its per-update record (``model.last_update``). With
plain ``PPO`` they read the ``train/*`` values SB3's logger holds between ``train()`` and the
next dump; SB3 records no gradient norms, skipped updates, return spread or parameter check,
so ``non_finite`` then sees only losses, KL, returns, observations and rewards, and
``value_collapse`` cannot tell a solved task (returns that barely vary) from a broken critic.
"""

from __future__ import annotations

import copy
import json
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import Schedule

from sb3_safe.config import TrainConfig
from sb3_safe.errors import ConfigError
from sb3_safe.health import SEVERITY_RANK, EpisodeTracker, Finding, Thresholds, detect, gain_lost
from sb3_safe.runs import atomic_write, save_with_stats

__all__ = ["HealthMonitorCallback", "RollbackCallback", "ScaledSchedule", "health_callbacks"]


def _jsonl(path: Path | None, record: Mapping[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


class HealthMonitorCallback(BaseCallback):
    """
    After every PPO update, run the detectors of :mod:`sb3_safe.health` and report what is wrong.

    Each episode of trouble (a finding code that starts firing) is printed once with its
    advice, appended to ``health.jsonl`` and recorded to the logger as ``health/<code>``
    (1 info, 2 warning, 3 critical); ``health/critical`` is 1 while any critical finding holds.

    :param thresholds: A :class:`~sb3_safe.health.Thresholds` or a mapping of its fields
    :param log_path: The ``health.jsonl`` file (default: ``health.jsonl`` in the logger's folder, if any)
    :param quiet_updates: A code is reported again after this many updates without it
    :param verbose: 1 prints findings, 0 is silent
    """

    def __init__(
        self,
        thresholds: Thresholds | Mapping[str, Any] | None = None,
        log_path: str | Path | None = None,
        quiet_updates: int = 5,
        verbose: int = 1,
    ) -> None:
        super().__init__(verbose)
        self.thresholds = thresholds if isinstance(thresholds, Thresholds) else Thresholds(**(thresholds or {}))
        self.log_path = None if log_path is None else Path(log_path)
        self.history: list[dict[str, float]] = []
        #: Findings that opened an episode of trouble, in time order
        self.findings: list[Finding] = []
        #: Every finding at the latest update
        self.latest: list[Finding] = []
        self._tracker = EpisodeTracker(quiet_updates)
        self._last_update_id: int | None = None
        self._rollout_flags: dict[str, float] = {}

    def _init_callback(self) -> None:
        if self.log_path is None:
            folder = self.logger.get_dir() if self.logger is not None else None
            self.log_path = Path(folder) / "health.jsonl" if folder else None

    @property
    def critical(self) -> bool:
        """Whether a critical finding holds at the latest update."""
        return any(f.severity == "critical" for f in self.latest)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = getattr(self.model, "rollout_buffer", None)
        if buffer is not None:
            self.note("obs_finite", _finite(buffer.observations))
            self.note("rewards_finite", bool(np.isfinite(buffer.rewards).all()))

    def note(self, flag: str, ok: bool) -> None:
        """Record a check (``obs_finite``, ``rewards_finite``) for the next update's row; a failure sticks until then."""
        self._rollout_flags[flag] = min(self._rollout_flags.get(flag, 1.0), float(ok))

    def _on_rollout_start(self) -> None:
        self.check()

    def _on_training_end(self) -> None:
        self.check()

    def _row(self) -> dict[str, float] | None:
        """The latest update's metrics, or ``None`` when no new update ran since the last check."""
        update_id = int(getattr(self.model, "_n_updates", 0))
        if update_id == 0 or update_id == self._last_update_id:
            return None
        self._last_update_id = update_id
        record = getattr(self.model, "last_update", None)
        if record is not None:
            row = {k: float(v) for k, v in record.as_dict().items() if isinstance(v, (int, float))}
        else:  # plain PPO: what SB3's logger holds until the next dump
            row = {k.removeprefix("train/"): float(v) for k, v in self.logger.name_to_value.items() if k.startswith("train/")}
            row["timesteps"] = float(self.num_timesteps)
        episodes = self.model.ep_info_buffer
        if episodes:
            row["ep_rew_mean"] = float(np.mean([ep["r"] for ep in episodes]))
            row["episodes"] = float(len(episodes))
        row.update(self._rollout_flags)
        self._rollout_flags = {}
        return row

    def check(self) -> list[Finding]:
        """
        Process the latest update if it is new (idempotent, so several callbacks may call it).

        :return: The findings at the latest update
        """
        row = self._row()
        if row is None:
            return self.latest
        self.history.append(row)
        target_kl = getattr(self.model, "target_kl", None)
        self.latest = detect(self.history, self.thresholds, target_kl)
        for finding in self.latest:
            self.logger.record(f"health/{finding.code}", SEVERITY_RANK[finding.severity] + 1)
        self.logger.record("health/critical", int(self.critical))
        for finding in self._tracker.new(self.latest):
            self.findings.append(finding)
            _jsonl(self.log_path, {"event": "finding", **finding.as_dict()})
            if self.verbose >= 1:
                print(
                    f"[health] step {finding.timestep:,} {finding.severity.upper()} {finding.code}: {finding.message} "
                    f"Advice: {finding.advice}",
                    flush=True,
                )
        return self.latest

    def forget_after(self, length: int) -> None:
        """Drop history rows past ``length`` (after a rollback, the rolled-back updates no longer count)."""
        del self.history[length:]
        self.latest = []


def _finite(array: Any) -> bool:
    if isinstance(array, dict):
        return all(bool(np.isfinite(v).all()) for v in array.values())
    return bool(np.isfinite(array).all())


def _zero_non_finite(array: Any) -> None:
    for part in array.values() if isinstance(array, dict) else [array]:
        part[~np.isfinite(part)] = 0


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

    Non-finite observations and rewards are replaced with 0 as they arrive (a NaN
    observation would otherwise crash the rollout in torch's action distribution) and the
    update is reported as ``non_finite``. A snapshot holds the policy's ``state_dict``
    (value-normalizer statistics included), the optimizer's state and the VecNormalize
    statistics, copied in memory. A snapshot becomes "healthy" once ``confirm_updates``
    further updates passed without a critical finding (a divergence that takes two updates
    to show does not poison it) and the episodes played from it onwards vouch for it: at
    least ``confirm_episodes`` episodes that started after the snapshot, whose mean return
    has not lost ``reward_collapse_fraction`` of the training's gain (the monitor's reward
    collapse rule). A snapshot whose episodes collapsed is discarded. The training-episode
    mean the monitor watches lags the policy by up to 100 episodes; the snapshot's own
    episodes do not (on Hopper-v5 a policy that fell over at once was "healthy" by the
    lagging mean). A snapshot still short of episodes after ``confirm_max_updates``
    updates is confirmed on updates alone. When the monitor
    reports a critical finding (non-finite values, value divergence, reward collapse), the
    healthy snapshot is restored bit for bit, the learning rates are multiplied by
    ``lr_factor``, the environments are reset, and training goes on. The next trouble after
    ``max_rollbacks`` rollbacks restores the snapshot once more, saves it as
    ``last_healthy_model.zip`` and stops training (``exhausted`` is then true).

    :param monitor: The :class:`HealthMonitorCallback` to act on (default: a silent one of its own)
    :param lr_factor: Multiply the learning rates (actor and critic) by this at each rollback
    :param max_rollbacks: Rollbacks allowed before training stops
    :param confirm_updates: Healthy updates a snapshot must survive before it can be restored
    :param confirm_episodes: Episodes started after a snapshot that must vouch for it (0: updates alone)
    :param confirm_max_updates: Updates after which a snapshot short of episodes is confirmed anyway
    :param save_path: Folder for ``last_healthy.pt`` (the healthy snapshot, rewritten as it advances)
        and ``last_healthy_model.zip`` (default: the logger's folder, if any)
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
        if not 0 < lr_factor <= 1:
            raise ValueError(f"`lr_factor` must be in (0, 1], got {lr_factor!r}: it scales the learning rates down")
        if min(max_rollbacks, confirm_updates, confirm_episodes) < 0:
            raise ValueError("`max_rollbacks`, `confirm_updates` and `confirm_episodes` must be >= 0")
        if confirm_max_updates < confirm_updates:
            raise ValueError(f"`confirm_max_updates` ({confirm_max_updates}) must be >= `confirm_updates` ({confirm_updates})")
        self.monitor = monitor or HealthMonitorCallback(verbose=0)
        self.lr_factor = lr_factor
        self.max_rollbacks = max_rollbacks
        self.confirm_updates = confirm_updates
        self.confirm_episodes = confirm_episodes
        self.confirm_max_updates = confirm_max_updates
        self.save_path = None if save_path is None else Path(save_path)
        self.rollbacks = 0
        self.exhausted = False
        self.healthy: dict[str, Any] | None = None
        self._candidates: deque[dict[str, Any]] = deque()
        self._last_id: int | None = None
        # Global timestep at which each environment's current episode started (-1: before training),
        # and (start, return) of the episodes finished since the oldest candidate was taken.
        self._episode_start = np.zeros(0, dtype=np.int64)
        self._episodes: list[tuple[int, float]] = []

    def _init_callback(self) -> None:
        if getattr(self.monitor, "model", None) is None:
            self.monitor.init_callback(self.model)
        if self.save_path is None and self.logger is not None and self.logger.get_dir():
            self.save_path = Path(self.logger.get_dir())  # type: ignore[arg-type]

    def _on_training_start(self) -> None:
        self.healthy = self.snapshot()
        starts = np.asarray(self.model._last_episode_starts, dtype=bool)
        self._episode_start = np.where(starts, self.num_timesteps, -1).astype(np.int64)

    def _on_rollout_end(self) -> None:
        # Idempotent: harmless when the monitor is also in the callback list, needed when it is not.
        self.monitor.on_rollout_end()

    def _on_training_end(self) -> None:
        # The last update can break too: leave the model in its last healthy state, not that one.
        self._after_update()

    def _on_rollout_start(self) -> None:
        self._after_update()

    def _after_update(self) -> None:
        self.monitor.check()
        update_id = self.monitor._last_update_id
        if update_id is None or update_id == self._last_id:
            return
        self._last_id = update_id
        if self.monitor.critical:
            self._roll_back(self.monitor.latest)
        else:
            self._advance()

    def _on_step(self) -> bool:
        # Replace NaN/inf in the new observations and rewards before the policy sees them: a NaN
        # observation would make the action distribution raise (torch validates its arguments),
        # a crash no rollback could follow. The update is then reported as non_finite.
        new_obs, rewards = self.locals.get("new_obs"), self.locals.get("rewards")
        broken = False
        if new_obs is not None and not _finite(new_obs):
            _zero_non_finite(new_obs)
            self.monitor.note("obs_finite", False)
            broken = True
        if rewards is not None and not np.isfinite(rewards).all():
            rewards[~np.isfinite(rewards)] = 0.0
            self.monitor.note("rewards_finite", False)
            broken = True
        if broken:
            self._repair_vec_normalize()
        dones = self.locals.get("dones")
        if dones is not None and dones.any() and len(self._episode_start) == len(dones):
            infos = self.locals.get("infos") or [{}] * len(dones)
            for env_index in np.flatnonzero(dones):
                episode = infos[env_index].get("episode")
                if episode is not None:
                    self._episodes.append((int(self._episode_start[env_index]), float(episode["r"])))
                self._episode_start[env_index] = self.num_timesteps
        return not self.exhausted

    def _repair_vec_normalize(self) -> None:
        """
        VecNormalize has already folded the NaN into its running statistics: put back the healthy
        ones now, before an evaluation syncs them or a checkpoint saves them.
        """
        venv = self.model.get_vec_normalize_env()
        saved = None if self.healthy is None else self.healthy["vec_normalize"]
        if venv is None or saved is None:
            return
        for name, stats in saved.items():
            current = getattr(venv, name)
            if not (_finite(current.mean) and _finite(current.var)):
                setattr(venv, name, copy.deepcopy(stats))
        venv.returns[~np.isfinite(venv.returns)] = 0.0

    # -- snapshots

    def snapshot(self) -> dict[str, Any]:
        """:return: A deep copy of everything a rollback restores"""
        venv = self.model.get_vec_normalize_env()
        policy = self.model.policy
        return {
            "policy": {k: v.detach().clone() for k, v in policy.state_dict().items()},
            "optimizer": copy.deepcopy(policy.optimizer.state_dict()),
            "vec_normalize": None
            if venv is None
            else {name: copy.deepcopy(getattr(venv, name)) for name in ("obs_rms", "ret_rms") if hasattr(venv, name)},
            "timesteps": self.model.num_timesteps,
            "history_length": len(self.monitor.history),
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Restore a snapshot bit for bit (tensors copied into the existing parameters)."""
        policy = self.model.policy
        policy.load_state_dict(snapshot["policy"])
        policy.optimizer.load_state_dict(copy.deepcopy(snapshot["optimizer"]))
        venv = self.model.get_vec_normalize_env()
        if venv is not None and snapshot["vec_normalize"] is not None:
            for name, value in snapshot["vec_normalize"].items():
                setattr(venv, name, copy.deepcopy(value))
            venv.returns = np.zeros_like(venv.returns)

    def _advance(self) -> None:
        self._candidates.append(self.snapshot())
        promoted = False
        while len(self._candidates) > self.confirm_updates:
            verdict = self._vouched(self._candidates[0], age=len(self._candidates) - 1)
            if verdict is None:
                break
            candidate = self._candidates.popleft()
            if verdict:
                self.healthy, promoted = candidate, True
        oldest = self._candidates[0]["timesteps"] if self._candidates else self.num_timesteps
        self._episodes = [episode for episode in self._episodes if episode[0] >= oldest]
        if promoted and self.save_path is not None:
            healthy = self.healthy
            atomic_write(self.save_path / "last_healthy.pt", lambda path: th.save(healthy, path))

    def _vouched(self, candidate: Mapping[str, Any], age: int) -> bool | None:
        """
        Judge a candidate snapshot by the episodes that started after it.

        :return: Whether it is healthy, or ``None`` while too few of its episodes finished
        """
        if self.confirm_episodes == 0:
            return True
        returns = [ret for start, ret in self._episodes if start >= candidate["timesteps"]]
        if len(returns) < self.confirm_episodes:
            return True if age >= self.confirm_max_updates else None
        thresholds = self.monitor.thresholds
        lost = gain_lost(self.monitor.history, float(np.mean(returns)), thresholds)
        return lost is None or lost < thresholds.reward_collapse_fraction

    # -- rollback

    def _roll_back(self, findings: list[Finding]) -> None:
        assert self.healthy is not None
        self._candidates.clear()
        self.restore(self.healthy)
        self.monitor.forget_after(self.healthy["history_length"])
        # The episodes in the buffer were played by the policy just thrown away: left there, they
        # keep ep_rew_mean low and raise reward_collapse again right after the rollback.
        for buffer in (self.model.ep_info_buffer, self.model.ep_success_buffer):
            if buffer is not None:
                buffer.clear()
        reasons = ", ".join(f.code for f in findings if f.severity == "critical")
        if self.rollbacks >= self.max_rollbacks:
            self.exhausted = True
            if self.save_path is not None and isinstance(self.model, PPO):
                save_with_stats(self.model, self.save_path / "last_healthy_model.zip")
            _jsonl(self.monitor.log_path, {"event": "stopped", "timestep": self.num_timesteps, "reasons": reasons})
            if self.verbose >= 1:
                print(
                    f"[rollback] step {self.num_timesteps:,}: {reasons} again after {self.rollbacks} rollbacks; stopping "
                    f"with the last healthy model (from step {self.healthy['timesteps']:,}).",
                    flush=True,
                )
            return
        self.rollbacks += 1
        self.model.lr_schedule = ScaledSchedule(self.model.lr_schedule, self.lr_factor)
        critic = getattr(self.model, "critic_lr_schedule", None)
        if critic is not None:
            self.model.critic_lr_schedule = ScaledSchedule(critic, self.lr_factor)  # type: ignore[attr-defined]
        # The environments may hold NaN state (a NaN observation feeds NaN actions back in): start them afresh.
        env = self.model.get_env()
        assert env is not None
        self.model._last_obs = env.reset()  # type: ignore[assignment]
        self.model._last_episode_starts = np.ones(env.num_envs, dtype=bool)
        self._episode_start = np.full(env.num_envs, self.num_timesteps, dtype=np.int64)
        self._episodes = []
        lr = self.model.lr_schedule(self.model._current_progress_remaining)
        self.logger.record("health/rollbacks", self.rollbacks)
        event = {
            "event": "rollback",
            "timestep": self.num_timesteps,
            "restored_timestep": self.healthy["timesteps"],
            "reasons": reasons,
            "rollbacks": self.rollbacks,
            "learning_rate": lr,
        }
        _jsonl(self.monitor.log_path, event)
        if self.verbose >= 1:
            print(
                f"[rollback] step {self.num_timesteps:,}: {reasons}; restored the state from step "
                f"{self.healthy['timesteps']:,}, learning rate now {lr:.3g} (rollback {self.rollbacks}/{self.max_rollbacks}).",
                flush=True,
            )

    @property
    def summary(self) -> str:
        """One sentence on what happened, for the command line."""
        if not self.exhausted:
            return f"{self.rollbacks} rollback(s)"
        return (
            f"training stopped after {self.rollbacks} rollbacks: the run kept breaking "
            f"({', '.join(sorted({f.code for f in self.monitor.findings if f.severity == 'critical'}))}). "
            "The last healthy model is last_healthy_model.zip in the run folder; resume from it with "
            "--checkpoint and a lower learning_rate, or use the safe profile"
        )


def health_callbacks(
    config: TrainConfig, run_dir: Path | None = None, verbose: bool = True
) -> tuple[HealthMonitorCallback | None, RollbackCallback | None]:
    """
    The callbacks a profile's ``health:`` and ``rollback:`` blocks ask for.

    Put them before evaluation and checkpoint callbacks: the rollback repairs NaN observations
    and statistics before those see them.

    :param config: The profile block
    :param run_dir: Folder for ``health.jsonl`` and the rollback's files (``None``: none written)
    :param verbose: Print findings and rollbacks (findings only when ``health`` is on)
    :return: The monitor (also when only ``rollback`` is on: a silent one feeding it) and the rollback
    """
    health, rollback_options = config.callback_options("health"), config.callback_options("rollback")
    if health is None and rollback_options is None:
        return None, None
    thresholds = dict(health or {})
    quiet = int(thresholds.pop("quiet_updates", 5))
    monitor = HealthMonitorCallback(
        thresholds,
        log_path=None if run_dir is None else run_dir / "health.jsonl",
        quiet_updates=quiet,
        verbose=int(verbose and health is not None),
    )
    if rollback_options is None:
        return monitor, None
    try:
        rollback = RollbackCallback(monitor, save_path=run_dir, verbose=int(verbose), **rollback_options)
    except ValueError as error:
        raise ConfigError(f"{config.where()}: rollback: {error}") from None
    return monitor, rollback
