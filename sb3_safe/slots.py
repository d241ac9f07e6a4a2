"""
:class:`MonitoredSlots`: what sb3-safe's own VecEnvs share (the multi-agent and the batched
adapters): every slot reports ``Monitor``'s episode statistics itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

__all__ = ["MonitoredSlots"]


class MonitoredSlots(VecEnv):
    """A VecEnv whose slots put ``Monitor``'s ``episode`` info in their infos (no ``Monitor`` wrapper needed)."""

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
