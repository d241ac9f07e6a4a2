"""
Profiles: per-environment YAML blocks (rl-baselines3-zoo's format), validated into a :class:`TrainConfig`.

A profile is a YAML file with one block per environment id and an optional ``default:``
block; the environment's block is merged over ``default`` (mappings such as
``policy_kwargs`` key by key). ``safe`` and ``baseline`` name the files shipped with the
package (the repository's ``hyperparams/`` folder, installed as ``sb3_safe/hyperparams``);
any path to a file in the same format works too, rl-baselines3-zoo's ``ppo.yml`` included.

Files are read with ``yaml.safe_load`` and nothing in them is evaluated. Every key is
checked against :data:`SCHEMA`: an unknown key, a wrong type or an out-of-range value
raises a one-line :class:`~sb3_safe.errors.ConfigError` naming the key, the value, what is
allowed and a fix.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.utils import LinearSchedule
from torch import nn, optim

from sb3_safe.callbacks import MonitorOptions, RollbackOptions
from sb3_safe.contrib import SafeMaskablePPO, SafeRecurrentPPO
from sb3_safe.errors import ConfigError, did_you_mean
from sb3_safe.health import Thresholds
from sb3_safe.multiagent.vec_env import is_pettingzoo
from sb3_safe.multiagent.vmas import is_vmas
from sb3_safe.options import OptionError, check_mapping
from sb3_safe.ppo import KL_STOPS, SafePPO
from sb3_safe.schedules import AdaptiveLearningRate
from sb3_safe.zoo import parse_literal_string, parse_policy_kwargs_string

__all__ = [
    "BUNDLED_HYPERPARAMS",
    "PROFILE_DIRS",
    "SCHEMA",
    "Spec",
    "TrainConfig",
    "algorithm_defaults",
    "find_profile",
    "load_config",
    "parse_overrides",
]


def _bundled_hyperparams() -> Path:
    installed = Path(__file__).resolve().parent / "hyperparams"  # a wheel: sb3_safe/hyperparams
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / "hyperparams"  # a source tree


#: The profiles and search spaces shipped with sb3-safe (``safe.yml``, ``baseline.yml``, ``spaces/``).
BUNDLED_HYPERPARAMS = _bundled_hyperparams()

#: Where profile names (``safe``, ``baseline``) are looked up: the profiles shipped with the package,
#: then ``$SB3_SAFE_HYPERPARAMS``. A path to a YAML file is used as it is.
PROFILE_DIRS: list[Path] = [
    BUNDLED_HYPERPARAMS,
    *([Path(os.environ["SB3_SAFE_HYPERPARAMS"])] if os.environ.get("SB3_SAFE_HYPERPARAMS") else []),
]

#: ``algo:`` -> algorithm class: sb3-safe's classes and the SB3 / sb3-contrib classes they extend.
ALGOS: dict[str, type[OnPolicyAlgorithm]] = {
    "safe_ppo": SafePPO,
    "ppo": PPO,
    "safe_recurrent_ppo": SafeRecurrentPPO,
    "recurrent_ppo": RecurrentPPO,
    "safe_maskable_ppo": SafeMaskablePPO,
    "maskable_ppo": MaskablePPO,
}
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "selu": nn.SELU,
}
OPTIMIZERS: dict[str, type[optim.Optimizer]] = {"adam": optim.Adam, "adamw": optim.AdamW, "rmsprop": optim.RMSprop}
#: The option classes behind the ``health:`` and ``rollback:`` blocks: their fields are the keys,
#: their annotated types say what each accepts (:mod:`sb3_safe.options`).
CALLBACK_OPTIONS: dict[str, tuple[type[Any], ...]] = {
    "health": (Thresholds, MonitorOptions),
    "rollback": (RollbackOptions,),
}
VEC_NORMALIZE_KEYS = {
    "norm_obs": "bool",
    "norm_reward": "bool",
    "clip_obs": "float",
    "clip_reward": "float",
    "epsilon": "float",
}


@dataclass(frozen=True)
class Spec:
    """What one profile key accepts."""

    #: A key of :data:`VALIDATORS`
    kind: str
    doc: str
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False
    #: Only SafePPO has it (``algo: ppo`` rejects it)
    safe_only: bool = False
    #: Passed to the algorithm's constructor (otherwise it configures the run)
    algorithm: bool = True

    def range_text(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return ""


def _run(kind: str, doc: str, **kwargs: Any) -> Spec:
    return Spec(kind, doc, algorithm=False, **kwargs)


SCHEMA: dict[str, Spec] = {
    # -- the run
    "algo": _run(
        "choice",
        "safe_ppo, safe_recurrent_ppo, safe_maskable_ppo (sb3-safe) or ppo, recurrent_ppo, maskable_ppo (SB3, sb3-contrib)",
        choices=tuple(ALGOS),
    ),
    "n_timesteps": _run("int", "environment steps to train for", low=1),
    "n_envs": _run("int", "parallel environment copies", low=1),
    "normalize": _run("normalize", "VecNormalize: true, false, or a mapping of its arguments"),
    "env_kwargs": _run("mapping", "keyword arguments of gymnasium.make"),
    "env_wrapper": _run("wrappers", "gymnasium wrappers: dotted class paths, optionally with kwargs"),
    "frame_stack": _run("int", "VecFrameStack size", low=1, nullable=True),
    "health": _run("health", "HealthMonitorCallback: a mapping of thresholds (null or false: off)", nullable=True),
    "rollback": _run("rollback", "RollbackCallback: a mapping of its options (null or false: off)", nullable=True),
    "keep_checkpoints": _run(
        "int", "keep this many newest checkpoints and spaced-out older ones (null: keep all)", low=1, nullable=True
    ),
    "guard": _run("bool", "NonFiniteGuardCallback: zero NaN/inf observations and rewards (always on with rollback)"),
    # -- multi-agent (pettingzoo:<module> environments)
    "centralized_critic": _run("bool", "MAPPO: the critic sees the global state, each actor its own observation"),
    "agent_id": _run("bool", "append a one-hot agent index to each agent's observation (and to the global state)"),
    "pettingzoo_adapter": _run(
        "choice",
        "sb3_safe (PettingZooVecEnv) or supersuit (SuperSuit's VecEnv as SB3 users build it, for comparison)",
        choices=("sb3_safe", "supersuit"),
    ),
    # -- SB3's PPO
    "policy": Spec(
        "choice",
        "policy alias (the Lstm ones for recurrent algorithms)",
        choices=("MlpPolicy", "CnnPolicy", "MultiInputPolicy", "MlpLstmPolicy", "CnnLstmPolicy", "MultiInputLstmPolicy"),
    ),
    "policy_kwargs": Spec("policy_kwargs", "policy arguments (mapping, or the zoo's dict(...) string)"),
    "learning_rate": Spec(
        "schedule", "actor learning rate (float, lin_<float>, adaptive or adaptive_<initial float>)", low=0, low_open=True
    ),
    "n_steps": Spec("int", "steps per environment per rollout", low=1),
    "batch_size": Spec("int", "minibatch size", low=1),
    "n_epochs": Spec("int", "epochs per update", low=1),
    "gamma": Spec("float", "discount factor", low=0, low_open=True, high=1),
    "gae_lambda": Spec("float", "GAE lambda", low=0, high=1),
    "clip_range": Spec("schedule", "policy clip range (float or lin_<float>)", low=0, low_open=True),
    "clip_range_vf": Spec("schedule", "value clip range, max form (null: off)", low=0, low_open=True, nullable=True),
    "normalize_advantage": Spec("bool", "normalize advantages per minibatch"),
    "ent_coef": Spec("float", "entropy coefficient", low=0),
    "vf_coef": Spec("float", "value loss coefficient", low=0, low_open=True),
    "max_grad_norm": Spec("float", "gradient clipping norm (.inf: no clipping)", low=0, low_open=True),
    "use_sde": Spec("bool", "generalized state-dependent exploration"),
    "sde_sample_freq": Spec("int", "gSDE noise resampling period (-1: once per rollout)", low=-1),
    "target_kl": Spec("float", "KL target for early stopping (null: off)", low=0, low_open=True, nullable=True),
    "stats_window_size": Spec("int", "episodes averaged in rollout/ep_rew_mean", low=1),
    # -- SafePPO
    "value_loss": Spec("choice", "critic loss", choices=("mse", "huber", "blend"), safe_only=True),
    "huber_delta": Spec("float", "Huber delta", low=0, low_open=True, safe_only=True),
    "critic_learning_rate": Spec(
        "schedule", "critic learning rate (null: learning_rate)", low=0, low_open=True, nullable=True, safe_only=True
    ),
    "kl_stop": Spec("choice", "KL early-stopping rule", choices=KL_STOPS, safe_only=True),
    "adv_norm_min_std": Spec("float", "only centre advantages below this std", low=0, safe_only=True),
    "normalize_value": Spec("bool", "running normalization of value targets", safe_only=True),
    # -- the KL-adaptive learning rate (learning_rate: adaptive), see sb3_safe.schedules
    "desired_kl": _run(
        "float", "approx KL each update aims at (learning_rate: adaptive)", low=0, low_open=True, safe_only=True
    ),
    "adaptive_lr_factor": _run("float", "the adaptive rate's step per update", low=1, low_open=True, safe_only=True),
    "adaptive_lr_min": _run("float", "the adaptive rate's lower bound", low=0, low_open=True, safe_only=True),
    "adaptive_lr_max": _run("float", "the adaptive rate's upper bound", low=0, low_open=True, safe_only=True),
}

#: The profile keys of the adaptive learning rate, by :class:`~sb3_safe.schedules.AdaptiveLearningRate` field.
ADAPTIVE_KEYS = {
    "desired_kl": "desired_kl",
    "adaptive_lr_factor": "factor",
    "adaptive_lr_min": "min_lr",
    "adaptive_lr_max": "max_lr",
}
ADAPTIVE_PREFIX = "adaptive"

#: Keys of rl-baselines3-zoo files that sb3-safe cannot honour, with what to do instead.
ZOO_UNSUPPORTED = {
    "callback": "callbacks are not read from profiles; sb3-safe adds checkpoints, evaluation and health callbacks itself",
    "vec_env_wrapper": "VecEnv wrappers other than VecNormalize and VecFrameStack are not supported",
    "eval_env_kwargs": "the evaluation environment uses env_kwargs",
    "monitor_kwargs": "the Monitor wrapper is added with its defaults",
}

POLICY_KWARGS: dict[str, str] = {
    "net_arch": "list of layer sizes, or {pi: [...], vf: [...]}",
    "activation_fn": "one of " + ", ".join(ACTIVATIONS),
    "log_std_init": "float",
    "ortho_init": "bool",
    "share_features_extractor": "bool",
    "full_std": "bool",
    "use_expln": "bool",
    "squash_output": "bool",
    "normalize_images": "bool",
    "optimizer_class": "one of " + ", ".join(OPTIMIZERS),
    "optimizer_kwargs": "mapping of optimizer arguments, e.g. {eps: 1e-5}",
    # sb3-contrib's recurrent policies
    "lstm_hidden_size": "int >= 1 (recurrent policies)",
    "n_lstm_layers": "int >= 1 (recurrent policies)",
    "shared_lstm": "bool (recurrent policies)",
    "enable_critic_lstm": "bool (recurrent policies)",
}


@dataclass(frozen=True)
class TrainConfig:
    """
    A validated profile block for one environment.

    :param env_id: Gymnasium id, possibly ``module:EnvId-v0``
    :param profile: The profile as given (name or path)
    :param source: The file it was read from
    :param values: Every key of the block, validated and in canonical form (plain YAML data)
    """

    env_id: str
    profile: str
    source: Path
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def algo(self) -> str:
        return str(self.values.get("algo", "safe_ppo"))

    @property
    def algorithm_class(self) -> type[OnPolicyAlgorithm]:
        return ALGOS[self.algo]

    @property
    def n_timesteps(self) -> int:
        if "n_timesteps" not in self.values:
            raise ConfigError(
                f"{self.where()}: no `n_timesteps`. Add it to the block (e.g. n_timesteps: !!float 1e5) or pass --timesteps"
            )
        return int(self.values["n_timesteps"])

    @property
    def n_envs(self) -> int:
        return int(self.values.get("n_envs", 1))

    @property
    def normalize(self) -> dict[str, Any] | None:
        """:return: VecNormalize keyword arguments, or ``None`` for no VecNormalize"""
        value = self.values.get("normalize", False)
        return dict(value) if isinstance(value, Mapping) else None

    @property
    def env_kwargs(self) -> dict[str, Any]:
        return dict(self.values.get("env_kwargs", {}))

    @property
    def env_wrappers(self) -> list[tuple[str, dict[str, Any]]]:
        return [(path, dict(kwargs)) for path, kwargs in self.values.get("env_wrapper", [])]

    def callback_options(self, key: str) -> dict[str, Any] | None:
        """:return: The ``health`` or ``rollback`` options, or ``None`` when that callback is off"""
        value = self.values.get(key)
        return dict(value) if isinstance(value, Mapping) else None

    @property
    def frame_stack(self) -> int | None:
        value = self.values.get("frame_stack")
        return None if value is None else int(value)

    def where(self) -> str:
        return f"{self.source} [{self.env_id}]"

    def algorithm_kwargs(self) -> dict[str, Any]:
        """:return: Keyword arguments for the algorithm's constructor (schedules and classes built)"""
        kwargs: dict[str, Any] = {}
        for key, value in self.values.items():
            spec = SCHEMA[key]
            if not spec.algorithm or key == "policy":
                continue
            if spec.kind == "schedule":
                kwargs[key] = _build_schedule(value, self.values)
            elif spec.kind == "policy_kwargs":
                kwargs[key] = _build_policy_kwargs(value)
                if "maskable" in self.algo:
                    # MaskablePPO's policy takes no Gaussian settings (its actions are discrete):
                    # a default such as the safe profile's log_std_init does not apply to it.
                    kwargs[key] = {k: v for k, v in kwargs[key].items() if k not in _GAUSSIAN_KWARGS}
            else:
                kwargs[key] = value
        return kwargs

    @property
    def policy(self) -> str | type[ActorCriticPolicy]:
        """:return: The policy alias, or :class:`~sb3_safe.multiagent.CentralizedCriticPolicy` with ``centralized_critic``"""
        if self.values.get("centralized_critic"):
            from sb3_safe.multiagent.policy import CentralizedCriticPolicy

            return CentralizedCriticPolicy
        return str(self.values.get("policy", "MlpPolicy"))

    @property
    def multiagent(self) -> bool:
        """Whether the environment is a multi-agent one (``pettingzoo:<module>`` or ``vmas:<scenario>``)."""
        return is_pettingzoo(self.env_id) or is_vmas(self.env_id)

    def effective_values(self) -> dict[str, Any]:
        """:return: The block with the algorithm's defaults filled in for keys it does not set"""
        defaults = dict(algorithm_defaults(self.algo))
        defaults.update({"algo": self.algo, "n_envs": self.n_envs, "normalize": self.values.get("normalize", False)})
        return {**defaults, **self.values}

    def get(self, key: str) -> Any:
        """:return: The block's value for ``key``, or the algorithm's default (``n_steps``, ``batch_size``, ...)"""
        return self.values[key] if key in self.values else algorithm_defaults(self.algo).get(key)

    def with_overrides(self, overrides: Mapping[str, Any]) -> TrainConfig:
        """:return: A new config with ``overrides`` merged in and validated again"""
        merged = _merge(dict(self.values), _canonical_block(dict(overrides), self.source, self.env_id))
        return replace(self, values=_validate(merged, self.source, self.env_id))


@functools.cache
def algorithm_defaults(algo: str) -> Mapping[str, Any]:
    """
    The defaults of the algorithm's constructor for the profile keys, read from its signature
    (and PPO's, for the arguments a subclass passes on as ``**kwargs``): never copied by hand.

    :param algo: A key of :data:`ALGOS`
    :return: Profile key -> default
    """
    # Every class of the algorithm's lineage that defines its own constructor, base first: a
    # subclass that passes arguments on as **kwargs does not repeat their defaults.
    classes = [cls for cls in ALGOS[algo].__mro__ if isinstance(cls, type) and "__init__" in vars(cls) and cls is not object]
    defaults: dict[str, Any] = {"policy": "MlpPolicy"}
    for cls in reversed(classes):
        for name, param in inspect.signature(cls).parameters.items():
            empty = param.default is inspect.Parameter.empty
            if name in SCHEMA and not empty and (param.default is not None or SCHEMA[name].nullable):
                defaults[name] = param.default
    return defaults


def find_profile(profile: str) -> Path:
    """
    :param profile: A profile name (``safe``) or a path to a YAML file
    :return: The file
    """
    path = Path(profile).expanduser()
    if path.suffix in (".yml", ".yaml") or os.sep in profile:
        if path.is_file():
            return path
        raise ConfigError(f"profile file {profile!r} does not exist. Pass an existing YAML file or a name such as 'safe'")
    for folder in PROFILE_DIRS:
        for suffix in (".yml", ".yaml"):
            if (folder / f"{profile}{suffix}").is_file():
                return folder / f"{profile}{suffix}"
    names = sorted({p.stem for folder in PROFILE_DIRS if folder.is_dir() for p in folder.glob("*.y*ml")})
    raise ConfigError(
        f"unknown profile {profile!r}.{did_you_mean(profile, names)} Available: {', '.join(names) or 'none'} "
        f"(in {', '.join(map(str, PROFILE_DIRS))}); or pass a path to a YAML file"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}. Fix the file's syntax") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read profile: {error.strerror}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile is a mapping of environment ids to blocks, got {type(data).__name__}")
    return data


def load_config(profile: str, env_id: str, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """
    Read a profile and validate the block for ``env_id`` (merged over ``default``).

    :param profile: Profile name or path
    :param env_id: Environment id; for ``module:EnvId-v0`` the block may be keyed by either form
    :param overrides: Values that replace the profile's (``--set``, ``--timesteps``), validated alike
    :return: The validated configuration
    """
    source = find_profile(profile)
    data = _read_yaml(source)
    short_id = env_id.split(":")[-1]
    key = env_id if env_id in data else short_id
    if key not in data and "default" not in data:
        envs = [k for k in data if isinstance(data[k], dict)]
        raise ConfigError(
            f"{source}: no block for {env_id!r} and no `default:` block.{did_you_mean(short_id, envs)} "
            f"Blocks: {', '.join(envs)}. Add a block for {short_id} or a default"
        )
    block: dict[str, Any] = {}
    for name in ("default", key):
        part = data.get(name) or {}
        if not isinstance(part, dict):
            raise ConfigError(f"{source} [{name}]: a block is a mapping of keys to values, got {part!r}")
        block = _merge(block, _canonical_block(part, source, name))
    if overrides:
        block = _merge(block, _canonical_block(dict(overrides), source, env_id))
    return TrainConfig(env_id=env_id, profile=profile, source=source, values=_validate(block, source, env_id))


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """
    Parse ``KEY=VALUE`` strings (``--set``); values are YAML (``3e-4``, ``[64, 64]``, ``null``).

    Dotted keys reach into mappings: ``policy_kwargs.log_std_init=-1``.

    :param items: The strings
    :return: A nested mapping
    """
    result: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set learning_rate=1e-4")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise ConfigError(
                f"--set {item!r}: the value is not valid YAML; quote strings, e.g. --set policy=MlpPolicy"
            ) from None
        target = result
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return result


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _canonical_block(block: dict[str, Any], source: Path, name: str) -> dict[str, Any]:
    """Turn the zoo's string forms into mappings before blocks are merged."""
    out = dict(block)
    where = f"{source} [{name}]"
    try:
        if isinstance(out.get("policy_kwargs"), str):
            out["policy_kwargs"] = parse_policy_kwargs_string(out["policy_kwargs"])
        if isinstance(out.get("normalize"), str) and out["normalize"].strip().startswith("{"):
            out["normalize"] = parse_literal_string(out["normalize"], "normalize")
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    if out.get("normalize") is True:
        out["normalize"] = {}
    return out


def _validate(block: Mapping[str, Any], source: Path, env_id: str) -> dict[str, Any]:
    where = f"{source} [{env_id}]"
    values: dict[str, Any] = {}
    for key, value in block.items():
        if key in ZOO_UNSUPPORTED:
            raise ConfigError(
                f"{where}: `{key}` (an rl-baselines3-zoo key) is not supported: {ZOO_UNSUPPORTED[key]}. Remove it"
            )
        spec = SCHEMA.get(key)
        if spec is None:
            raise _unknown_key(where, "", key, SCHEMA)
        values[key] = _check(key, spec, value, where)
    if "algo" not in values and "Lstm" in str(values.get("policy", "")):
        values["algo"] = "recurrent_ppo"  # rl-zoo's ppo_lstm.yml names no algorithm: its file does
    algo = values.get("algo", "safe_ppo")
    if not algo.startswith("safe_"):
        safe_keys = [key for key in values if SCHEMA[key].safe_only]
        if safe_keys:
            raise ConfigError(
                f"{where}: `{safe_keys[0]}` is an sb3-safe option but `algo` is {algo}. Remove it or set algo: safe_{algo}"
            )
    if "maskable" in algo and values.get("use_sde"):
        raise ConfigError(f"{where}: `use_sde` = true but algo: {algo} has no gSDE (MaskablePPO). Remove it")
    _check_consistency(values, where, env_id)
    _check_multiagent(values, where, env_id)
    _check_adaptive(values, where)
    return values


def _check_multiagent(values: Mapping[str, Any], where: str, env_id: str) -> None:
    keys = [key for key in ("centralized_critic", "agent_id", "pettingzoo_adapter") if values.get(key)]
    if not (is_pettingzoo(env_id) or is_vmas(env_id)):
        if keys:
            raise ConfigError(
                f"{where}: `{keys[0]}` is for multi-agent environments; {env_id!r} is not one. "
                "Use --env pettingzoo:<module> (e.g. pettingzoo:mpe2.simple_spread_v3), vmas:<scenario>, or remove it"
            )
        return
    if is_vmas(env_id) and values.get("pettingzoo_adapter"):
        raise ConfigError(f"{where}: `pettingzoo_adapter` is for PettingZoo environments; {env_id!r} is VMAS. Remove it")
    algo = values.get("algo", "safe_ppo")
    if algo not in ("safe_ppo", "ppo"):
        raise ConfigError(
            f"{where}: algo: {algo} is not supported on multi-agent environments (shared-parameter PPO only). "
            "Use algo: safe_ppo or ppo"
        )
    if values.get("centralized_critic") and values.get("policy", "MlpPolicy") != "MlpPolicy":
        raise ConfigError(
            f"{where}: `policy` = {values['policy']!r} with centralized_critic: true; the centralized critic builds its "
            "own actor-critic from MLPs. Use policy: MlpPolicy (policy_kwargs.net_arch sizes both)"
        )
    if values.get("pettingzoo_adapter") == "supersuit" and keys[:1] != ["pettingzoo_adapter"]:
        raise ConfigError(
            f"{where}: `{keys[0]}` needs pettingzoo_adapter: sb3_safe (SuperSuit's VecEnv has no global state or agent "
            "index). Remove it or use pettingzoo_adapter: sb3_safe"
        )
    if values.get("env_wrapper"):
        raise ConfigError(
            f"{where}: `env_wrapper` wraps Gymnasium environments; {env_id!r} is a multi-agent one. Remove it "
            "(wrap a PettingZoo environment in its module's parallel_env instead)"
        )


def _unknown_key(where: str, prefix: str, key: str, allowed: Iterable[str]) -> ConfigError:
    names = list(allowed)
    return ConfigError(
        f"{where}: unknown key `{prefix}{key}`.{did_you_mean(key, names)} Allowed: {', '.join(prefix + n for n in names)}. "
        "Fix the spelling or remove it"
    )


_GAUSSIAN_KWARGS = ("log_std_init", "full_std", "use_expln", "squash_output")
_LSTM_KWARGS = ("lstm_hidden_size", "n_lstm_layers", "shared_lstm", "enable_critic_lstm")


def _check_consistency(values: Mapping[str, Any], where: str, env_id: str) -> None:
    algo = values.get("algo", "safe_ppo")
    defaults = algorithm_defaults(algo)
    policy = values.get("policy", "MlpPolicy")
    recurrent = "recurrent" in algo
    if recurrent != ("Lstm" in policy):
        wanted = (
            "MlpLstmPolicy (or CnnLstmPolicy, MultiInputLstmPolicy)"
            if recurrent
            else "MlpPolicy (or CnnPolicy, MultiInputPolicy)"
        )
        raise ConfigError(f"{where}: `policy` = {policy!r} does not go with algo: {algo}. Use policy: {wanted}")
    lstm_keys = sorted(
        {"lstm_hidden_size", "n_lstm_layers", "shared_lstm", "enable_critic_lstm"} & set(values.get("policy_kwargs", {}))
    )
    if lstm_keys and not recurrent:
        raise ConfigError(
            f"{where}: `policy_kwargs.{lstm_keys[0]}` is for recurrent policies; algo: {algo} has none. "
            "Use algo: safe_recurrent_ppo with policy: MlpLstmPolicy, or remove it"
        )
    n_envs = values.get("n_envs", 1)
    n_steps = values.get("n_steps", defaults["n_steps"])
    batch_size = values.get("batch_size", defaults["batch_size"])
    rollout = n_steps * n_envs
    # (on PettingZoo environments a rollout has a slot per agent: it is larger than n_steps * n_envs)
    if batch_size > rollout and not (is_pettingzoo(env_id) or is_vmas(env_id)):
        # A soft problem, as in SB3 (which warns): every minibatch is the whole rollout. rl-zoo's
        # tuned MountainCarContinuous-v0 entry relies on it (batch 256, 8-step rollout).
        warnings.warn(
            f"{where}: `batch_size` = {batch_size} is larger than the rollout n_steps * n_envs = {n_steps} * {n_envs} = "
            f"{rollout}: each minibatch is the whole rollout (effective batch_size {rollout}). "
            f"Set batch_size <= {rollout} to say what runs, or raise n_steps",
            stacklevel=4,
        )
    if values.get("normalize_advantage", defaults["normalize_advantage"]) and (batch_size < 2 or rollout < 2):
        raise ConfigError(
            f"{where}: `batch_size` = {batch_size} with n_steps * n_envs = {rollout}: advantage normalization needs at least "
            "2 samples per minibatch (a std of one sample is NaN). Raise batch_size or set normalize_advantage: false"
        )


def _number(key: str, value: Any, where: str, spec: Spec) -> float:
    if isinstance(value, str) and _is_number(value):
        value = float(value)  # PyYAML reads 3e-4 (no dot) as a string
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: `{key}` = {value!r} is not a number. Expected {spec.doc}, {spec.range_text()}")
    return float(value)


def _check_range(key: str, number: float, spec: Spec, where: str) -> None:
    low_ok = spec.low is None or (number > spec.low if spec.low_open else number >= spec.low)
    high_ok = spec.high is None or (number < spec.high if spec.high_open else number <= spec.high)
    if math.isnan(number) or not (low_ok and high_ok):
        raise ConfigError(f"{where}: `{key}` = {number:g} is out of range: must be {spec.range_text()} ({spec.doc})")


def _check(key: str, spec: Spec, value: Any, where: str) -> Any:
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"{where}: `{key}` must not be null. Expected {spec.doc}")
    return VALIDATORS[spec.kind](key, spec, value, where)


def _check_float(key: str, spec: Spec, value: Any, where: str) -> float:
    number = _number(key, value, where, spec)
    _check_range(key, number, spec, where)
    return number


def _check_int(key: str, spec: Spec, value: Any, where: str) -> int:
    number = _number(key, value, where, spec)
    if not number.is_integer():
        raise ConfigError(f"{where}: `{key}` = {value!r} is not a whole number. Expected {spec.doc}, {spec.range_text()}")
    _check_range(key, number, spec, where)
    return int(number)


def _check_bool(key: str, spec: Spec, value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: `{key}` = {value!r} is not true or false ({spec.doc})")
    return value


def _check_choice(key: str, spec: Spec, value: Any, where: str) -> Any:
    if value not in spec.choices:
        raise ConfigError(
            f"{where}: `{key}` = {value!r} is not allowed.{did_you_mean(str(value), spec.choices)} Must be {spec.range_text()}"
        )
    return value


def _check_schedule(key: str, spec: Spec, value: Any, where: str) -> float | str:
    if isinstance(value, str) and value.startswith(ADAPTIVE_PREFIX) and key != "learning_rate":
        raise ConfigError(
            f"{where}: `{key}` = {value!r}: only learning_rate adapts to the measured KL (with a critic_learning_rate "
            "the critic keeps its own). Use a number or lin_<number>"
        )
    for prefix in ("lin_", f"{ADAPTIVE_PREFIX}_"):
        if isinstance(value, str) and value.startswith(prefix):
            number = _number(key, value[len(prefix) :], where, spec)
            _check_range(key, number, spec, where)
            return f"{prefix}{number:g}"
    if value == ADAPTIVE_PREFIX:
        return ADAPTIVE_PREFIX
    if isinstance(value, str) and not _is_number(value):
        forms = "a number, lin_<number> or adaptive_<number>" if key == "learning_rate" else "a number or lin_<number>"
        raise ConfigError(f"{where}: `{key}` = {value!r} is not {forms}. Expected {spec.doc}")
    return _check_float(key, spec, value, where)


def _check_mapping(key: str, spec: Spec, value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: `{key}` = {value!r} is not a mapping ({spec.doc})")
    return dict(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_normalize(_key: str, _spec: Spec, value: Any, where: str) -> dict[str, Any] | bool:
    if value is False:
        return False
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: `normalize` = {value!r}: use true, false or a mapping of {', '.join(VEC_NORMALIZE_KEYS)}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        kind = VEC_NORMALIZE_KEYS.get(key)
        if kind is None:
            raise _unknown_key(where, "normalize.", key, VEC_NORMALIZE_KEYS)
        out[key] = _check(f"normalize.{key}", Spec(kind, f"VecNormalize {key}", low=0, low_open=True), item, where)
    return out


def _check_callback_options(key: str, _spec: Spec, value: Any, where: str) -> dict[str, Any] | bool:
    if value is False:
        return False
    if value is True:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: `{key}` = {value!r}: use a mapping of options, {{}} for the defaults, or false")
    classes = CALLBACK_OPTIONS[key]
    try:
        out = check_mapping(classes, value, prefix=f"{key}.")
        for cls in classes:  # checks across fields (confirm_max_updates >= confirm_updates)
            cls(**{name: item for name, item in out.items() if name in inspect.signature(cls).parameters})
    except OptionError as error:
        raise ConfigError(f"{where}: {error}") from None
    return out


def _check_wrappers(_key: str, _spec: Spec, value: Any, where: str) -> list[list[Any]]:
    items = value if isinstance(value, list) else [value]
    wrappers: list[list[Any]] = []
    for item in items:
        if isinstance(item, str):
            wrappers.append([item, {}])
        elif isinstance(item, Mapping) and len(item) == 1:
            ((path, kwargs),) = item.items()
            if kwargs is not None and not isinstance(kwargs, Mapping):
                raise ConfigError(f"{where}: `env_wrapper` {path}: its arguments must be a mapping, got {kwargs!r}")
            wrappers.append([str(path), dict(kwargs or {})])
        else:
            raise ConfigError(
                f"{where}: `env_wrapper` entry {item!r}: use a dotted class path, or a one-key mapping "
                "{'package.module.Wrapper': {arg: value}}"
            )
    return wrappers


def _check_policy_kwargs(_key: str, _spec: Spec, value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where}: `policy_kwargs` = {value!r} is not a mapping. Write e.g. policy_kwargs: {{net_arch: [64, 64]}}"
        )
    out: dict[str, Any] = {}
    for key, item in value.items():
        expected = POLICY_KWARGS.get(key)
        if expected is None:
            raise _unknown_key(where, "policy_kwargs.", key, POLICY_KWARGS)
        bad = ConfigError(f"{where}: `policy_kwargs.{key}` = {item!r}: expected {expected}")
        if key == "net_arch":
            out[key] = _check_net_arch(item, bad)
        elif key in ("activation_fn", "optimizer_class"):
            table: Mapping[str, type] = ACTIVATIONS if key == "activation_fn" else OPTIMIZERS
            name = _class_name(item, table)
            if name is None:
                raise ConfigError(f"{bad}.{did_you_mean(str(item).lower(), table)}")
            out[key] = name
        elif key in ("lstm_hidden_size", "n_lstm_layers"):
            if not isinstance(item, int) or isinstance(item, bool) or item < 1:
                raise bad
            out[key] = item
        elif key == "log_std_init":
            out[key] = _number(f"policy_kwargs.{key}", item, where, Spec("float", expected))
        elif key == "optimizer_kwargs":
            if not isinstance(item, Mapping):
                raise bad
            out[key] = {str(k): float(v) if _is_number(str(v)) and isinstance(v, str) else v for k, v in item.items()}
        else:
            if not isinstance(item, bool):
                raise bad
            out[key] = item
    return out


def _check_net_arch(item: Any, bad: ConfigError) -> Any:
    # The zoo's older form [dict(pi=[...], vf=[...])] is SB3 < 1.8's; SB3 2.x takes the dict itself.
    if isinstance(item, list) and len(item) == 1 and isinstance(item[0], Mapping):
        item = item[0]
    if isinstance(item, Mapping):
        if set(item) != {"pi", "vf"}:
            raise bad
        return {k: _check_layers(item[k], bad) for k in ("pi", "vf")}
    return _check_layers(item, bad)


def _check_layers(item: Any, bad: ConfigError) -> list[int]:
    if not isinstance(item, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in item):
        raise bad
    return list(item)


def _class_name(item: Any, table: Mapping[str, type]) -> str | None:
    if not isinstance(item, str):
        return None
    name = item.rsplit(".", 1)[-1]
    by_class = {cls.__name__.lower(): key for key, cls in table.items()}
    return name.lower() if name.lower() in table else by_class.get(name.lower())


def _build_schedule(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("lin_"):
        # rl-zoo's linear_schedule: progress_remaining * initial value, from 1 down to 0
        return LinearSchedule(float(value[4:]), 0.0, 1.0)
    if isinstance(value, str) and value.startswith(ADAPTIVE_PREFIX):
        return AdaptiveLearningRate(*_adaptive_initial(value), **_adaptive_settings(values))
    return value


def _adaptive_initial(value: str) -> tuple[float] | tuple[()]:
    """``adaptive`` -> () (the class's default start), ``adaptive_1e-3`` -> (0.001,)"""
    return (float(value[len(ADAPTIVE_PREFIX) + 1 :]),) if value != ADAPTIVE_PREFIX else ()


def _adaptive_settings(values: Mapping[str, Any]) -> dict[str, float]:
    return {field: float(values[key]) for key, field in ADAPTIVE_KEYS.items() if key in values}


def _check_adaptive(values: Mapping[str, Any], where: str) -> None:
    algo = values.get("algo", "safe_ppo")
    rate = values.get("learning_rate", algorithm_defaults(algo)["learning_rate"])
    adaptive = isinstance(rate, str) and rate.startswith(ADAPTIVE_PREFIX)
    settings = [key for key in ADAPTIVE_KEYS if key in values]
    if settings and not adaptive:
        raise ConfigError(
            f"{where}: `{settings[0]}` sets the adaptive learning rate but `learning_rate` = {rate!r} is not adaptive. "
            "Set learning_rate: adaptive_<initial rate> (e.g. adaptive_3e-4) or remove it"
        )
    if not adaptive:
        return
    if not algo.startswith("safe_"):
        raise ConfigError(
            f"{where}: `learning_rate` = {rate!r} needs an sb3-safe algorithm (it adapts after each update); "
            f"algo is {algo}. Set algo: safe_{algo} or a number"
        )
    try:
        AdaptiveLearningRate(*_adaptive_initial(rate), **_adaptive_settings(values))
    except ValueError as error:
        raise ConfigError(f"{where}: `learning_rate` = {rate!r}: {error}") from None


def _build_policy_kwargs(value: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = dict(value)
    if "activation_fn" in kwargs:
        kwargs["activation_fn"] = ACTIVATIONS[kwargs["activation_fn"]]
    if "optimizer_class" in kwargs:
        kwargs["optimizer_class"] = OPTIMIZERS[kwargs["optimizer_class"]]
    return kwargs


Validator = Callable[[str, Spec, Any, str], Any]

#: How each :attr:`Spec.kind` is checked: ``validator(key, spec, value, where) -> canonical value``.
VALIDATORS: dict[str, Validator] = {
    "float": _check_float,
    "int": _check_int,
    "bool": _check_bool,
    "choice": _check_choice,
    "schedule": _check_schedule,
    "mapping": _check_mapping,
    "normalize": _check_normalize,
    "wrappers": _check_wrappers,
    "policy_kwargs": _check_policy_kwargs,
    "health": _check_callback_options,
    "rollback": _check_callback_options,
}

_unchecked = sorted({spec.kind for spec in SCHEMA.values()} - set(VALIDATORS))
if _unchecked:  # a programming error: fail at import, not on the first profile that uses the key
    raise TypeError(f"profile keys of kind {_unchecked} have no validator in sb3_safe.config.VALIDATORS")
