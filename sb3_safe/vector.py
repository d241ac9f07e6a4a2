"""
Batched single-agent environments as SB3 ``VecEnv`` s: Gymnasium's ``VectorEnv`` (``gym.make_vec``,
sync or async) and envpool (``--vec-env gymnasium|envpool``).

SB3 takes neither (SB3 issues #1745, #1568 and #1608 ask for such an adapter), and each resets
finished copies its own way:

- :class:`GymnasiumVecEnv` runs Gymnasium's vector environment in its same-step auto-reset mode:
  a finished copy's step returns its first new observation, the last one of the episode is in
  ``infos["final_obs"]`` (masked by ``infos["_final_obs"]``). It becomes SB3's
  ``terminal_observation``, with ``TimeLimit.truncated`` from the truncation flag.
- :class:`EnvPoolVecEnv` wraps envpool, which resets on the *next* step: the step after a done
  ignores its action and returns the first observation with reward 0, a transition that never
  happened. Here the copies that finished are reset in one call right after their last step
  (``env.reset(env_id=...)``), so SB3 never sees that step; the done step's observation, the
  real last one, becomes ``terminal_observation``.

Both report ``Monitor``'s episode statistics (``episode`` in a finished copy's info), and both are
seeded through :meth:`VecEnv.seed`, so ``PPO(seed=...)`` reproduces a run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sb3_safe.errors import ConfigError, did_you_mean
from sb3_safe.slots import MonitoredSlots

__all__ = ["BATCHED", "EnvPoolVecEnv", "GymnasiumVecEnv", "make_batched_env"]

#: The ``--vec-env`` values served by this module
BATCHED = ("gymnasium", "gymnasium-async", "envpool")


def _space(space: Any) -> gym.Space[Any]:
    """envpool's spaces as Gymnasium's (float64 bounds made float32, as SB3's policies expect)."""
    if isinstance(space, gym.spaces.Box):
        return gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)
    return space  # type: ignore[no-any-return]


class _BatchedVecEnv(MonitoredSlots):
    """What both adapters share: the actions, the ``get_attr`` family (there are no sub-environment objects)."""

    _actions: np.ndarray

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """:return: ``None`` for ``render_mode`` (nothing renders); the copies expose no other attribute"""
        if attr_name != "render_mode":
            raise AttributeError(f"{type(self).__name__} has no attribute {attr_name!r} on its copies")
        return [None for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"{type(self).__name__} cannot set {attr_name!r} on its copies")

    def env_method(self, method_name: str, *args: Any, indices: VecEnvIndices = None, **kwargs: Any) -> list[Any]:
        raise AttributeError(f"{type(self).__name__} cannot call {method_name!r} on its copies")

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    def _finished(
        self, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, terminal: np.ndarray
    ) -> list[dict[str, Any]]:
        """The step's infos: terminal observation, time limit and ``Monitor``'s episode statistics of finished copies."""
        self._add_step(rewards)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(terminated | truncated):
            infos[i]["terminal_observation"] = terminal[i]
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            infos[i]["episode"] = self._end_episode(int(i))
        return infos


class GymnasiumVecEnv(_BatchedVecEnv):
    """
    A Gymnasium ``VectorEnv`` as an SB3 VecEnv.

    :param env_id: A registered Gymnasium id
    :param num_envs: Copies
    :param asynchronous: One process per copy (``AsyncVectorEnv``) instead of one loop (``SyncVectorEnv``)
    :param env_kwargs: Keyword arguments of ``gym.make``
    :param wrappers: Gymnasium wrappers applied to each copy, innermost first
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        asynchronous: bool = False,
        env_kwargs: dict[str, Any] | None = None,
        wrappers: Sequence[Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]]] = (),
    ) -> None:
        self.env = gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="async" if asynchronous else "sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
            wrappers=list(wrappers) or None,  # type: ignore[arg-type]
            **(env_kwargs or {}),
        )
        super().__init__(num_envs, self.env.single_observation_space, self.env.single_action_space)

    def reset(self) -> VecEnvObs:
        seeds = None if self._seeds[0] is None else [int(s) for s in self._seeds]  # type: ignore[arg-type]
        obs, _ = self.env.reset(seed=seeds)  # type: ignore[arg-type]  # a list seeds each copy
        self._restart_statistics()
        self._reset_seeds()
        self._reset_options()
        return obs  # type: ignore[no-any-return]

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, info = self.env.step(self._actions)
        terminal = np.zeros_like(obs)
        mask = info.get("_final_obs")
        if mask is not None:
            for i in np.flatnonzero(mask):
                terminal[i] = info["final_obs"][i]
        infos = self._finished(rewards, terminated, truncated, terminal)
        return obs, rewards.astype(np.float32), terminated | truncated, infos

    def close(self) -> None:
        self.env.close()


class EnvPoolVecEnv(_BatchedVecEnv):
    """
    envpool's batched environments as an SB3 VecEnv, without the fake transition of its next-step reset.

    :param env_id: An id envpool has (``envpool.list_all_envs()``)
    :param num_envs: Copies
    :param seed: Seed of the first copy (envpool seeds at creation: :meth:`seed` rebuilds the pool)
    :param env_kwargs: Keyword arguments of ``envpool.make``
    """

    def __init__(self, env_id: str, num_envs: int, *, seed: int = 0, env_kwargs: dict[str, Any] | None = None) -> None:
        self._envpool = _import_envpool()
        check_envpool_id(env_id)
        self.env_id, self._kwargs, self._seed = env_id, dict(env_kwargs or {}), seed
        self.env = self._make(seed, num_envs)
        super().__init__(num_envs, _space(self.env.observation_space), _space(self.env.action_space))

    def _make(self, seed: int, num_envs: int) -> Any:
        try:
            return self._envpool.make(self.env_id, env_type="gymnasium", num_envs=num_envs, seed=seed, **self._kwargs)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ConfigError(f"envpool rejected {self.env_id!r} with {self._kwargs}: {error}") from None

    def reset(self) -> VecEnvObs:
        seed = self._seeds[0]
        if seed is not None and seed != self._seed:
            self.env.close()
            self._seed = int(seed)
            self.env = self._make(self._seed, self.num_envs)
        obs, _ = self.env.reset()
        self._restart_statistics()
        self._reset_seeds()
        self._reset_options()
        return obs  # type: ignore[no-any-return]

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, _ = self.env.step(self._actions)
        done = terminated | truncated
        infos = self._finished(rewards, terminated, truncated, obs)
        finished = np.flatnonzero(done)
        if finished.size:
            obs = obs.copy()  # the terminal observations stay in the infos
            obs[finished], _ = self.env.reset(finished.astype(np.int32))
        return obs, rewards.astype(np.float32), done, infos

    def close(self) -> None:
        self.env.close()


def _import_envpool() -> Any:
    try:
        import envpool
    except ImportError:
        raise ConfigError(
            "--vec-env envpool needs the envpool package: pip install 'sb3-safe[batched]' (or pip install envpool)"
        ) from None
    return envpool


def check_envpool_id(env_id: str) -> None:
    """:raises ConfigError: When envpool is missing or has no environment ``env_id``"""
    known = _import_envpool().list_all_envs()
    if env_id not in known:
        raise ConfigError(
            f"--vec-env envpool: envpool has no environment {env_id!r}.{did_you_mean(env_id, known)} "
            "Use --vec-env gymnasium (or dummy, subproc) for it, or an id from envpool.list_all_envs()"
        )


def make_batched_env(
    kind: str,
    env_id: str,
    num_envs: int,
    seed: int,
    env_kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]]] = (),
) -> VecEnv:
    """
    :param kind: One of :data:`BATCHED`
    :param env_id: The environment id
    :param num_envs: Copies
    :param seed: Seed of the first copy (copy ``i`` gets ``seed + i`` with Gymnasium's vector environments)
    :param env_kwargs: Keyword arguments of the environment
    :param wrappers: Gymnasium wrappers for each copy (Gymnasium's vector environments only)
    :return: The VecEnv (its copies report ``Monitor``'s episode statistics)
    """
    venv: VecEnv
    if kind == "envpool":
        if wrappers:
            raise ConfigError(
                "--vec-env envpool steps its environments in C++: Gymnasium wrappers (env_wrapper, fault injection) "
                "cannot apply. Use --vec-env gymnasium"
            )
        venv = EnvPoolVecEnv(env_id, num_envs, seed=seed, env_kwargs=env_kwargs)
    else:
        venv = GymnasiumVecEnv(
            env_id, num_envs, asynchronous=kind == "gymnasium-async", env_kwargs=env_kwargs, wrappers=wrappers
        )
    venv.seed(seed)
    return venv
