"""Building the training and evaluation VecEnvs from a :class:`~sb3_safe.config.TrainConfig`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecFrameStack, VecNormalize

from sb3_safe import tasks  # noqa: F401 - registers the partially observed and masked environments
from sb3_safe.config import TrainConfig
from sb3_safe.errors import CheckpointError, ConfigError, did_you_mean
from sb3_safe.multiagent.vec_env import PettingZooVecEnv, check_pettingzoo_id, is_pettingzoo, make_parallel_env
from sb3_safe.multiagent.vmas import VmasVecEnv, check_vmas_id, is_vmas
from sb3_safe.vector import BATCHED, make_batched_env

__all__ = ["VEC_ENVS", "VEC_ENV_KINDS", "check_env_id", "load_vec_normalize", "make_env", "make_eval_env", "wrap_normalize"]

VEC_ENVS: dict[str, type[DummyVecEnv] | type[SubprocVecEnv]] = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}
#: Every ``--vec-env`` value: SB3's VecEnv classes, then the batched ones (:mod:`sb3_safe.vector`)
VEC_ENV_KINDS = (*VEC_ENVS, *BATCHED)


def check_env_id(env_id: str) -> None:
    """
    Fail early, with a suggestion, on an environment id Gymnasium does not know.

    ``package.module:EnvId-v0`` imports ``package.module`` first (Gymnasium's syntax), so a
    package can register its environments on import.

    ``pettingzoo:<module>`` names a PettingZoo environment module (its ``parallel_env``),
    ``vmas:<scenario>`` a VMAS scenario.

    :param env_id: The id
    """
    if is_pettingzoo(env_id):
        check_pettingzoo_id(env_id)
        return
    if is_vmas(env_id):
        check_vmas_id(env_id)
        return
    module, sep, name = env_id.rpartition(":")
    if sep:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(
                f"environment {env_id!r}: cannot import module {module!r} ({error}). Install it or fix the module path"
            ) from None
    if name not in gym.registry:
        raise ConfigError(
            f"unknown environment id {name!r}.{did_you_mean(name, gym.registry)} "
            "Use a registered Gymnasium id (python -c 'import gymnasium; gymnasium.pprint_registry()'), "
            "or module:EnvId-v0 for a package that registers it"
        )


def _import_class(path: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(
            f"`env_wrapper`: cannot import {path!r}. Use a full dotted path to a gymnasium.Wrapper class"
        ) from None


def _wrapper(config: TrainConfig) -> Callable[[gym.Env], gym.Env] | None:
    wrappers = [(_import_class(path), kwargs) for path, kwargs in config.env_wrappers]
    if not wrappers:
        return None

    def wrap(env: gym.Env) -> gym.Env:
        for cls, kwargs in wrappers:
            env = cls(env, **kwargs)
        return env

    return wrap


def make_env(
    config: TrainConfig,
    seed: int,
    *,
    n_envs: int | None = None,
    vec_env: str = "dummy",
    wrapper: Callable[[gym.Env], gym.Env] | None = None,
    evaluation: bool = False,
    device: str = "cpu",
) -> VecEnv:
    """
    The training VecEnv: ``n_envs`` Monitor-wrapped copies, the profile's wrappers, frame stacking.

    VecNormalize is added separately (:func:`wrap_normalize`), because a
    resumed run loads its statistics instead of starting new ones.

    :param config: The validated profile block
    :param seed: Seed of the first copy; copy ``i`` gets ``seed + i``
    :param n_envs: Number of copies (default: the profile's)
    :param vec_env: ``dummy`` (one process), ``subproc`` (one process per copy), ``gymnasium`` /
        ``gymnasium-async`` (Gymnasium's vector environments) or ``envpool`` (:mod:`sb3_safe.vector`)
    :param wrapper: An extra wrapper applied innermost-last (fault injection; on a PettingZoo
        environment it applies to the first agent, :class:`~sb3_safe.multiagent.wrappers.FirstAgentWrapper`)
    :param evaluation: For evaluation (a PettingZoo environment then always uses sb3-safe's
        adapter, which reports team returns)
    :param device: Torch device of a batched simulator (VMAS); keep it the model's
    :return: The VecEnv
    """
    check_env_id(config.env_id)
    if is_vmas(config.env_id):
        return _make_vmas_env(config, seed, n_envs or config.n_envs, wrapper, device)
    if config.multiagent:
        return _make_multiagent_env(config, seed, n_envs or config.n_envs, wrapper, supersuit=not evaluation)
    if vec_env not in VEC_ENV_KINDS:
        raise ConfigError(
            f"--vec-env {vec_env!r} is not known.{did_you_mean(vec_env, VEC_ENV_KINDS)} Use one of {', '.join(VEC_ENV_KINDS)}"
        )
    profile_wrapper = _wrapper(config)
    if vec_env in BATCHED:
        wrappers = [w for w in (profile_wrapper, wrapper) if w is not None]
        venv = make_batched_env(
            vec_env, config.env_id.split(":")[-1], n_envs or config.n_envs, seed, config.env_kwargs, wrappers
        )
        return VecFrameStack(venv, config.frame_stack) if config.frame_stack else venv

    def wrap(env: gym.Env) -> gym.Env:
        if profile_wrapper is not None:
            env = profile_wrapper(env)
        return env if wrapper is None else wrapper(env)

    try:
        venv = make_vec_env(
            config.env_id,
            n_envs=n_envs or config.n_envs,
            seed=seed,
            env_kwargs=config.env_kwargs,
            wrapper_class=wrap,
            vec_env_cls=VEC_ENVS[vec_env],
        )
    except TypeError as error:
        raise ConfigError(f"{config.where()}: `env_kwargs` {config.env_kwargs} rejected by {config.env_id}: {error}") from None
    if config.frame_stack:
        venv = VecFrameStack(venv, config.frame_stack)
    return venv


def _make_multiagent_env(
    config: TrainConfig, seed: int, n_envs: int, wrapper: Callable[[gym.Env], gym.Env] | None, supersuit: bool
) -> VecEnv:
    """
    ``n_envs`` copies of a PettingZoo environment in one process, a slot per agent, seeded from
    ``seed``: :class:`~sb3_safe.multiagent.PettingZooVecEnv`, or SuperSuit's stack when the profile
    says ``pettingzoo_adapter: supersuit`` (training environments only; evaluation always counts
    team returns through sb3-safe's adapter). A fault ``wrapper`` strikes the first agent.
    """
    from sb3_safe.multiagent.wrappers import FirstAgentWrapper

    def make() -> Any:
        env = make_parallel_env(config.env_id, config.env_kwargs)
        return env if wrapper is None else FirstAgentWrapper(env, wrapper)

    venv: VecEnv
    if supersuit and config.values.get("pettingzoo_adapter") == "supersuit":
        from sb3_safe.multiagent.supersuit import make_supersuit_env

        venv = make_supersuit_env(make, n_envs)
    else:
        venv = PettingZooVecEnv(
            [make] * n_envs,
            centralized_critic=bool(config.values.get("centralized_critic", False)),
            agent_id=bool(config.values.get("agent_id", False)),
        )
    venv.seed(seed)
    if config.frame_stack:
        venv = VecFrameStack(venv, config.frame_stack)
    return venv


def _make_vmas_env(
    config: TrainConfig, seed: int, n_envs: int, wrapper: Callable[[gym.Env], gym.Env] | None, device: str
) -> VecEnv:
    """``n_envs`` copies of a VMAS scenario stepped in one call (:class:`~sb3_safe.multiagent.vmas.VmasVecEnv`)."""
    if wrapper is not None:
        raise ConfigError(
            f"{config.where()}: Gymnasium wrappers (fault injection) do not apply to VMAS's batched simulator. "
            "Use a Gymnasium or PettingZoo environment for fault suites"
        )
    if config.frame_stack:
        raise ConfigError(f"{config.where()}: `frame_stack` is not supported on VMAS environments. Remove it")
    venv = VmasVecEnv(
        config.env_id,
        n_envs,
        config.env_kwargs,
        device=device,
        centralized_critic=bool(config.values.get("centralized_critic", False)),
        agent_id=bool(config.values.get("agent_id", False)),
        seed=seed,
    )
    venv.seed(seed)
    return venv


def wrap_normalize(venv: VecEnv, config: TrainConfig, stats: Path | None = None) -> VecEnv:
    """
    Add VecNormalize as the profile asks, new or with saved statistics.

    :param venv: The VecEnv to wrap
    :param config: The profile block (``normalize``, ``gamma``)
    :param stats: A ``vecnormalize.pkl`` to continue from
    :return: The wrapped VecEnv, or ``venv`` when the profile does not normalize
    """
    kwargs = config.normalize
    # Reward normalization divides by the std of the discounted return: use the agent's gamma.
    gamma = float(config.get("gamma"))
    if stats is not None:
        loaded = load_vec_normalize(stats, venv)
        # The statistics carry on; what is normalized and how follows the profile (a resume may switch them).
        for name, value in {"gamma": gamma, **(kwargs or {})}.items():
            setattr(loaded, name, value)
        return loaded
    if kwargs is None:
        return venv
    return VecNormalize(venv, gamma=gamma, **kwargs)


def load_vec_normalize(path: Path, venv: VecEnv) -> VecNormalize:
    """
    :param path: A ``vecnormalize.pkl`` written by SB3's ``VecNormalize.save``
    :param venv: The VecEnv to wrap
    :return: VecNormalize with the saved statistics
    """
    try:
        return VecNormalize.load(str(path), venv)
    except FileNotFoundError:
        raise CheckpointError(f"VecNormalize statistics {str(path)!r} do not exist") from None
    except Exception as error:  # pickle raises many types on a corrupt file
        raise CheckpointError(
            f"VecNormalize statistics {str(path)!r} cannot be read (corrupt or truncated?): {error}"
        ) from None


def make_eval_env(config: TrainConfig, seed: int, *, normalized: bool, device: str = "cpu") -> VecEnv:
    """
    One environment for evaluation: true rewards, observation statistics frozen.

    :param config: The profile block
    :param seed: Seed (keep it apart from the training seeds)
    :param normalized: Whether the agent trains on VecNormalize'd observations; the statistics
        are synced from the training env by ``EvalCallback`` or loaded by the caller
    :param device: Torch device of a batched simulator (VMAS)
    :return: The VecEnv
    """
    venv = make_env(config, seed, n_envs=1, evaluation=True, device=device)
    if normalized:
        kwargs = config.normalize or {}
        venv = VecNormalize(
            venv,
            norm_obs=kwargs.get("norm_obs", True),
            norm_reward=False,
            clip_obs=kwargs.get("clip_obs", 10.0),
            training=False,
        )
    return venv
