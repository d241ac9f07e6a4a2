"""Building the training and evaluation VecEnvs from a :class:`~sb3_safe.config.TrainConfig`."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
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

__all__ = [
    "FAMILIES",
    "VEC_ENVS",
    "VEC_ENV_KINDS",
    "EnvFamily",
    "EnvSettings",
    "check_env_id",
    "family_of",
    "load_vec_normalize",
    "make_env",
    "make_eval_env",
    "wrap_normalize",
]

#: SB3's VecEnv classes by their ``--vec-env`` name
VEC_ENVS: dict[str, type[DummyVecEnv] | type[SubprocVecEnv]] = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}
#: Every ``--vec-env`` value: SB3's VecEnv classes, then the batched ones (:mod:`sb3_safe.vector`)
VEC_ENV_KINDS = (*VEC_ENVS, *BATCHED)


@dataclass(frozen=True)
class EnvSettings:
    """
    What an environment family needs to make a VecEnv: the environment's own keys of the profile block and how the
    copies are stepped, nothing else of the run.

    :param env_id: The environment id
    :param n_envs: Copies
    :param seed: Seed of the first copy
    :param env_kwargs: Keyword arguments of the environment (``gymnasium.make``, the PettingZoo module, the VMAS scenario)
    :param wrappers: Gymnasium wrappers, innermost first: the profile's, then an extra one (fault injection)
    :param frame_stack: ``VecFrameStack`` size, if any
    :param vec_env: How Gymnasium copies are stepped (:data:`VEC_ENV_KINDS`)
    :param centralized_critic: Multi-agent: observations carry the global state
    :param agent_id: Multi-agent: a one-hot agent index is appended
    :param adapter: PettingZoo: ``sb3_safe`` or ``supersuit`` (training only; evaluation counts team returns)
    :param evaluation: For evaluation
    :param device: Torch device of a batched simulator (VMAS)
    :param where: What names the profile block in an error
    """

    env_id: str
    n_envs: int
    seed: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    wrappers: tuple[Callable[[gym.Env], gym.Env], ...] = ()
    frame_stack: int | None = None
    vec_env: str = "dummy"
    centralized_critic: bool = False
    agent_id: bool = False
    adapter: str = "sb3_safe"
    evaluation: bool = False
    device: str = "cpu"
    where: str = ""

    def wrap(self, env: gym.Env) -> gym.Env:
        """Apply :attr:`wrappers` in order."""
        for wrapper in self.wrappers:
            env = wrapper(env)
        return env


@dataclass(frozen=True)
class EnvFamily:
    """
    One kind of environment: which ids are its, how an id is checked, how its VecEnv is made.

    :param name: What it is called in messages
    :param claims: Whether an id (and ``--vec-env`` kind) is this family's
    :param check: Raises :class:`~sb3_safe.errors.ConfigError` on an id it does not know (what it returns is unused)
    :param make: The VecEnv for :class:`EnvSettings`
    """

    name: str
    claims: Callable[[str, str], bool]
    check: Callable[[str], object]
    make: Callable[[EnvSettings], VecEnv]


def _check_gymnasium_id(env_id: str) -> None:
    """
    ``package.module:EnvId-v0`` imports ``package.module`` first (Gymnasium's syntax), so a package can register its
    environments on import.
    """
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


def _make_gymnasium_env(settings: EnvSettings) -> VecEnv:
    """``n_envs`` Monitor-wrapped copies in SB3's DummyVecEnv or SubprocVecEnv."""
    if settings.vec_env not in VEC_ENVS:
        raise ConfigError(
            f"--vec-env {settings.vec_env!r} is not known.{did_you_mean(settings.vec_env, VEC_ENV_KINDS)} "
            f"Use one of {', '.join(VEC_ENV_KINDS)}"
        )
    try:
        venv = make_vec_env(
            settings.env_id,
            n_envs=settings.n_envs,
            seed=settings.seed,
            env_kwargs=settings.env_kwargs,
            wrapper_class=settings.wrap,
            vec_env_cls=VEC_ENVS[settings.vec_env],
        )
    except TypeError as error:
        raise ConfigError(
            f"{settings.where}: `env_kwargs` {settings.env_kwargs} rejected by {settings.env_id}: {error}"
        ) from None
    return VecFrameStack(venv, settings.frame_stack) if settings.frame_stack else venv


def _make_batched_gymnasium_env(settings: EnvSettings) -> VecEnv:
    """Gymnasium's vector environments or envpool (:mod:`sb3_safe.vector`)."""
    name = settings.env_id.split(":")[-1]
    venv = make_batched_env(settings.vec_env, name, settings.n_envs, settings.seed, settings.env_kwargs, settings.wrappers)
    return VecFrameStack(venv, settings.frame_stack) if settings.frame_stack else venv


def _make_pettingzoo_env(settings: EnvSettings) -> VecEnv:
    """
    ``n_envs`` copies of a PettingZoo environment in one process, a slot per agent, seeded from ``seed``:
    :class:`~sb3_safe.multiagent.PettingZooVecEnv`, or SuperSuit's stack with ``pettingzoo_adapter: supersuit``
    (training environments only; evaluation always counts team returns through sb3-safe's adapter). A fault
    wrapper strikes the first agent.
    """
    from sb3_safe.multiagent.wrappers import FirstAgentWrapper

    def make() -> Any:
        env = make_parallel_env(settings.env_id, settings.env_kwargs)
        return FirstAgentWrapper(env, settings.wrap) if settings.wrappers else env

    venv: VecEnv
    if not settings.evaluation and settings.adapter == "supersuit":
        from sb3_safe.multiagent.supersuit import make_supersuit_env

        venv = make_supersuit_env(make, settings.n_envs)
    else:
        venv = PettingZooVecEnv(
            [make] * settings.n_envs, centralized_critic=settings.centralized_critic, agent_id=settings.agent_id
        )
    venv.seed(settings.seed)
    return VecFrameStack(venv, settings.frame_stack) if settings.frame_stack else venv


def _make_vmas_env(settings: EnvSettings) -> VecEnv:
    """``n_envs`` copies of a VMAS scenario stepped in one call (:class:`~sb3_safe.multiagent.vmas.VmasVecEnv`)."""
    if settings.wrappers:
        raise ConfigError(
            f"{settings.where}: Gymnasium wrappers (fault injection) do not apply to VMAS's batched simulator. "
            "Use a Gymnasium or PettingZoo environment for fault suites"
        )
    if settings.frame_stack:
        raise ConfigError(f"{settings.where}: `frame_stack` is not supported on VMAS environments. Remove it")
    venv = VmasVecEnv(
        settings.env_id,
        settings.n_envs,
        settings.env_kwargs,
        device=settings.device,
        centralized_critic=settings.centralized_critic,
        agent_id=settings.agent_id,
        seed=settings.seed,
    )
    venv.seed(settings.seed)
    return venv


#: Every environment family, asked in order: the first that claims an id makes its VecEnv
FAMILIES: tuple[EnvFamily, ...] = (
    EnvFamily("VMAS", lambda env_id, vec_env: is_vmas(env_id), check_vmas_id, _make_vmas_env),
    EnvFamily("PettingZoo", lambda env_id, vec_env: is_pettingzoo(env_id), check_pettingzoo_id, _make_pettingzoo_env),
    EnvFamily(
        "batched Gymnasium", lambda env_id, vec_env: vec_env in BATCHED, _check_gymnasium_id, _make_batched_gymnasium_env
    ),
    EnvFamily("Gymnasium", lambda env_id, vec_env: True, _check_gymnasium_id, _make_gymnasium_env),
)


def family_of(env_id: str, vec_env: str = "dummy") -> EnvFamily:
    """:return: The family whose environments ``env_id`` names (stepped as ``vec_env`` where that applies)"""
    return next(family for family in FAMILIES if family.claims(env_id, vec_env))


def check_env_id(env_id: str) -> None:
    """
    Fail early, with a suggestion, on an environment id its family does not know: a Gymnasium id
    (``package.module:EnvId-v0`` imports ``package.module`` first), ``pettingzoo:<module>`` (a PettingZoo
    environment module's ``parallel_env``) or ``vmas:<scenario>``.

    :param env_id: The id
    """
    family_of(env_id).check(env_id)


def _import_class(path: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(
            f"`env_wrapper`: cannot import {path!r}. Use a full dotted path to a gymnasium.Wrapper class"
        ) from None


def _profile_wrappers(config: TrainConfig) -> list[Callable[[gym.Env], gym.Env]]:
    return [functools.partial(_import_class(path), **kwargs) for path, kwargs in config.env_wrappers]


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
    The training VecEnv, made by the environment's family (:data:`FAMILIES`): ``n_envs`` copies (Monitor-wrapped for
    Gymnasium), the profile's wrappers, frame stacking.

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
    family = family_of(config.env_id, vec_env)
    family.check(config.env_id)
    values = config.values
    settings = EnvSettings(  # what the family needs from the profile block and the run, nothing else
        env_id=config.env_id,
        n_envs=n_envs or config.n_envs,
        seed=seed,
        env_kwargs=dict(config.env_kwargs),
        wrappers=(*_profile_wrappers(config), *(() if wrapper is None else (wrapper,))),
        frame_stack=config.frame_stack,
        vec_env=vec_env,
        centralized_critic=bool(values.get("centralized_critic", False)),
        agent_id=bool(values.get("agent_id", False)),
        adapter=str(values.get("pettingzoo_adapter", "sb3_safe")),
        evaluation=evaluation,
        device=device,
        where=config.where(),
    )
    return family.make(settings)


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
