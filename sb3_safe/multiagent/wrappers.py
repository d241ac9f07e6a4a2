"""
:class:`FirstAgentWrapper`: a Gymnasium wrapper applied to one agent of a PettingZoo parallel
environment, so that :mod:`sb3_safe.faults` (a NaN observation, reward outliers) can strike one
agent of a team, whatever VecEnv adapter (sb3-safe's or SuperSuit's) is put on top.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
from gymnasium import spaces
from pettingzoo.utils.wrappers import BaseParallelWrapper

__all__ = ["FirstAgentWrapper"]


class _AgentStream(gym.Env[Any, Any]):
    """One agent's transitions as a Gymnasium environment: ``step`` and ``reset`` return what was stored."""

    def __init__(self, observation_space: spaces.Space[Any], action_space: spaces.Space[Any]) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.pending: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.pending
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.pending
        return obs, reward, terminated, truncated, info


class FirstAgentWrapper(BaseParallelWrapper):  # type: ignore[type-arg]
    """
    Pass the first agent's observations and rewards through a Gymnasium wrapper.

    :param env: A PettingZoo parallel environment
    :param wrapper: A function that wraps a ``gym.Env`` (e.g. :func:`sb3_safe.faults.make_fault_wrapper`)
    """

    def __init__(self, env: Any, wrapper: Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]]) -> None:
        super().__init__(env)
        self.agent = env.possible_agents[0]
        self.stream = wrapper(_AgentStream(env.observation_space(self.agent), env.action_space(self.agent)))
        inner = self.stream.unwrapped
        assert isinstance(inner, _AgentStream)
        self._inner = inner

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, infos = self.env.reset(seed=seed, options=options)
        if self.agent in obs:
            self._inner.pending = (obs[self.agent], infos.get(self.agent, {}))
            obs[self.agent], _ = self.stream.reset(seed=seed)
        return obs, infos

    def step(self, actions: dict[str, Any]) -> Any:
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        a = self.agent
        if a in obs:
            self._inner.pending = (obs[a], rewards.get(a, 0.0), terminations.get(a, False), truncations.get(a, False), {})
            obs[a], reward, _, _, _ = self.stream.step(actions.get(a))
            rewards[a] = float(reward)
        return obs, rewards, terminations, truncations, infos
