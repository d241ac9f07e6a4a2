"""SafePPO's batched time-limit bootstrap against SB3's own per-slot loop, value for value."""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_safe import SafePPO
from sb3_safe.bootstrap import MIN_SLOTS, BatchedBootstrap

COPIES = 64  # 32 truncated slots in one step: the batched path (MIN_SLOTS)


class EndsTogether(gym.Env):
    """
    VMAS's centralized-critic shape in miniature: a Dict observation (an agent's own and a global part). Every copy's
    episode ends at step 10; even copies are terminated there, odd ones truncated by their time limit.
    """

    observation_space = spaces.Dict(
        {"obs": spaces.Box(-1.0, 1.0, (3,), np.float32), "state": spaces.Box(-1.0, 1.0, (5,), np.float32)}
    )
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, index: int) -> None:
        self.index = index
        self.t = 0

    def _obs(self) -> dict[str, np.ndarray]:
        shapes = {"obs": (3,), "state": (5,)}
        return {key: self.np_random.uniform(-1, 1, shape).astype(np.float32) for key, shape in shapes.items()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        self.t += 1
        end = self.t == 10
        return self._obs(), float(action.sum()), end and self.index % 2 == 0, end and self.index % 2 == 1, {}


def _env() -> DummyVecEnv:
    env = DummyVecEnv([functools.partial(EndsTogether, i) for i in range(COPIES)])
    env.seed(0)
    return env


class RolloutRewards(BaseCallback):
    """The first rollout's stored rewards, and the infos of the step at which every episode ended."""

    def _on_step(self) -> bool:
        if self.num_timesteps == 10 * COPIES:
            self.infos = self.locals["infos"]  # the list SB3 reads on: the bootstrap replaces slots in it after this callback
        return True

    def _on_rollout_end(self) -> None:
        if not hasattr(self, "rewards"):
            self.rewards = self.model.rollout_buffer.rewards.copy()  # type: ignore[attr-defined]


def _first_rollout(algorithm: type[PPO]) -> RolloutRewards:
    model = algorithm("MultiInputPolicy", _env(), n_steps=16, batch_size=256, n_epochs=1, gamma=0.9, seed=3)
    probe = RolloutRewards()
    model.learn(16 * COPIES, callback=probe)
    return probe


def test_terminated_and_truncated_slots_in_one_step_match_sb3_value_for_value():
    assert COPIES // 2 >= MIN_SLOTS
    sb3, safe = _first_rollout(PPO), _first_rollout(SafePPO)
    # the truncated slots were bootstrapped in one batch; the terminated ones not at all
    bootstrapped = [i for i, info in enumerate(safe.infos) if "bootstrapped_value" in info]
    assert bootstrapped == list(range(1, COPIES, 2))
    assert all(sb3.infos[i]["TimeLimit.truncated"] for i in range(1, COPIES, 2))
    # every stored reward is SB3's, bootstrapped ones up to the float rounding of a batched matrix product
    np.testing.assert_allclose(safe.rewards, sb3.rewards, rtol=1e-6, atol=1e-6)
    step = 9  # the step at which every episode ended
    terminated = list(range(0, COPIES, 2))
    np.testing.assert_array_equal(safe.rewards[step, terminated], sb3.rewards[step, terminated])
    differs = np.abs(safe.rewards[step, 1::2] - sb3.rewards[step, 1::2])
    assert differs.max() < 1e-6 and np.abs(sb3.rewards[step, 1::2] - sb3.rewards[step, 0::2]).max() > 0.01


def test_a_loop_that_stops_sharing_its_locals_fails_loudly():
    """If SB3's collect_rollouts no longer hands its rewards and infos to callbacks, the bootstrap cannot work: it says so."""
    model = SafePPO("MultiInputPolicy", _env(), n_steps=16, seed=0)
    inner = RolloutRewards()
    inner.init_callback(model)
    wrapper = BatchedBootstrap(model, inner)
    wrapper.update_locals({"dones": np.zeros(COPIES, dtype=bool)})
    with pytest.raises(RuntimeError, match="no longer hands `rewards`, `infos` to callbacks"):
        wrapper.on_step()
