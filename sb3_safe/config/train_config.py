"""
:class:`TrainConfig`: a validated profile block, and what it builds (schedules, policy arguments,
the algorithm's constructor keywords). Building imports torch; reading and checking do not.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sb3_safe.config.algorithms import Algorithm, algorithm, algorithm_of
from sb3_safe.config.blocks import canonical_block, merge
from sb3_safe.config.checks import adaptive_initial, adaptive_settings, validate
from sb3_safe.config.schema import ACTIVATIONS, ADAPTIVE_PREFIX, OPTIMIZERS, SCHEMA
from sb3_safe.env_ids import is_multiagent
from sb3_safe.errors import ConfigError
from sb3_safe.schedules import AdaptiveLearningRate

if TYPE_CHECKING:
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
    from stable_baselines3.common.policies import ActorCriticPolicy

__all__ = ["TrainConfig", "algorithm_defaults"]

_GAUSSIAN_KWARGS = ("log_std_init", "full_std", "use_expln", "squash_output")


@dataclass(frozen=True)
class TrainConfig:
    """
    A validated profile block for one environment.

    :param env_id: Gymnasium id, possibly ``module:EnvId-v0``
    :param profile: The profile as given (name or path)
    :param source: The file it was read from
    :param values: Every key of the block, validated and in canonical form (plain YAML data)
    :param blocks: The profile's blocks merged into it, in order (``default``, a family's such as ``vmas:``, the
        environment's own), then the command line's values
    """

    env_id: str
    profile: str
    source: Path
    values: Mapping[str, Any] = field(default_factory=dict)
    blocks: tuple[str, ...] = ()

    @property
    def algo(self) -> str:
        return self.algorithm.name

    @property
    def algorithm(self) -> Algorithm:
        """The algorithm's entry in :data:`~sb3_safe.config.algorithms.ALGORITHMS` (what it can do)."""
        return algorithm_of(self.values)

    @property
    def algorithm_class(self) -> type[OnPolicyAlgorithm]:
        return self.algorithm.cls

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
                if self.algorithm.masked:
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
        return is_multiagent(self.env_id)

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
        merged = merge(dict(self.values), canonical_block(dict(overrides), self.source, self.env_id))
        return replace(self, values=validate(merged, self.source, self.env_id))


@functools.cache
def algorithm_defaults(algo: str) -> Mapping[str, Any]:
    """
    The defaults of the algorithm's constructor for the profile keys, read from its signature
    (and PPO's, for the arguments a subclass passes on as ``**kwargs``): never copied by hand.

    :param algo: A key of :data:`~sb3_safe.config.algorithms.ALGORITHMS` (imports its class, and so torch)
    :return: Profile key -> default
    """
    # Every class of the algorithm's lineage that defines its own constructor, base first: a
    # subclass that passes arguments on as **kwargs does not repeat their defaults.
    classes = [
        cls for cls in algorithm(algo).cls.__mro__ if isinstance(cls, type) and "__init__" in vars(cls) and cls is not object
    ]
    defaults: dict[str, Any] = {"policy": "MlpPolicy"}
    for cls in reversed(classes):
        for name, param in inspect.signature(cls).parameters.items():
            empty = param.default is inspect.Parameter.empty
            if name in SCHEMA and not empty and (param.default is not None or SCHEMA[name].nullable):
                defaults[name] = param.default
    return defaults


def _build_schedule(value: Any, values: Mapping[str, Any]) -> Any:
    from stable_baselines3.common.utils import LinearSchedule

    if isinstance(value, str) and value.startswith("lin_"):
        # rl-zoo's linear_schedule: progress_remaining * initial value, from 1 down to 0
        return LinearSchedule(float(value[4:]), 0.0, 1.0)
    if isinstance(value, str) and value.startswith(ADAPTIVE_PREFIX):
        return AdaptiveLearningRate(*adaptive_initial(value), **adaptive_settings(values))
    return value


def _build_policy_kwargs(value: Mapping[str, Any]) -> dict[str, Any]:
    from torch import nn, optim

    kwargs = dict(value)
    if "activation_fn" in kwargs:
        kwargs["activation_fn"] = getattr(nn, ACTIVATIONS[kwargs["activation_fn"]])
    if "optimizer_class" in kwargs:
        kwargs["optimizer_class"] = getattr(optim, OPTIMIZERS[kwargs["optimizer_class"]])
    return kwargs
