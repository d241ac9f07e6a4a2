"""Every SafePPO option away from its default: the keyword arguments the algorithm tests share."""

from __future__ import annotations

from typing import Any

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
