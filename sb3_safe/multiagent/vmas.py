"""
:class:`VmasVecEnv`: VMAS's batched simulator (``--env vmas:<scenario>``) as an SB3 ``VecEnv``.

VMAS (Bettini et al., "VMAS: A Vectorized Multi-Agent Simulator for Collective Robot
Learning", https://arxiv.org/abs/2207.03530) steps every copy of a scenario in one call on
torch tensors. ``num_envs`` copies of ``m`` agents make ``num_envs * m`` slots, agent ``i`` of
copy ``k`` at slot ``k * m + i``, one shared policy acting for all: the layout of
:class:`~sb3_safe.multiagent.PettingZooVecEnv`, without a Python loop over copies in ``step``.

What VMAS leaves to its user, done here:

- **no auto-reset**: copies that finished are reset one by one without observations
  (``reset_at(k, return_observations=False)``), then every observation is read in one call
  (the VMAS maintainers' advice, VMAS issue #73); when every copy finished at once (a shared
  time limit) the whole batch is reset in one call;
- **terminal observations and time limits**: the environment runs with
  ``terminated_truncated=True``; a finished slot's info holds ``terminal_observation`` and
  ``TimeLimit.truncated`` (true when the time limit, not the task, ended it), so SB3
  bootstraps a truncated episode from the value of its last observation;
- **episode statistics**: ``episode`` (the agent's return, as ``Monitor`` reports it) on each
  finished slot and ``team_episode`` (the sum of every agent's return) on a copy's first slot;
- **seeding**: :meth:`seed` (called by ``PPO(seed=...)``) seeds VMAS's own random state at the
  next :meth:`reset`, so the same seed gives the same episodes. VMAS keeps that state on its
  ``Environment`` class, shared by every instance: each :class:`VmasVecEnv` swaps in a stream of its
  own around every call into VMAS (:class:`RandomStream`), so an evaluation environment built,
  seeded and reset between training rollouts leaves the training copies' episodes as they were.

The simulator runs on ``device``; SB3's rollout buffers hold numpy arrays, so observations,
rewards and dones cross to numpy once per step (on a GPU that is the one transfer per step).

With ``centralized_critic`` the observation is ``Dict(obs=own, state=global)``, the global
state being every agent's observation concatenated in agent order (MAPPO); ``agent_id`` appends
a one-hot agent index to both.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sb3_safe.env_ids import VMAS_PREFIX, is_vmas
from sb3_safe.errors import ConfigError, did_you_mean
from sb3_safe.multiagent.team import TeamVecEnv

__all__ = ["DEFAULT_MAX_STEPS", "PREFIX", "VmasVecEnv", "check_vmas_id", "is_vmas", "scenario_names"]

#: Environment ids of the form ``vmas:<scenario>`` name a VMAS scenario.
PREFIX = VMAS_PREFIX
#: The horizon when ``env_kwargs`` sets no ``max_steps`` (BenchMARL's for navigation and transport).
DEFAULT_MAX_STEPS = 100
#: ``env_kwargs`` that go to ``vmas.make_env`` itself; every other key goes to the scenario.
MAKE_ENV_KEYS = ("max_steps", "continuous_actions", "clamp_actions", "multidiscrete_actions")


def _import_vmas() -> Any:
    try:
        import vmas
    except ImportError:
        raise ConfigError(
            "VMAS environments (vmas:<scenario>) need the vmas package: pip install 'sb3-safe[marl]' (or pip install vmas)"
        ) from None
    return vmas


def scenario_names() -> list[str]:
    """:return: The scenarios VMAS ships (its own, its MPE ports and its debug scenarios)"""
    vmas = _import_vmas()
    return [*vmas.scenarios, *vmas.mpe_scenarios, *vmas.debug_scenarios]


def check_vmas_id(env_id: str) -> str:
    """
    :param env_id: ``vmas:<scenario>``
    :return: The scenario name
    :raises ConfigError: When VMAS is not installed or has no such scenario
    """
    name = env_id.removeprefix(PREFIX)
    names = scenario_names()
    if name not in names:
        raise ConfigError(
            f"environment {env_id!r}: VMAS has no scenario {name!r}.{did_you_mean(name, names)} Available: {', '.join(names)}"
        )
    return name


class VmasVecEnv(TeamVecEnv):
    """
    ``num_envs`` copies of a VMAS scenario stepped in one call, one VecEnv slot per agent.

    :param env_id: ``vmas:<scenario>``, or a scenario object (a ``vmas.simulator.scenario.BaseScenario``)
    :param num_envs: Copies of the scenario
    :param env_kwargs: ``max_steps`` (default :data:`DEFAULT_MAX_STEPS`), ``continuous_actions``
        (default true), ``clamp_actions``, ``multidiscrete_actions``; every other key is the
        scenario's (e.g. ``n_agents``)
    :param device: Torch device of the simulator (keep it the policy's)
    :param centralized_critic: Observations are ``Dict(obs=own, state=global)`` (MAPPO)
    :param agent_id: Append a one-hot agent index to the observation (and to the state)
    :param seed: Seed of the first reset (:meth:`seed` sets the next one)
    """

    def __init__(
        self,
        env_id: str | Any,
        num_envs: int,
        env_kwargs: dict[str, Any] | None = None,
        *,
        device: str | th.device = "cpu",
        centralized_critic: bool = False,
        agent_id: bool = False,
        seed: int = 0,
    ) -> None:
        self.scenario = check_vmas_id(env_id) if isinstance(env_id, str) else env_id
        kwargs = dict(env_kwargs or {})
        make_kwargs = {key: kwargs.pop(key) for key in MAKE_ENV_KEYS if key in kwargs}
        make_kwargs.setdefault("max_steps", DEFAULT_MAX_STEPS)
        self.stream = RandomStream()
        with self.stream:
            self.env = _make(self.scenario, num_envs, th.device(device), seed, make_kwargs, kwargs)
        self.device = self.env.device
        self.copies = num_envs
        self.n_agents = self.env.n_agents
        self.centralized_critic = centralized_critic
        self.agent_id = agent_id
        obs_space, action_space = _shared_spaces(self.env)
        self._obs_dim = int(np.prod(obs_space.shape))
        self._discrete = isinstance(action_space, spaces.Discrete)
        m = self.n_agents
        self._eye = th.eye(m, device=self.device).expand(num_envs, m, m)
        own_dim = self._obs_dim + agent_id * m
        observation_space: spaces.Space[Any] = _box(own_dim)
        if centralized_critic:
            observation_space = spaces.Dict({"obs": _box(own_dim), "state": _box(m * self._obs_dim + agent_id * m)})
        super().__init__(num_envs * m, observation_space, action_space)
        self._actions = th.zeros(0)

    # -- observations
    def _observations(self, per_agent: Sequence[th.Tensor]) -> VecEnvObs:
        """VMAS's per-agent ``[num_envs, obs_dim]`` tensors as the VecEnv's numpy observations."""
        stacked = th.stack([o.reshape(o.shape[0], -1) for o in per_agent], dim=1).float()  # [copies, m, obs_dim]
        own = th.cat([stacked, self._eye[: stacked.shape[0]]], dim=2) if self.agent_id else stacked
        own_np = own.reshape(-1, own.shape[2]).cpu().numpy()
        if not self.centralized_critic:
            return own_np
        copies, m = stacked.shape[:2]
        state = stacked.reshape(copies, 1, -1).expand(copies, m, -1)
        if self.agent_id:
            state = th.cat([state, self._eye[:copies]], dim=2)
        return {"obs": own_np, "state": state.reshape(copies * m, -1).cpu().numpy()}

    def _slot_obs(self, obs: VecEnvObs, slot: int) -> Any:
        if isinstance(obs, dict):
            return {key: value[slot] for key, value in obs.items()}
        assert isinstance(obs, np.ndarray)
        return obs[slot]

    # -- VecEnv
    def reset(self) -> VecEnvObs:
        seed = self._seeds[0]
        with self.stream:
            if seed is not None:
                self.env.seed(seed)
            obs = self.env.reset()
        self._restart_statistics()
        self._reset_seeds()
        self._reset_options()
        return self._observations(obs)

    def step_async(self, actions: np.ndarray) -> None:
        m = self.n_agents
        tensor = th.as_tensor(actions, device=self.device)
        tensor = tensor.reshape(self.copies, m, -1)
        self._actions = tensor.float() if not self._discrete else tensor.long()

    def step_wait(self) -> VecEnvStepReturn:
        with self.stream:
            return self._step()

    def _step(self) -> VecEnvStepReturn:
        m = self.n_agents
        obs, rewards, terminated, truncated, _ = self.env.step(list(self._actions.unbind(dim=1)))
        reward = th.stack(rewards, dim=1).reshape(-1).cpu().numpy().astype(np.float32)
        done = (terminated | truncated).cpu().numpy()
        self._add_step(reward)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        finished = np.flatnonzero(done)
        observations = self._observations(obs)
        if finished.size:
            limit = (truncated & ~terminated).cpu().numpy()
            self._report(finished, observations, limit, infos)
            if finished.size == self.copies:
                obs = self.env.reset()
            else:
                for k in finished.tolist():
                    self.env.reset_at(k, return_observations=False)
                obs = self.env.get_from_scenario(get_observations=True, get_rewards=False, get_infos=False, get_dones=False)[0]
            observations = self._observations(obs)
        return observations, reward, np.repeat(done, m), infos

    def _report(self, finished: np.ndarray, terminal: VecEnvObs, limit: np.ndarray, infos: list[dict[str, Any]]) -> None:
        """Terminal observations, time limits and episode statistics of the copies that finished."""
        m = self.n_agents
        for k in finished.tolist():
            slots = range(k * m, (k + 1) * m)
            team = {"r": float(self._returns[slots.start : slots.stop].sum()), "l": int(self._lengths[k * m])}
            for slot in slots:
                infos[slot]["terminal_observation"] = self._slot_obs(terminal, slot)
                infos[slot]["TimeLimit.truncated"] = bool(limit[k])
                infos[slot]["episode"] = self._end_episode(slot)
            infos[k * m]["team_episode"] = team

    def close(self) -> None:
        pass

    def get_images(self) -> Sequence[np.ndarray | None]:
        with self.stream:
            return [self.env.render(mode="rgb_array", env_index=k) for k in range(self.copies)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """:return: The VMAS environment's attribute, once per requested slot (every slot shares it)"""
        # VMAS renders rgb_array frames of any copy on demand (get_images): that is its render mode
        value = "rgb_array" if attr_name == "render_mode" else getattr(self.env, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._indices(indices)]


class RandomStream:
    """
    A random state of one VMAS environment's own: VMAS keeps torch's, NumPy's and Python's random states for
    every environment in one class attribute (``Environment.vmas_random_state``) that its methods swap in around
    each call. Entered around calls into one environment, this puts that environment's state there and takes it
    back out after, leaving the shared one as it found it.
    """

    def __init__(self) -> None:
        self.state: list[Any] | None = None
        self._outer: list[Any] = []

    def __enter__(self) -> RandomStream:
        shared = _shared_state()
        self._outer = list(shared)
        if self.state is not None:
            shared[:] = self.state
        return self

    def __exit__(self, *exc: object) -> None:
        shared = _shared_state()
        self.state = list(shared)
        shared[:] = self._outer


def _shared_state() -> list[Any]:
    from vmas.simulator.environment import Environment

    return Environment.vmas_random_state  # type: ignore[no-any-return]


def _make(
    scenario: Any, num_envs: int, device: th.device, seed: int, make_kwargs: dict[str, Any], scenario_kwargs: dict[str, Any]
) -> Any:
    """``vmas.make_env`` with what VMAS rejects (including the scenario options it ignores) as a one-line error."""
    vmas = _import_vmas()
    where = f"environment 'vmas:{scenario if isinstance(scenario, str) else type(scenario).__name__}'"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            env = vmas.make_env(
                scenario, num_envs, device, seed=seed, terminated_truncated=True, **make_kwargs, **scenario_kwargs
            )
        except (TypeError, ValueError, AssertionError, KeyError) as error:
            raise ConfigError(f"{where}: `env_kwargs` {scenario_kwargs | make_kwargs} rejected by VMAS: {error}") from None
    for warning in caught:
        if "not used by the scenario" in str(warning.message):
            raise ConfigError(
                f"{where}: {warning.message} Remove the option or fix its name (the scenario's make_world reads its kwargs)"
            )
    return env


def _box(dim: int) -> spaces.Box:
    return spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)


def _gymnasium_space(space: Any) -> spaces.Space[Any]:
    """VMAS's spaces are the old ``gym``'s; SB3 takes Gymnasium's."""
    if hasattr(space, "n"):
        return spaces.Discrete(int(space.n))
    return spaces.Box(np.asarray(space.low, np.float32), np.asarray(space.high, np.float32), dtype=np.float32)


def _shared_spaces(env: Any) -> tuple[spaces.Box, spaces.Space[Any]]:
    """:return: The observation and action space every agent shares (one policy acts for all)"""
    obs = [_gymnasium_space(s) for s in env.observation_space.spaces]
    act = [_gymnasium_space(s) for s in env.action_space.spaces]
    for kind, per_agent in (("observation", obs), ("action", act)):
        for i, space in enumerate(per_agent[1:], start=1):
            if space != per_agent[0]:
                raise ConfigError(
                    f"VMAS environment: agent {i} has {kind} space {space}, agent 0 has {per_agent[0]}; one shared policy "
                    "needs the same spaces for every agent. Pick a scenario with homogeneous agents"
                )
    first = obs[0]
    if not isinstance(first, spaces.Box):
        raise ConfigError(f"VMAS environment: observations are {first}; sb3-safe needs vector (Box) observations")
    return first, act[0]
