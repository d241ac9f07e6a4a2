"""
Snapshots: everything a rollback restores, as plain data, with functions to take, restore, write and read them.

A snapshot holds deep copies of the policy's ``state_dict`` (value-normalizer statistics
included), the optimizer's state, the VecNormalize statistics and an adaptive learning
rate's state, in memory. Restoring one puts every tensor back bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_safe.errors import CheckpointError
from sb3_safe.health import HealthHistory, Thresholds
from sb3_safe.runs import atomic_write
from sb3_safe.schedules import adaptive_rate_of

__all__ = ["Snapshot", "read_snapshot", "restore_snapshot", "take_snapshot", "write_snapshot"]

# The VecNormalize attributes that hold its running statistics.
_VEC_NORMALIZE_STATS = ("obs_rms", "ret_rms")


@dataclass(frozen=True)
class Snapshot:
    """
    A training state to go back to.

    :param policy: The policy's ``state_dict``, cloned
    :param optimizer: The optimizer's ``state_dict``, deep-copied (moments and learning rates)
    :param vec_normalize: VecNormalize's running statistics by attribute name, or ``None`` without VecNormalize
    :param timesteps: The model's ``num_timesteps`` when it was taken
    :param health: The health monitor's history then (a :class:`~sb3_safe.health.HealthHistory` copy), if any
    :param learning_rate: The state of an :class:`~sb3_safe.schedules.AdaptiveLearningRate` (its rate moves
        with training), or ``None`` for a number or schedule
    """

    policy: dict[str, th.Tensor]
    optimizer: dict[str, Any]
    vec_normalize: dict[str, Any] | None
    timesteps: int
    health: HealthHistory | None = None
    learning_rate: dict[str, float] | None = None


def take_snapshot(model: BaseAlgorithm, health: HealthHistory | None = None) -> Snapshot:
    """
    :param model: An on-policy SB3 model (its policy has an ``optimizer``)
    :param health: The health monitor's history, copied into the snapshot
    :return: Deep copies of the model's trainable state and its VecNormalize statistics
    """
    policy = model.policy
    venv = model.get_vec_normalize_env()
    adaptive = adaptive_rate_of(model)
    return Snapshot(
        policy={key: value.detach().clone() for key, value in policy.state_dict().items()},
        optimizer=_clone(policy.optimizer.state_dict()),
        vec_normalize=None
        if venv is None
        else {name: copy.deepcopy(getattr(venv, name)) for name in _VEC_NORMALIZE_STATS if hasattr(venv, name)},
        timesteps=int(model.num_timesteps),
        health=None if health is None else health.copy(),
        learning_rate=None if adaptive is None else adaptive.state(),
    )


def _clone(tree: Any) -> Any:
    """A deep copy of nested dicts and lists of tensors and plain values, without ``copy.deepcopy``'s
    bookkeeping (a snapshot is taken after every update; with 8-step rollouts that cost showed)."""
    if isinstance(tree, th.Tensor):
        return tree.detach().clone()
    if isinstance(tree, dict):
        return {key: _clone(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_clone(value) for value in tree)
    return copy.copy(tree)


def restore_snapshot(model: BaseAlgorithm, snapshot: Snapshot) -> None:
    """
    Put a snapshot back, bit for bit: tensors are copied into the existing parameters, so
    the optimizer keeps pointing at them. VecNormalize's running discounted returns are reset.

    :param model: The model the snapshot was taken from
    :param snapshot: The snapshot
    """
    policy = model.policy
    policy.load_state_dict(snapshot.policy)
    policy.optimizer.load_state_dict(_clone(snapshot.optimizer))
    venv = model.get_vec_normalize_env()
    if venv is not None and snapshot.vec_normalize is not None:
        for name, value in snapshot.vec_normalize.items():
            setattr(venv, name, copy.deepcopy(value))
        venv.returns = np.zeros_like(venv.returns)
    adaptive = adaptive_rate_of(model)
    if adaptive is not None and snapshot.learning_rate is not None:
        adaptive.load_state(snapshot.learning_rate)


def write_snapshot(snapshot: Snapshot, path: Path) -> None:
    """Write a snapshot to ``path`` atomically (``torch.save`` of its fields)."""
    fields = {
        "policy": snapshot.policy,
        "optimizer": snapshot.optimizer,
        "vec_normalize": snapshot.vec_normalize,
        "timesteps": snapshot.timesteps,
        "health": None if snapshot.health is None else snapshot.health.state_dict(),
        "thresholds": None if snapshot.health is None else dataclasses.asdict(snapshot.health.thresholds),
        "learning_rate": snapshot.learning_rate,
    }
    atomic_write(path, lambda tmp: th.save(fields, tmp))


def read_snapshot(path: Path) -> Snapshot:
    """
    :param path: A file written by :func:`write_snapshot`
    :return: The snapshot
    :raises CheckpointError: When the file is missing or damaged
    """
    try:
        # VecNormalize's RunningMeanStd objects are pickled: only read snapshots this project wrote.
        fields = th.load(path, weights_only=False)
        health, thresholds = fields.pop("health"), fields.pop("thresholds")
        fields.setdefault("learning_rate", None)  # snapshots written before the adaptive rate existed
        history = None
        if health is not None:
            history = HealthHistory(Thresholds(**thresholds))
            history.load_state_dict(health)
        return Snapshot(**fields, health=history)
    except FileNotFoundError:
        raise CheckpointError(f"snapshot {str(path)!r} does not exist") from None
    except Exception as error:  # pickle and torch raise many types on a damaged file
        raise CheckpointError(f"snapshot {str(path)!r} cannot be read (damaged or not a snapshot): {error}") from None
