"""
The search space: a YAML mapping of profile keys to distributions, sampled into profile overrides.

Format (``hyperparams/spaces/safe_ppo.yml`` is the default)::

    learning_rate: {type: loguniform, low: 1e-5, high: 2e-3}
    gamma: {type: one_minus_loguniform, low: 1e-4, high: 0.03}    # gamma = 1 - x
    n_epochs: {type: categorical, choices: [3, 5, 10, 20]}
    policy_kwargs.net_arch: {type: categorical, choices: {small: [64], medium: [64, 64]}}
    learning_rate: {type: loguniform, low: 1e-4, high: 3e-3, prefix: adaptive_}   # adaptive_<number>
    limits: {max_grad_steps_per_env_step: 0.3}

Keys are profile keys (dotted for ``policy_kwargs``), checked against the profile schema.
Categorical choices may be a mapping from a name (what Optuna stores) to any YAML value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from sb3_safe.config import BUNDLED_HYPERPARAMS, POLICY_KWARGS, SCHEMA
from sb3_safe.config.algorithms import DEFAULT_ALGO
from sb3_safe.env_ids import is_vmas
from sb3_safe.errors import ConfigError, did_you_mean
from sb3_safe.options import KINDS, OptionError  # the kinds of option values (one number checker)

__all__ = ["AT_SCALE_SPACE", "DEFAULT_SPACE", "Param", "SearchSpace", "default_space", "load_space"]

#: The search space shipped with sb3-safe (``hyperparams/spaces/safe_ppo.yml`` in the repository).
DEFAULT_SPACE = BUNDLED_HYPERPARAMS / "spaces" / "safe_ppo.yml"


#: The shipped space for SafePPO on a batched simulator: the block's update shape stays, rates and noise are searched.
AT_SCALE_SPACE = BUNDLED_HYPERPARAMS / "spaces" / "safe_ppo_at_scale.yml"


def default_space(algo: str = DEFAULT_ALGO, env_id: str = "") -> Path:
    """
    :param algo: The profile's algorithm
    :param env_id: The environment tuned on
    :return: The shipped space: ``safe_ppo_at_scale.yml`` for SafePPO on a VMAS scenario (hundreds of copies in one
        call, where the block's update shape stays), else ``spaces/<algo>.yml`` (``safe_ppo.yml`` when it has none)
    """
    if algo == DEFAULT_ALGO and is_vmas(env_id):
        return AT_SCALE_SPACE
    own = BUNDLED_HYPERPARAMS / "spaces" / f"{algo}.yml"
    return own if own.is_file() else DEFAULT_SPACE


DISTRIBUTIONS = ("loguniform", "uniform", "int", "categorical", "one_minus_loguniform")
#: ``prefix`` of a schedule key's number: none, rl-zoo's linear schedule, the KL-adaptive rate
PREFIXES = ("", "lin_", "adaptive_")
LIMITS = {"max_grad_steps_per_env_step": "gradient steps per environment step, n_epochs / batch_size"}


@dataclass(frozen=True)
class Param:
    """One searched key."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    #: For categorical: Optuna's stored choice -> the profile value
    choices: tuple[tuple[Any, Any], ...] = ()
    #: For a schedule key: the sampled number becomes ``<prefix><number>`` (``adaptive_``, ``lin_``)
    prefix: str = ""

    def sample(self, trial: optuna.Trial) -> Any:
        return self._profile_value(self._suggest(trial))

    def _profile_value(self, number: Any) -> Any:
        return f"{self.prefix}{number!r}" if self.prefix else number

    def _suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "categorical":
            names = [name for name, _ in self.choices]
            picked = trial.suggest_categorical(self.key, names)
            return dict(self.choices)[picked]
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        if self.kind == "one_minus_loguniform":
            return 1.0 - trial.suggest_float(f"one_minus_{self.key}", self.low, self.high, log=True)
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "loguniform")

    def value_of(self, params: Mapping[str, Any]) -> Any:
        """The profile value behind a finished trial's stored params."""
        if self.kind == "one_minus_loguniform":
            return 1.0 - params[f"one_minus_{self.key}"]
        if self.kind == "categorical":
            return dict(self.choices)[params[self.key]]
        return self._profile_value(params[self.key])


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    max_grad_steps_per_env_step: float | None = 0.3
    source: Path | None = None

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """:return: Profile overrides (nested for dotted keys)"""
        return _nest({param.key: param.sample(trial) for param in self.params})

    def overrides_of(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """:return: The profile overrides a finished trial used"""
        return _nest({param.key: param.value_of(params) for param in self.params})


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        target = out
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return out


def _number(where: str, name: str, value: Any) -> float:
    """A finite number, checked by the package's one number checker (:class:`sb3_safe.options.Kind`)."""
    try:
        return float(KINDS["any finite"].check(name, value))
    except OptionError as error:
        raise ConfigError(f"{where}: {error}") from None


def _param(source: Path, key: str, spec: Any) -> Param:
    where = f"{source} [{key}]"
    head, _, sub = key.partition(".")
    if (
        head not in SCHEMA
        or (sub and (head != "policy_kwargs" or sub not in POLICY_KWARGS))
        or (head == "policy_kwargs" and not sub)
    ):
        allowed = [k for k in SCHEMA if k != "policy_kwargs"] + [f"policy_kwargs.{k}" for k in POLICY_KWARGS]
        raise ConfigError(
            f"{source}: `{key}` is not a parameter of SafePPO/PPO profiles.{did_you_mean(key, allowed)} "
            "Use a profile key (policy_kwargs.<name> for policy arguments)"
        )
    if not isinstance(spec, Mapping) or spec.get("type") not in DISTRIBUTIONS:
        kind = spec.get("type") if isinstance(spec, Mapping) else spec
        raise ConfigError(
            f"{where}: distribution type {kind!r} is not known.{did_you_mean(str(kind), DISTRIBUTIONS)} "
            f"Use {{type: one of {', '.join(DISTRIBUTIONS)}, ...}}"
        )
    kind = spec["type"]
    expected = {"categorical": {"type", "choices"}}.get(kind, {"type", "low", "high"} | ({"log"} if kind == "int" else set()))
    if kind in ("loguniform", "uniform") and SCHEMA[head].kind == "schedule":
        expected = expected | {"prefix"}
    unknown = set(spec) - expected
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(
            f"{where}: unknown field `{name}`.{did_you_mean(name, expected)} Fields of {kind}: {', '.join(sorted(expected))}"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        pairs: list[tuple[Any, Any]]
        if isinstance(choices, Mapping):
            pairs = [(str(name), value) for name, value in choices.items()]
        elif isinstance(choices, list):
            pairs = [(value, value) for value in choices]
            if any(not (value is None or isinstance(value, (bool, int, float, str))) for value in choices):
                raise ConfigError(
                    f"{where}: choices that are lists or mappings need names: choices: {{small: [64], big: [256]}}"
                )
        else:
            raise ConfigError(f"{where}: `choices` must be a non-empty list or a mapping of names to values")
        if not pairs:
            raise ConfigError(f"{where}: `choices` is empty")
        return Param(key, kind, choices=tuple(pairs))
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: {kind} needs `low` and `high`")
    low, high = _number(where, "low", spec["low"]), _number(where, "high", spec["high"])
    if not low < high:
        raise ConfigError(f"{where}: `low` = {low:g} must be below `high` = {high:g}")
    if kind in ("loguniform", "one_minus_loguniform") and low <= 0:
        raise ConfigError(f"{where}: a log scale needs `low` > 0, got {low:g}")
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise ConfigError(f"{where}: int bounds must be whole numbers, got {low:g} and {high:g}")
    prefix = spec.get("prefix", "")
    if prefix not in PREFIXES:
        raise ConfigError(
            f"{where}: `prefix` = {prefix!r} is not known.{did_you_mean(str(prefix), PREFIXES)} "
            f"Use one of {', '.join(p for p in PREFIXES if p)} (adaptive_: the KL-adaptive rate starting at the number)"
        )
    return Param(key, kind, low, high, log=bool(spec.get("log", False)), prefix=prefix)


def load_space(path: Path | None = None, algo: str = DEFAULT_ALGO, env_id: str = "") -> SearchSpace:
    """
    :param path: A search-space YAML file (default: the shipped space for ``algo`` and ``env_id``,
        :func:`default_space`)
    :param algo: The profile's algorithm
    :param env_id: The environment tuned on
    :return: The validated space
    """
    source = path or default_space(algo, env_id)
    try:
        data = yaml.safe_load(source.read_text())
    except OSError as error:
        raise ConfigError(
            f"search space {str(source)!r} cannot be read: {error.strerror}. Pass an existing YAML file"
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"search space {str(source)!r} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"search space {str(source)!r} must be a mapping of profile keys to distributions")
    limits = data.get("limits") or {}
    if not isinstance(limits, Mapping) or set(limits) - set(LIMITS):
        unknown = sorted(set(limits) - set(LIMITS)) if isinstance(limits, Mapping) else [str(limits)]
        raise ConfigError(
            f"{source} [limits]: unknown limit {unknown[0]!r}.{did_you_mean(unknown[0], LIMITS)} Allowed: {', '.join(LIMITS)}"
        )
    cap = limits.get("max_grad_steps_per_env_step", 0.3)
    params = tuple(_param(source, str(key), spec) for key, spec in data.items() if key != "limits")
    return SearchSpace(params, None if cap is None else _number(str(source), "max_grad_steps_per_env_step", cap), source)
