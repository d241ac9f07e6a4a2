"""
Checking a profile block: each key by its kind (:data:`VALIDATORS`), then the rules between keys
(algorithm and policy, rollout and minibatch, multi-agent options, the adaptive learning rate).

Every problem is a one-line :class:`~sb3_safe.errors.ConfigError` naming the key, the value,
what is allowed and a fix. Numbers are checked by :class:`sb3_safe.options.Kind`, the one number
checker of the package.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sb3_safe.config.algorithms import ALGORITHMS, algorithm_of
from sb3_safe.config.schema import (
    ACTIVATIONS,
    ADAPTIVE_KEYS,
    ADAPTIVE_PREFIX,
    CALLBACK_OPTIONS,
    OPTIMIZERS,
    POLICY_KWARGS,
    SCHEMA,
    VEC_NORMALIZE_KEYS,
    ZOO_UNSUPPORTED,
    Spec,
)
from sb3_safe.env_ids import is_multiagent, is_vmas
from sb3_safe.errors import ConfigError, did_you_mean, unknown_key
from sb3_safe.options import OptionError, check_mapping, parse_number
from sb3_safe.schedules import AdaptiveLearningRate

__all__ = ["VALIDATORS", "Validator", "adaptive_initial", "adaptive_settings", "validate"]


def adaptive_initial(value: str) -> tuple[float] | tuple[()]:
    """``adaptive`` -> () (the class's default start), ``adaptive_1e-3`` -> (0.001,)"""
    return (float(value[len(ADAPTIVE_PREFIX) + 1 :]),) if value != ADAPTIVE_PREFIX else ()


def adaptive_settings(values: Mapping[str, Any]) -> dict[str, float]:
    """:return: The block's adaptive-rate keys as :class:`~sb3_safe.schedules.AdaptiveLearningRate` arguments"""
    return {field: float(values[key]) for key, field in ADAPTIVE_KEYS.items() if key in values}


def check_keys(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    """
    Check each key of a block on its own (known, supported, a value of its kind), as :func:`validate` does first.

    :param block: The keys and values
    :param where: What names their source in an error (a profile and its block, the command line)
    :return: The checked values
    """
    values: dict[str, Any] = {}
    for key, value in block.items():
        if key in ZOO_UNSUPPORTED:
            raise ConfigError(
                f"{where}: `{key}` (an rl-baselines3-zoo key) is not supported: {ZOO_UNSUPPORTED[key]}. Remove it"
            )
        spec = SCHEMA.get(key)
        if spec is None:
            raise ConfigError(f"{where}: {unknown_key(key, SCHEMA)}")
        values[key] = _check(key, spec, value, where)
    return values


def validate(block: Mapping[str, Any], source: Path | str, env_id: str) -> dict[str, Any]:
    where = f"{source} [{env_id}]"
    values = check_keys(block, where)
    if "algo" not in values and "Lstm" in str(values.get("policy", "")):
        values["algo"] = "recurrent_ppo"  # rl-zoo's ppo_lstm.yml names no algorithm: its file does
    algo = algorithm_of(values)
    if not algo.safe:
        safe_keys = [key for key in values if SCHEMA[key].safe_only]
        if safe_keys:
            raise ConfigError(
                f"{where}: `{safe_keys[0]}` is an sb3-safe option but `algo` is {algo.name}. "
                f"Remove it or set algo: {algo.safe_variant}"
            )
    if algo.masked and values.get("use_sde"):
        raise ConfigError(f"{where}: `use_sde` = true but algo: {algo.name} has no gSDE (MaskablePPO). Remove it")
    _check_consistency(values, where, env_id)
    _check_multiagent(values, where, env_id)
    _check_adaptive(values, where)
    return values


def _check_multiagent(values: Mapping[str, Any], where: str, env_id: str) -> None:
    keys = [key for key in ("centralized_critic", "agent_id", "pettingzoo_adapter") if values.get(key)]
    if not is_multiagent(env_id):
        if keys:
            raise ConfigError(
                f"{where}: `{keys[0]}` is for multi-agent environments; {env_id!r} is not one. "
                "Use --env pettingzoo:<module> (e.g. pettingzoo:mpe2.simple_spread_v3), vmas:<scenario>, or remove it"
            )
        return
    if is_vmas(env_id) and values.get("pettingzoo_adapter"):
        raise ConfigError(f"{where}: `pettingzoo_adapter` is for PettingZoo environments; {env_id!r} is VMAS. Remove it")
    algo = algorithm_of(values)
    if not algo.multiagent:
        supported = ", ".join(a.name for a in ALGORITHMS.values() if a.multiagent)
        raise ConfigError(
            f"{where}: algo: {algo.name} is not supported on multi-agent environments (shared-parameter PPO only). "
            f"Use algo: {supported}"
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


def _check_consistency(values: Mapping[str, Any], where: str, env_id: str) -> None:
    algo = algorithm_of(values)
    defaults = algo.defaults
    policy = values.get("policy", "MlpPolicy")
    recurrent = algo.recurrent
    if recurrent != ("Lstm" in policy):
        wanted = (
            "MlpLstmPolicy (or CnnLstmPolicy, MultiInputLstmPolicy)"
            if recurrent
            else "MlpPolicy (or CnnPolicy, MultiInputPolicy)"
        )
        raise ConfigError(f"{where}: `policy` = {policy!r} does not go with algo: {algo.name}. Use policy: {wanted}")
    lstm_keys = sorted(
        {"lstm_hidden_size", "n_lstm_layers", "shared_lstm", "enable_critic_lstm"} & set(values.get("policy_kwargs", {}))
    )
    if lstm_keys and not recurrent:
        raise ConfigError(
            f"{where}: `policy_kwargs.{lstm_keys[0]}` is for recurrent policies; algo: {algo.name} has none. "
            "Use algo: safe_recurrent_ppo with policy: MlpLstmPolicy, or remove it"
        )
    n_envs = values.get("n_envs", 1)
    n_steps = values.get("n_steps", defaults["n_steps"])
    batch_size = values.get("batch_size", defaults["batch_size"])
    rollout = n_steps * n_envs
    # (on PettingZoo environments a rollout has a slot per agent: it is larger than n_steps * n_envs)
    if batch_size > rollout and not is_multiagent(env_id):
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


def _check(key: str, spec: Spec, value: Any, where: str) -> Any:
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"{where}: `{key}` must not be null. Expected {spec.doc}")
    return VALIDATORS[spec.kind](key, spec, value, where)


def _check_number(key: str, spec: Spec, value: Any, where: str, integer: bool = False) -> float:
    try:
        return spec.number_kind(integer).check(key, value)
    except OptionError as error:
        raise ConfigError(f"{where}: {error}") from None


def _check_float(key: str, spec: Spec, value: Any, where: str) -> float:
    return float(_check_number(key, spec, value, where))


def _check_int(key: str, spec: Spec, value: Any, where: str) -> int:
    return int(_check_number(key, spec, value, where, integer=True))


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
            return f"{prefix}{_check_float(key, spec, value[len(prefix) :], where):g}"
    if value == ADAPTIVE_PREFIX:
        return ADAPTIVE_PREFIX
    if isinstance(value, str) and parse_number(value) is None:
        forms = "a number, lin_<number> or adaptive_<number>" if key == "learning_rate" else "a number or lin_<number>"
        raise ConfigError(f"{where}: `{key}` = {value!r} is not {forms}. Expected {spec.doc}")
    return _check_float(key, spec, value, where)


def _check_mapping(key: str, spec: Spec, value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: `{key}` = {value!r} is not a mapping ({spec.doc})")
    return dict(value)


def _check_normalize(_key: str, _spec: Spec, value: Any, where: str) -> dict[str, Any] | bool:
    if value is False:
        return False
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: `normalize` = {value!r}: use true, false or a mapping of {', '.join(VEC_NORMALIZE_KEYS)}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        kind = VEC_NORMALIZE_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{where}: {unknown_key(key, VEC_NORMALIZE_KEYS, 'normalize.')}")
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
            raise ConfigError(f"{where}: {unknown_key(key, POLICY_KWARGS, 'policy_kwargs.')}")
        bad = ConfigError(f"{where}: `policy_kwargs.{key}` = {item!r}: expected {expected}")
        if key == "net_arch":
            out[key] = _check_net_arch(item, bad)
        elif key in ("activation_fn", "optimizer_class"):
            table = ACTIVATIONS if key == "activation_fn" else OPTIMIZERS
            name = _class_name(item, table)
            if name is None:
                raise ConfigError(f"{bad}.{did_you_mean(str(item).lower(), table)}")
            out[key] = name
        elif key in ("lstm_hidden_size", "n_lstm_layers"):
            if not isinstance(item, int) or isinstance(item, bool) or item < 1:
                raise bad
            out[key] = item
        elif key == "log_std_init":
            out[key] = _check_float(f"policy_kwargs.{key}", Spec("float", expected), item, where)
        elif key == "optimizer_kwargs":
            if not isinstance(item, Mapping):
                raise bad
            out[key] = {
                str(k): number if isinstance(v, str) and (number := parse_number(v)) is not None else v
                for k, v in item.items()
            }
        else:
            if not isinstance(item, bool):
                raise bad
            out[key] = item
    return out


def _yaml_number(value: Any) -> Any:
    """A string that reads as a number (YAML's 1e-5) as that number; anything else unchanged."""
    number = parse_number(value) if isinstance(value, str) else None
    return value if number is None else number


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


def _class_name(item: Any, table: Mapping[str, str]) -> str | None:
    if not isinstance(item, str):
        return None
    name = item.rsplit(".", 1)[-1]
    by_class = {cls_name.lower(): key for key, cls_name in table.items()}
    return name.lower() if name.lower() in table else by_class.get(name.lower())


def _check_adaptive(values: Mapping[str, Any], where: str) -> None:
    algo = algorithm_of(values)
    rate = values.get("learning_rate", algo.defaults["learning_rate"])
    adaptive = isinstance(rate, str) and rate.startswith(ADAPTIVE_PREFIX)
    settings = [key for key in ADAPTIVE_KEYS if key in values]
    if settings and not adaptive:
        raise ConfigError(
            f"{where}: `{settings[0]}` sets the adaptive learning rate but `learning_rate` = {rate!r} is not adaptive. "
            "Set learning_rate: adaptive_<initial rate> (e.g. adaptive_3e-4) or remove it"
        )
    if not adaptive:
        return
    if not algo.safe:
        raise ConfigError(
            f"{where}: `learning_rate` = {rate!r} needs an sb3-safe algorithm (it adapts after each update); "
            f"algo is {algo.name}. Set algo: {algo.safe_variant} or a number"
        )
    try:
        AdaptiveLearningRate(*adaptive_initial(rate), **adaptive_settings(values))
    except ValueError as error:
        raise ConfigError(f"{where}: `learning_rate` = {rate!r}: {error}") from None


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
