"""
The SB3 + SuperSuit path as SB3 users build it (``pettingzoo_env_to_vec_env_v1``,
``concat_vec_envs_v1``, ``VecMonitor``), for comparisons with :class:`PettingZooVecEnv`.

One thing is added so that ``PPO(seed=...)`` runs at all: SuperSuit's concatenated env has no
``seed()`` (and its SB3 wrapper's ``reset(seed)`` calls that missing ``seed()``), so
:class:`SeedOnReset` passes the seed to the concatenated env's next ``reset``. Everything else is
SuperSuit's, truncations that SB3 does not bootstrap included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from sb3_safe.errors import MissingDependencyError

__all__ = ["SeedOnReset", "make_supersuit_env"]


class SeedOnReset(VecEnvWrapper):
    """``seed(s)`` for a VecEnv without one: the next ``reset`` of the wrapped env gets ``s``."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self._next_seed: int | None = None

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        self._next_seed = seed
        return [seed] * self.num_envs

    def reset(self) -> VecEnvObs:
        seed, self._next_seed = self._next_seed, None
        if seed is None:
            return self.venv.reset()
        concatenated = self.venv.venv  # type: ignore[attr-defined]  # SuperSuit's SB3VecEnvWrapper -> ConcatVecEnv
        obs, self.venv.reset_infos = concatenated.reset(seed=seed)
        return obs  # type: ignore[no-any-return]

    def step_wait(self) -> VecEnvStepReturn:
        return self.venv.step_wait()


def make_supersuit_env(make: Callable[[], Any], n_envs: int) -> VecEnv:
    """
    :param make: Returns a new PettingZoo parallel environment
    :param n_envs: Copies, concatenated in this process
    :return: SuperSuit's VecEnv with :class:`SeedOnReset`, in ``VecMonitor``
    """
    try:
        import supersuit
    except ImportError:
        raise MissingDependencyError(
            "pettingzoo_adapter: supersuit needs SuperSuit. Install it (pip install supersuit, or 'sb3-safe[marl]')"
        ) from None
    vec = supersuit.pettingzoo_env_to_vec_env_v1(make())
    venv = supersuit.concat_vec_envs_v1(vec, n_envs, num_cpus=0, base_class="stable_baselines3")
    return VecMonitor(SeedOnReset(venv))
