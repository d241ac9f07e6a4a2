"""
Fault injection for tests and benchmarks: the failures sb3-safe is meant to survive, on demand.

Gymnasium wrappers change what the environment returns; :func:`corrupt_gradients` makes
one backward pass produce NaN gradients. Everything is seeded or step-counted, so a
fault happens at the same place in every run.

>>> import gymnasium as gym
>>> env = NonFiniteInjection(gym.make("Pendulum-v1"), at_step=100, target="reward")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np
import torch as th

__all__ = [
    "FAULTS",
    "STRESSES",
    "NonFiniteInjection",
    "RewardOutliers",
    "RewardScale",
    "corrupt_gradients",
    "make_fault_wrapper",
    "stress_wrapper",
]


class RewardScale(gym.RewardWrapper[Any, Any]):
    """
    Multiply every reward by ``scale`` (for example 100 or 0.001): the reward-scale mistakes
    that break an unnormalized critic.

    :param env: The environment
    :param scale: The factor; must be finite and non-zero
    """

    def __init__(self, env: gym.Env[Any, Any], scale: float) -> None:
        if not np.isfinite(scale) or scale == 0:
            raise ValueError(f"`scale` must be finite and non-zero, got {scale!r}")
        super().__init__(env)
        self.scale = scale

    def reward(self, reward: SupportsFloat) -> float:
        return float(reward) * self.scale


class RewardOutliers(gym.RewardWrapper[Any, Any]):
    """
    With probability ``probability`` per step, add ``magnitude`` (with a random sign) to the reward:
    rare, large outliers such as a simulator glitch or a logging bug.

    :param env: The environment
    :param probability: Chance per step, in [0, 1]
    :param magnitude: Size of an outlier
    :param seed: Seed of the outlier draws, combined with the environment's seed at a seeded
        ``reset`` so that each copy of a VecEnv draws its own outliers
    """

    def __init__(self, env: gym.Env[Any, Any], probability: float = 0.001, magnitude: float = 1000.0, seed: int = 0) -> None:
        if not 0 <= probability <= 1:
            raise ValueError(f"`probability` must be in [0, 1], got {probability!r}")
        super().__init__(env)
        self.probability = probability
        self.magnitude = magnitude
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            # Each copy's draws follow its own seed: copies seeded apart (VecEnvs seed copy i with
            # seed + i) get their outliers at different steps, as independent glitches would come.
            self.rng = np.random.default_rng([self.seed, seed])
        return super().reset(seed=seed, options=options)

    def reward(self, reward: SupportsFloat) -> float:
        if self.rng.random() < self.probability:
            return float(reward) + self.magnitude * float(self.rng.choice((-1.0, 1.0)))
        return float(reward)


class NonFiniteInjection(gym.Wrapper[Any, Any, Any, Any]):
    """
    Return a NaN (or inf) observation or reward at exactly one step of this environment.

    :param env: The environment
    :param at_step: The step (counted over the wrapper's life, from 1) that returns the bad value
    :param target: ``"obs"`` or ``"reward"``
    :param value: ``nan`` or ``inf``
    """

    def __init__(
        self, env: gym.Env[Any, Any], at_step: int, target: Literal["obs", "reward"] = "obs", value: float = float("nan")
    ) -> None:
        if target not in ("obs", "reward"):
            raise ValueError(f"`target` must be 'obs' or 'reward', got {target!r}")
        super().__init__(env)
        self.at_step = at_step
        self.target = target
        self.value = value
        self.steps = 0

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps == self.at_step:
            if self.target == "obs":
                obs = np.full_like(obs, self.value, dtype=np.float32)
            else:
                reward = self.value
        return obs, reward, terminated, truncated, info


def corrupt_gradients(parameter: th.Tensor, at_backward: int) -> th.utils.hooks.RemovableHandle:
    """
    Make the ``at_backward``-th backward pass through ``parameter`` produce a NaN gradient.

    :param parameter: A parameter of the policy (e.g. ``model.policy.value_net.weight``)
    :param at_backward: Which backward pass (from 1) to corrupt
    :return: The hook handle (``.remove()`` to stop)
    """
    calls = 0

    def hook(grad: th.Tensor) -> th.Tensor:
        nonlocal calls
        calls += 1
        return grad * float("nan") if calls == at_backward else grad

    handle: th.utils.hooks.RemovableHandle = parameter.register_hook(hook)  # type: ignore[no-untyped-call]
    return handle


#: Fault wrappers by the name a benchmark suite uses.
FAULTS: dict[str, type[gym.Wrapper[Any, Any, Any, Any]]] = {
    "reward_scale": RewardScale,
    "reward_outliers": RewardOutliers,
    "non_finite": NonFiniteInjection,
}


def make_fault_wrapper(name: str, **kwargs: Any) -> Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]]:
    """
    :param name: One of :data:`FAULTS`
    :param kwargs: The wrapper's arguments
    :return: A function that wraps an environment (for ``make_vec_env``'s ``wrapper_class``)
    """
    cls = FAULTS[name]

    def wrap(env: gym.Env[Any, Any]) -> gym.Env[Any, Any]:
        return cls(env, **kwargs)

    return wrap


#: Named stresses (``sb3-safe tune --stress``): a fault of :data:`FAULTS` and its arguments, with the
#: names and settings of ``make bench``'s suite (benchmarks/suites/full.yml). A one-step fault gives
#: ``at_fraction`` instead of ``at_step``: it strikes at that fraction of each copy's share of the run
#: (0.4: step 10,000 of each of 4 copies in a 100,000-step run, as the suite's nan-obs).
STRESSES: dict[str, dict[str, Any]] = {
    "outliers": {"fault": "reward_outliers", "probability": 0.001, "magnitude": 1000.0},
    "reward-x100": {"fault": "reward_scale", "scale": 100.0},
    "reward-x0.001": {"fault": "reward_scale", "scale": 0.001},
    "nan-obs": {"fault": "non_finite", "target": "obs", "at_fraction": 0.4},
    "nan-reward": {"fault": "non_finite", "target": "reward", "at_fraction": 0.4},
}


def stress_wrapper(name: str, timesteps: int, n_envs: int) -> Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]]:
    """
    :param name: A key of :data:`STRESSES`
    :param timesteps: The run's length in environment steps (all copies together)
    :param n_envs: How many copies share them
    :return: The stress's wrapper, for ``make_vec_env``'s ``wrapper_class``
    """
    spec = dict(STRESSES[name])
    fraction = spec.pop("at_fraction", None)
    if fraction is not None:
        spec["at_step"] = max(1, int(fraction * timesteps / n_envs))
    return make_fault_wrapper(spec.pop("fault"), **spec)
