"""
Profiles: per-environment YAML blocks (rl-baselines3-zoo's format), validated into a :class:`TrainConfig`.

Files are read with ``yaml.safe_load`` and nothing in them is evaluated. Every key is
checked against :data:`SCHEMA`: an unknown key, a wrong type or an out-of-range value
raises a one-line :class:`~sb3_safe.errors.ConfigError` naming the key, the value, what is
allowed and a fix. Reading and checking a profile imports no torch.

The package, one job per module:

- :mod:`~sb3_safe.config.algorithms`: the algorithms a profile can name and what each can do;
- :mod:`~sb3_safe.config.schema`: what every key accepts;
- :mod:`~sb3_safe.config.checks`: checking a block, key by key and across keys;
- :mod:`~sb3_safe.config.profiles`: finding, reading, merging and overriding profiles;
- :mod:`~sb3_safe.config.train_config`: :class:`TrainConfig` and what it builds.
"""

from sb3_safe.config.algorithms import ALGORITHMS, DEFAULT_ALGO, KL_STOPS, Algorithm, algorithm, algorithm_of
from sb3_safe.config.checks import VALIDATORS, Validator, validate
from sb3_safe.config.profiles import BUNDLED_HYPERPARAMS, PROFILE_DIRS, find_profile, load_config, parse_overrides
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
from sb3_safe.config.train_config import TrainConfig, algorithm_defaults

__all__ = [
    "ACTIVATIONS",
    "ADAPTIVE_KEYS",
    "ADAPTIVE_PREFIX",
    "ALGORITHMS",
    "BUNDLED_HYPERPARAMS",
    "CALLBACK_OPTIONS",
    "DEFAULT_ALGO",
    "KL_STOPS",
    "OPTIMIZERS",
    "POLICY_KWARGS",
    "PROFILE_DIRS",
    "SCHEMA",
    "VALIDATORS",
    "VEC_NORMALIZE_KEYS",
    "ZOO_UNSUPPORTED",
    "Algorithm",
    "Spec",
    "TrainConfig",
    "Validator",
    "algorithm",
    "algorithm_defaults",
    "algorithm_of",
    "find_profile",
    "load_config",
    "parse_overrides",
    "validate",
]
