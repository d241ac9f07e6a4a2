"""
:class:`MonitoredSlots`: what sb3-safe's own VecEnvs share (the multi-agent and the batched
adapters): every slot reports ``Monitor``'s episode statistics itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

__all__ = ["MonitoredSlots"]


class MonitoredSlots(VecEnv):
    """
    A VecEnv whose slots put ``Monitor``'s ``episode`` info in their infos (no ``Monitor`` wrapper needed):
    each slot's return and length so far, counted by :meth:`_add_step` and closed by :meth:`_end_episode`.

    :param num_envs: Slots
    :param observation_space: A slot's observation space
    :param action_space: A slot's action space
    """

    def __init__(self, num_envs: int, observation_space: gym.Space[Any], action_space: gym.Space[Any]) -> None:
        super().__init__(num_envs, observation_space, action_space)
        #: Each slot's return and length in its current episode
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._start = time.time()

    def _add_step(self, rewards: np.ndarray) -> None:
        """Count one step of every slot."""
        self._returns += rewards
        self._lengths += 1

    def _episode(self, slot: int) -> dict[str, Any]:
        """:return: ``Monitor``'s ``episode`` info of a slot: its return and length so far, seconds since the start"""
        return {"r": float(self._returns[slot]), "l": int(self._lengths[slot]), "t": round(time.time() - self._start, 6)}

    def _end_episode(self, slot: int) -> dict[str, Any]:
        """:return: :meth:`_episode` of a slot whose episode ended; its counts start again"""
        episode = self._episode(slot)
        self._returns[slot], self._lengths[slot] = 0.0, 0
        return episode

    def _restart_statistics(self) -> None:
        """Every slot starts a new episode (a reset)."""
        self._returns[:] = 0.0
        self._lengths[:] = 0

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Every slot reports ``Monitor``'s ``episode`` info, so it counts as ``Monitor``-wrapped."""
        from stable_baselines3.common.monitor import Monitor

        return [wrapper_class is Monitor for _ in self._indices(indices)]

    def _indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else indices
