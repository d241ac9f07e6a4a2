"""
:class:`PettingZooVecEnv`: a PettingZoo parallel environment as an SB3 ``VecEnv``, one slot per agent.

One shared policy acts for every agent (parameter sharing): ``n`` copies of an environment
with ``m`` agents make a VecEnv of ``n * m`` slots, agent ``i`` of copy ``k`` at slot
``k * m + i``. This is what SuperSuit's ``pettingzoo_env_to_vec_env_v1`` and
``concat_vec_envs_v1`` do; this adapter exists because that path, read from SuperSuit 3.11,
gives SB3 wrong or missing data:

- a truncation (every MPE episode ends by one) is not marked ``TimeLimit.truncated``, so SB3
  does not bootstrap it and the critic learns that the world ends at ``max_cycles``. Here
  it is marked and ``terminal_observation`` holds the last observation;
- no ``episode`` info (SB3's ``rollout/ep_rew_mean`` stays empty without a ``VecMonitor``).
  Here every slot reports its agent's return like ``Monitor`` does, and the first slot of a
  copy also reports the **team return, the sum of all agents' returns** (``team_episode``);
- the concatenated env has no ``seed()``, which ``PPO(seed=...)`` calls. Here
  :meth:`VecEnv.seed` works: copy ``k`` is reset with the ``k * m``-th seed;
- ``get_attr`` / ``env_method`` do not reach the environments. Here they reach the copy of
  each slot;
- an agent that leaves mid-episode is an error there unless ``black_death`` is set. Here its
  slot ends its episode when the agent leaves, then shows zero observations and zero rewards,
  each step a finished one-step episode (nothing bootstraps across it), until the copy resets.

With ``centralized_critic`` the observation is a ``Dict``: ``obs`` is the agent's own
observation (what the actor sees), ``state`` the global state (what the critic sees): the
environment's ``state()`` where it has one, otherwise every agent's observation concatenated in
``possible_agents`` order. ``agent_id`` appends a one-hot agent index to both.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn, VecEnvWrapper

from sb3_safe.env_ids import PETTINGZOO_PREFIX, is_pettingzoo
from sb3_safe.errors import ConfigError
from sb3_safe.multiagent.team import TeamVecEnv

__all__ = [
    "PREFIX",
    "PettingZooVecEnv",
    "check_pettingzoo_id",
    "count_agents",
    "is_pettingzoo",
    "make_parallel_env",
    "unwrap_pettingzoo",
]

#: Environment ids of the form ``pettingzoo:<module>`` name a module with a ``parallel_env`` function.
PREFIX = PETTINGZOO_PREFIX

ParallelEnv = Any  # pettingzoo.ParallelEnv, kept out of the type signatures so pettingzoo stays optional


def check_pettingzoo_id(env_id: str) -> Callable[..., ParallelEnv]:
    """
    :param env_id: ``pettingzoo:<module>``, e.g. ``pettingzoo:mpe2.simple_spread_v3``
    :return: The module's ``parallel_env`` function
    :raises ConfigError: When the module cannot be imported or has no ``parallel_env``
    """
    module_name = env_id.removeprefix(PREFIX)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"environment {env_id!r}: cannot import {module_name!r} ({error}). Install the package that has it "
            "(MPE: pip install mpe2; or pip install 'sb3-safe[marl]'), or fix the module path"
        ) from None
    factory = getattr(module, "parallel_env", None)
    if not callable(factory):
        raise ConfigError(
            f"environment {env_id!r}: module {module_name!r} has no parallel_env(). Name a PettingZoo environment "
            "module, e.g. pettingzoo:mpe2.simple_spread_v3"
        )
    return factory  # type: ignore[no-any-return]


def make_parallel_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> ParallelEnv:
    """
    :param env_id: ``pettingzoo:<module>``, e.g. ``pettingzoo:mpe2.simple_spread_v3``
    :param env_kwargs: Keyword arguments of the module's ``parallel_env``
    :return: The parallel environment
    :raises ConfigError: When the module cannot be imported, has no ``parallel_env``, or rejects the kwargs
    """
    factory = check_pettingzoo_id(env_id)
    try:
        return factory(**(env_kwargs or {}))
    except TypeError as error:
        raise ConfigError(f"environment {env_id!r}: `env_kwargs` {env_kwargs} rejected: {error}") from None


def count_agents(env_id: str, env_kwargs: dict[str, Any] | None = None) -> int:
    """:return: How many agents (VecEnv slots per copy) the environment has (PettingZoo or VMAS)"""
    from sb3_safe.multiagent.vmas import VmasVecEnv, is_vmas

    if is_vmas(env_id):
        return VmasVecEnv(env_id, 1, env_kwargs).n_agents
    env = make_parallel_env(env_id, env_kwargs)
    try:
        return len(env.possible_agents)
    finally:
        env.close()


class PettingZooVecEnv(TeamVecEnv):
    """
    Copies of a PettingZoo parallel environment side by side, one VecEnv slot per agent.

    :param env_fns: One function per copy, each returning a new parallel environment
    :param centralized_critic: Observations are ``Dict(obs=own, state=global)`` (MAPPO)
    :param agent_id: Append a one-hot agent index to the observation (and to the state)
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], ParallelEnv]],
        *,
        centralized_critic: bool = False,
        agent_id: bool = False,
    ) -> None:
        self.envs = [fn() for fn in env_fns]
        first = self.envs[0]
        self.agents: list[str] = list(first.possible_agents)
        self.n_agents = len(self.agents)
        agent_obs, action_space = _shared_spaces(first, self.agents)
        self._agent_space = agent_obs
        self.centralized_critic = centralized_critic
        self.agent_id = agent_id
        self._obs_dim = _flat_dim(agent_obs) if centralized_critic or agent_id else 0
        self._eye = np.eye(self.n_agents, dtype=np.float32)
        self._state_fn = self._global_state_function(first)
        observation_space: spaces.Space[Any] = agent_obs
        if agent_id:
            observation_space = _box(self._obs_dim + self.n_agents)
        if centralized_critic:
            first.reset(seed=0)
            state_dim = int(np.asarray(self._state_fn(first, {})).size)
            observation_space = spaces.Dict(
                {"obs": _box(self._obs_dim + agent_id * self.n_agents), "state": _box(state_dim + agent_id * self.n_agents)}
            )
        super().__init__(len(self.envs) * self.n_agents, observation_space, action_space)
        self._actions: np.ndarray = np.zeros(0)

    # -- observations
    def _global_state_function(self, env: ParallelEnv) -> Callable[[ParallelEnv, dict[str, Any]], np.ndarray]:
        """The environment's ``state()`` when it has one, else every agent's observation concatenated."""

        def concatenated(_: ParallelEnv, obs: dict[str, Any]) -> np.ndarray:
            return np.concatenate([self._own(obs, agent) for agent in self.agents])

        try:
            env.reset(seed=0)
            env.state()
        except (NotImplementedError, AttributeError):
            return concatenated
        return lambda e, _: np.asarray(e.state(), dtype=np.float32).ravel()

    def _own(self, obs: dict[str, Any], agent: str) -> np.ndarray:
        """An agent's observation, flat float32 (zeros when the agent has left)."""
        value = obs.get(agent)
        if value is None:
            return np.zeros(self._obs_dim or _flat_dim(self._agent_space), dtype=np.float32)
        return np.asarray(value, dtype=np.float32).ravel()

    def _copy_obs(self, k: int, obs: dict[str, Any]) -> list[Any]:
        """The observations of copy ``k``'s slots, in the VecEnv's format."""
        own = [self._own(obs, agent) if self._obs_dim else obs.get(agent) for agent in self.agents]
        if not self._obs_dim:  # the environment's own observations, unchanged
            return [np.zeros_like(self._agent_space.sample()) if o is None else o for o in own]
        if self.agent_id:
            own = [np.concatenate([o, self._eye[i]]) for i, o in enumerate(own)]
        if not self.centralized_critic:
            return own
        state = self._state_fn(self.envs[k], obs)
        states = (
            [np.concatenate([state, self._eye[i]]) for i in range(self.n_agents)] if self.agent_id else [state] * self.n_agents
        )
        return [{"obs": o, "state": s} for o, s in zip(own, states, strict=True)]

    def _stack(self, per_slot: list[Any]) -> VecEnvObs:
        if isinstance(self.observation_space, spaces.Dict):
            return {key: np.stack([o[key] for o in per_slot]) for key in self.observation_space.spaces}
        return np.stack(per_slot)

    # -- VecEnv
    def reset(self) -> VecEnvObs:
        per_slot: list[Any] = []
        for k, env in enumerate(self.envs):
            seed = self._seeds[k * self.n_agents]
            obs, infos = env.reset(seed=seed, options=self._options[k * self.n_agents] or None)
            per_slot.extend(self._copy_obs(k, obs))
            for i, agent in enumerate(self.agents):
                self.reset_infos[k * self.n_agents + i] = dict(infos.get(agent, {}))
        self._restart_statistics()
        self._reset_seeds()
        self._reset_options()
        return self._stack(per_slot)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        m = self.n_agents
        per_slot: list[Any] = []
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for k, env in enumerate(self.envs):
            live = set(env.agents)
            actions = {agent: self._actions[k * m + i] for i, agent in enumerate(self.agents) if agent in live}
            obs, rew, term, trunc, env_infos = env.step(actions)
            finished = not env.agents
            slots_obs = self._copy_obs(k, obs)
            for i, agent in enumerate(self.agents):
                slot = k * m + i
                info = infos[slot]
                if agent not in live:  # left earlier in this episode: a zero, finished step
                    dones[slot] = True
                    continue
                info.update(env_infos.get(agent, {}))
                rewards[slot] = rew.get(agent, 0.0)
                self._returns[slot] += rewards[slot]
                self._lengths[slot] += 1
                ended = bool(term.get(agent, False) or trunc.get(agent, False)) or finished
                if ended:
                    dones[slot] = True
                    info["terminal_observation"] = slots_obs[i]
                    info["TimeLimit.truncated"] = not term.get(agent, False)
                    info["episode"] = self._episode(slot)  # its counts stay until the team's episode ends
            if finished:
                team = self._returns[k * m : (k + 1) * m]
                infos[k * m]["team_episode"] = {"r": float(team.sum()), "l": int(self._lengths[k * m : (k + 1) * m].max())}
                obs, reset_infos = env.reset()
                for i, agent in enumerate(self.agents):
                    self.reset_infos[k * m + i] = dict(reset_infos.get(agent, {}))
                slots_obs = self._copy_obs(k, obs)
                self._returns[k * m : (k + 1) * m] = 0
                self._lengths[k * m : (k + 1) * m] = 0
            per_slot.extend(slots_obs)
        return self._stack(per_slot), rewards, dones, infos

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def render(self, mode: str | None = None) -> np.ndarray | None:
        """:return: The first copy's rendering"""
        frame = self.envs[0].render()
        return frame if isinstance(frame, np.ndarray) else None

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [env.render() for env in self.envs]

    def _copies(self, indices: VecEnvIndices) -> list[Any]:
        """The copy behind each requested slot."""
        return [self.envs[i // self.n_agents] for i in self._indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """:return: The attribute of the copy behind each slot (``render_mode`` included)"""
        return [getattr(env.unwrapped, attr_name) for env in self._copies(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for env in self._copies(indices):
            setattr(env.unwrapped, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """:return: The method's result on the copy behind each slot"""
        return [getattr(env, method_name)(*method_args, **method_kwargs) for env in self._copies(indices)]


def unwrap_pettingzoo(venv: VecEnv) -> PettingZooVecEnv | None:
    """:return: The :class:`PettingZooVecEnv` under ``venv``'s VecEnv wrappers, or ``None``"""
    while isinstance(venv, VecEnvWrapper):
        venv = venv.venv
    return venv if isinstance(venv, PettingZooVecEnv) else None


def _box(dim: int) -> spaces.Box:
    return spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)


def _flat_dim(space: spaces.Space[Any]) -> int:
    if not isinstance(space, spaces.Box):
        raise ConfigError(
            f"`centralized_critic` and `agent_id` need vector (Box) agent observations, the environment has {space}. "
            "Turn both off, or flatten the observations with a PettingZoo wrapper"
        )
    return int(np.prod(space.shape))


def _shared_spaces(env: ParallelEnv, agents: list[str]) -> tuple[spaces.Space[Any], spaces.Space[Any]]:
    """:return: The observation and action space every agent shares (one policy acts for all)"""
    obs, act = env.observation_space(agents[0]), env.action_space(agents[0])
    for agent in agents[1:]:
        for kind, mine, theirs in (
            ("observation", env.observation_space(agent), obs),
            ("action", env.action_space(agent), act),
        ):
            if mine != theirs:
                raise ConfigError(
                    f"PettingZoo environment: agent {agent!r} has {kind} space {mine}, agent {agents[0]!r} has {theirs}; "
                    "one shared policy needs the same spaces for every agent. Pad them (supersuit's pad_observations_v0 "
                    "and pad_action_space_v0) or pick an environment with homogeneous agents"
                )
    return obs, act
