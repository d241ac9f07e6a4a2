"""
The algorithms a profile can name (``algo:``), with what each can do: one table read everywhere
instead of tests on their names. Nothing here imports torch: the classes load when first used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sb3_safe.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

__all__ = ["ALGORITHMS", "DEFAULT_ALGO", "KL_STOPS", "Algorithm", "algorithm", "algorithm_of"]

#: SafePPO's KL early-stopping rules (``kl_stop``): stop before the minibatch that would pass
#: ``1.5 * target_kl`` (SB3's rule), or after the epoch whose mean approx KL passes ``target_kl``.
KL_STOPS = ("minibatch", "epoch")


@dataclass(frozen=True)
class Algorithm:
    """
    One ``algo:`` value.

    :param name: The profile's name for it
    :param class_path: ``module.Class``, imported on first use
    :param safe: An sb3-safe class (SafePPO's options, the adaptive learning rate)
    :param recurrent: Takes LSTM policies (``*LstmPolicy``)
    :param masked: Acts with invalid-action masks (discrete actions, no gSDE)
    :param multiagent: Trains shared-parameter teams (``pettingzoo:`` and ``vmas:`` environments)
    :param defaults: The constructor's defaults for the keys profile checks read, so that reading a
        profile does not import the class (a test compares them with its signature)
    """

    name: str
    class_path: str
    safe: bool
    recurrent: bool = False
    masked: bool = False
    multiagent: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cls(self) -> type[OnPolicyAlgorithm]:
        """The algorithm class (imports it)."""
        module, _, name = self.class_path.rpartition(".")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]

    @property
    def safe_variant(self) -> str:
        """:return: The sb3-safe algorithm with this one's policy and rollouts (itself when safe)"""
        return self.name if self.safe else f"safe_{self.name}"


_PPO = {"learning_rate": 3e-4, "n_steps": 2048, "batch_size": 64, "normalize_advantage": True}
_RECURRENT = {"learning_rate": 3e-4, "n_steps": 128, "batch_size": 128, "normalize_advantage": True}

#: Every algorithm by its ``algo:`` name.
ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("safe_ppo", "sb3_safe.ppo.SafePPO", safe=True, multiagent=True, defaults=_PPO),
        Algorithm("ppo", "stable_baselines3.PPO", safe=False, multiagent=True, defaults=_PPO),
        Algorithm("safe_recurrent_ppo", "sb3_safe.contrib.SafeRecurrentPPO", safe=True, recurrent=True, defaults=_RECURRENT),
        Algorithm("recurrent_ppo", "sb3_contrib.RecurrentPPO", safe=False, recurrent=True, defaults=_RECURRENT),
        Algorithm("safe_maskable_ppo", "sb3_safe.contrib.SafeMaskablePPO", safe=True, masked=True, defaults=_PPO),
        Algorithm("maskable_ppo", "sb3_contrib.MaskablePPO", safe=False, masked=True, defaults=_PPO),
    )
}
#: The algorithm of a profile that names none.
DEFAULT_ALGO = "safe_ppo"


def algorithm(name: str) -> Algorithm:
    """
    :param name: An ``algo:`` value
    :return: Its entry
    :raises ConfigError: When there is no such algorithm
    """
    found = ALGORITHMS.get(name)
    if found is None:
        raise ConfigError(f"unknown algo {name!r}.{did_you_mean(name, ALGORITHMS)} Use one of {', '.join(ALGORITHMS)}")
    return found


def algorithm_of(values: Mapping[str, Any]) -> Algorithm:
    """:return: The algorithm a profile block names (:data:`DEFAULT_ALGO` when it names none)"""
    return algorithm(str(values.get("algo", DEFAULT_ALGO)))
