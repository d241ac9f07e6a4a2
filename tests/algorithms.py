"""What the algorithm tests share: every safe option away from its default, and how models are compared."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm

ALL_ON: dict[str, Any] = dict(
    value_loss="blend",
    huber_delta=2.0,
    clip_range_vf=0.2,
    critic_learning_rate=1e-3,
    kl_stop="epoch",
    target_kl=0.02,
    adv_norm_min_std=0.01,
    normalize_value=True,
)


def params(model: BaseAlgorithm) -> dict[str, th.Tensor]:
    """:return: A copy of the policy's ``state_dict``"""
    return {k: v.clone() for k, v in model.policy.state_dict().items()}


def assert_same_parameters(a: dict[str, th.Tensor], b: dict[str, th.Tensor]) -> None:
    """Bit for bit: the same names and ``torch.equal`` tensors."""
    assert a.keys() == b.keys()
    for name in a:
        assert th.equal(a[name], b[name]), name


def predict_values(model: BaseAlgorithm, observations: np.ndarray) -> np.ndarray:
    """:return: The model's value predictions (true scale) for a batch of observations"""
    with th.no_grad():
        obs, _ = model.policy.obs_to_tensor(observations)
        values: np.ndarray = model.policy.predict_values(obs).cpu().numpy().flatten()  # type: ignore[operator]
    return values
