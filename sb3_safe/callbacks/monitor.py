"""HealthMonitorCallback: the detectors of :mod:`sb3_safe.health` after every PPO update."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from sb3_safe.callback_options import MonitorOptions
from sb3_safe.health import SEVERITY_RANK, Finding, HealthHistory, Thresholds, TroubleTracker, detect, trimmed_mean
from sb3_safe.runs import RunFolder, append_jsonl

__all__ = ["EPISODE_WINDOW", "HealthMonitorCallback", "MonitorOptions"]

#: The training return is measured over the latest episodes: at least this many (SB3's
#: ``stats_window_size``), and as many as the most that ended in one rollout.
EPISODE_WINDOW = 100


class HealthMonitorCallback(BaseCallback):
    """
    After every PPO update, run the detectors of :mod:`sb3_safe.health` and report what is wrong.

    Each episode of trouble (a finding code that starts firing) is printed once with its
    advice, appended to ``health.jsonl`` and recorded to the logger as ``health/<code>``
    (1 info, 2 warning, 3 critical); ``health/critical`` is 1 while any critical finding holds.

    With :class:`sb3_safe.SafePPO` it reads the per-update record (``model.last_update``); with
    plain ``PPO`` the ``train/*`` values SB3's logger holds between ``train()`` and the next dump.

    The training return the detectors read is its own, not SB3's ``rollout/ep_rew_mean`` (a mean
    of the latest 100 episodes): a 2% trimmed mean (:func:`~sb3_safe.health.trimmed_mean`), robust
    to a few outlier episodes, of the latest episodes, as many as the most that ended in one rollout
    and at least :data:`EPISODE_WINDOW`. 500 copies of a 4-agent task end 2,000 episodes at once:
    SB3's window would see 100 of them, and a window that shrank to the few episodes of a rollout
    in which most copies were mid-episode would see the ones that ended early (the successes, on a
    task that ends on success). It is logged as ``health/ep_return`` with its standard error
    ``health/ep_return_sem`` and ``health/episodes``, which ``diagnose`` reads back.

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
        self.options = MonitorOptions(quiet_updates)
        self.log_path = None if log_path is None else Path(log_path)
        #: What the detectors know of the run: recent rows and running summaries, bounded in memory
        self.history = HealthHistory(self.thresholds)
        #: Findings that opened an episode of trouble, in time order (the latest 1,000: a warning that
        #: comes back every few updates must not grow a list over a run of 10^6 updates)
        self.findings: deque[Finding] = deque(maxlen=1000)
        #: How many findings opened an episode of trouble in this run (``findings`` keeps the latest)
        self.reported = 0
        #: Codes of every critical finding of the run
        self.critical_codes: set[str] = set()
        #: Every finding at the latest update
        self.latest: list[Finding] = []
        self._tracker = TroubleTracker(self.options.quiet_updates)
        self._last_update_id: int | None = None
        self._rollout_flags: dict[str, float] = {}
        #: Returns of the episodes that ended since the last update, and of the latest ones before
        self._new_returns: list[float] = []
        self._episodes: deque[float] = deque(maxlen=EPISODE_WINDOW)
        self._return_stats: dict[str, float] = {}

    def _init_callback(self) -> None:
        if self.log_path is None:
            folder = self.logger.get_dir() if self.logger is not None else None
            self.log_path = RunFolder(Path(folder)).health_log if folder else None

    @property
    def critical(self) -> bool:
        """Whether a critical finding holds at the latest update."""
        return any(f.severity == "critical" for f in self.latest)

    @property
    def last_update_id(self) -> int | None:
        """SB3's ``_n_updates`` at the update the monitor saw last (``None`` before the first)."""
        return self._last_update_id

    def _on_training_start(self) -> None:
        # Updates done before this learn() call (a resumed checkpoint's, a previous call's) are not new.
        self._last_update_id = int(getattr(self.model, "_n_updates", 0)) or None

    def _on_step(self) -> bool:
        dones, infos = self.locals.get("dones"), self.locals.get("infos")
        if dones is not None and infos is not None:
            for index in np.flatnonzero(dones):
                episode = infos[index].get("episode")
                if episode is not None:
                    self._new_returns.append(float(episode["r"]))
        return True

    def _returns_row(self) -> dict[str, float]:
        """The training return over the latest episodes (see the class docstring); unchanged without new episodes."""
        new, self._new_returns = self._new_returns, []
        if not new:
            return self._return_stats
        if len(new) > (self._episodes.maxlen or 0):  # bounded by the episodes of one rollout
            self._episodes = deque(self._episodes, maxlen=len(new))
        self._episodes.extend(new)
        pool = list(self._episodes)
        mean, sem = trimmed_mean(pool)
        self._return_stats = {"ep_rew_mean": mean, "ep_rew_sem": sem, "episodes": float(len(pool))}
        for key, value in (("ep_return", mean), ("ep_return_sem", sem), ("episodes", float(len(pool)))):
            self.logger.record(f"health/{key}", value)
        return self._return_stats

    def _on_rollout_end(self) -> None:
        buffer = getattr(self.model, "rollout_buffer", None)
        if buffer is not None:
            self.note("obs_finite", is_finite(buffer.observations))
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
        if "dones" in self.locals:
            row.update(self._returns_row())
        elif self.model.ep_info_buffer:  # called outside learn(): SB3's window is what there is
            episodes = self.model.ep_info_buffer
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
        started = time.perf_counter()
        row = self._row()
        if row is None:
            return self.latest
        self.history.push(row)
        target_kl = getattr(self.model, "target_kl", None)
        self.latest = detect(self.history, self.thresholds, target_kl)
        for finding in self.latest:
            self.logger.record(f"health/{finding.code}", SEVERITY_RANK[finding.severity] + 1)
        self.logger.record("health/critical", int(self.critical))
        # what the monitor costs per update: it must stay flat over a run of 10^6 updates
        self.logger.record("health/monitor_ms", round(1000 * (time.perf_counter() - started), 3))
        for finding in self._tracker.new(self.latest):
            self.findings.append(finding)
            self.reported += 1
            if finding.severity == "critical":
                self.critical_codes.add(finding.code)
            append_jsonl(self.log_path, {"event": "finding", **finding.as_dict()})
            if self.verbose >= 1:
                print(
                    f"[health] step {finding.timestep:,} {finding.severity.upper()} {finding.code}: {finding.message} "
                    f"Advice: {finding.advice}",
                    flush=True,
                )
        return self.latest

    def restore_history(self, history: HealthHistory) -> None:
        """Go back to an earlier history (a copy kept with a snapshot): the rolled-back updates no longer count."""
        self.history = history.copy()
        self.latest = []
        self._new_returns, self._return_stats = [], {}
        self._episodes.clear()


def is_finite(array: Any) -> bool:
    """:return: Whether an array (or every array of a dict observation) holds only finite values"""
    if isinstance(array, dict):
        return all(bool(np.isfinite(v).all()) for v in array.values())
    return bool(np.isfinite(array).all())
