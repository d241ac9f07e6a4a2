"""
The kinds of environment id a profile or ``--env`` can name, told apart by prefix (no imports:
reading a profile must not load the simulators).

- ``pettingzoo:<module>``: a PettingZoo parallel environment (the module's ``parallel_env``);
- ``vmas:<scenario>``: a scenario of VMAS's batched simulator;
- anything else: a Gymnasium id, possibly ``module:EnvId-v0``.
"""

from __future__ import annotations

__all__ = ["PETTINGZOO_PREFIX", "VMAS_PREFIX", "is_multiagent", "is_pettingzoo", "is_vmas"]

PETTINGZOO_PREFIX = "pettingzoo:"
VMAS_PREFIX = "vmas:"


def is_pettingzoo(env_id: str) -> bool:
    """:return: Whether ``env_id`` names a PettingZoo environment (``pettingzoo:<module>``)"""
    return env_id.startswith(PETTINGZOO_PREFIX)


def is_vmas(env_id: str) -> bool:
    """:return: Whether ``env_id`` names a VMAS scenario (``vmas:<scenario>``)"""
    return env_id.startswith(VMAS_PREFIX)


def is_multiagent(env_id: str) -> bool:
    """:return: Whether ``env_id`` names a multi-agent environment (one VecEnv slot per agent)"""
    return is_pettingzoo(env_id) or is_vmas(env_id)
