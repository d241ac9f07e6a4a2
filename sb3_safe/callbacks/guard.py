"""NonFiniteGuardCallback: NaN and inf never reach the policy from the environment."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from sb3_safe.callbacks.monitor import HealthMonitorCallback, is_finite

__all__ = ["NonFiniteGuardCallback"]

_STATS = ("obs_rms", "ret_rms")


class NonFiniteGuardCallback(BaseCallback):
    """
    Replace NaN/inf in new observations (and in the last observation of an episode, which SB3
    bootstraps truncations from) and rewards with 0 as they arrive, before the policy sees them.

    A NaN observation otherwise crashes the rollout inside torch's action distribution (it
    validates its arguments), a crash no rollback could follow. VecNormalize has by then
    folded the NaN into its running statistics: they are put back to their values at the
    start of the rollout, before an evaluation syncs them or a checkpoint saves them.

    Each repair is counted (``health/non_finite_inputs`` in the logger) and, with a monitor,
    reported on the next update's row (``obs_finite`` / ``rewards_finite``: a ``non_finite``
    finding). Without a monitor the first repair is warned about. Put it first in the
    callback list. :class:`~sb3_safe.callbacks.RollbackCallback` runs one of its own.

    :param monitor: The health monitor to tell (``None``: warn once instead)
    :param verbose: 0 is silent
    """

    def __init__(self, monitor: HealthMonitorCallback | None = None, verbose: int = 1) -> None:
        super().__init__(verbose)
        self.monitor = monitor
        #: Environment steps at which a non-finite observation or reward was replaced
        self.repairs = 0
        self._saved_stats: dict[str, Any] | None = None

    def _on_training_start(self) -> None:
        self._save_stats()

    def _on_rollout_start(self) -> None:
        self._save_stats()

    def _save_stats(self) -> None:
        venv = self.model.get_vec_normalize_env()
        if venv is None:
            return
        stats = {name: getattr(venv, name) for name in _STATS if hasattr(venv, name)}
        if all(_finite_stats(rms) for rms in stats.values()):
            self._saved_stats = copy.deepcopy(stats)

    def _on_step(self) -> bool:
        new_obs, rewards = self.locals.get("new_obs"), self.locals.get("rewards")
        broken = False
        if new_obs is not None and not is_finite(new_obs):
            _zero_non_finite(new_obs)
            self._tell("obs_finite")
            broken = True
        # The last observation of an episode is not in new_obs (the env has reset); SB3 bootstraps a
        # truncated episode from it with the critic, so a NaN there would reach the value targets.
        dones, infos = self.locals.get("dones"), self.locals.get("infos")
        if dones is not None and infos is not None and dones.any():
            for index in np.flatnonzero(dones):
                terminal = infos[index].get("terminal_observation")
                if terminal is not None and not is_finite(terminal):
                    _zero_non_finite(terminal)
                    self._tell("obs_finite")
                    broken = True
        if rewards is not None and not np.isfinite(rewards).all():
            rewards[~np.isfinite(rewards)] = 0.0
            self._tell("rewards_finite")
            broken = True
        if broken:
            self.repairs += 1
            self.logger.record("health/non_finite_inputs", self.repairs)
            self.repair_vec_normalize()
        return True

    def _tell(self, flag: str) -> None:
        if self.monitor is not None:
            self.monitor.note(flag, False)
        elif self.repairs == 0 and self.verbose >= 1:
            warnings.warn(
                f"NonFiniteGuardCallback: non-finite {flag.removesuffix('_finite')} at step {self.num_timesteps:,} "
                "replaced with 0 (further repairs are counted in health/non_finite_inputs). Check the environment, "
                "or wrap it in VecCheckNan to find the source",
                stacklevel=2,
            )

    def repair_vec_normalize(self) -> None:
        """Put back VecNormalize's last finite statistics and zero its non-finite running returns."""
        venv = self.model.get_vec_normalize_env()
        if venv is None:
            return
        for name, stats in (self._saved_stats or {}).items():
            if not _finite_stats(getattr(venv, name)):
                setattr(venv, name, copy.deepcopy(stats))
        venv.returns[~np.isfinite(venv.returns)] = 0.0


def _finite_stats(stats: Any) -> bool:
    """:return: Whether a RunningMeanStd (or the dict of them VecNormalize keeps for Dict observations) is finite"""
    parts = stats.values() if isinstance(stats, dict) else [stats]
    return all(is_finite(rms.mean) and is_finite(rms.var) for rms in parts)


def _zero_non_finite(obs: Any) -> None:
    """Set NaN/inf entries of an observation (an array or a dict of arrays) to 0, in place."""
    for part in obs.values() if isinstance(obs, dict) else [obs]:
        part[~np.isfinite(part)] = 0
