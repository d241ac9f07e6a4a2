"""
The KL-adaptive learning rate: a rate that follows how far each update moves the policy.

SB3's schedules are functions of the training progress only. :class:`AdaptiveLearningRate`
is passed as ``learning_rate`` like any schedule (``SafePPO(learning_rate=AdaptiveLearningRate(3e-4))``,
or ``learning_rate: adaptive`` in a profile); after every update the safe algorithms call
:meth:`AdaptiveLearningRate.update` with the update's approximate KL divergence, and the next
update uses the new rate. This is the ``schedule: adaptive`` of rsl_rl's PPO (legged-robot
trainers), applied once per update rather than per minibatch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["AdaptiveLearningRate", "adapt_learning_rate", "adaptive_rate_of"]


def adapt_learning_rate(
    learning_rate: float,
    kl: float,
    desired_kl: float,
    factor: float = 1.5,
    min_lr: float = 1e-5,
    max_lr: float = 1e-2,
) -> float:
    """
    The rate for the next update, from the approximate KL divergence the last one reached.

    - ``kl > 2 * desired_kl``: divide by ``factor`` (the update moved the policy too far);
    - ``0 < kl < desired_kl / 2``: multiply by ``factor`` (it barely moved);
    - otherwise, keep it; a non-finite ``kl`` (a skipped update) counts as too far.

    The result is clipped to ``[min_lr, max_lr]``. The band is rsl_rl's; the KL is free of
    reward scale, so the rule is too.

    :param learning_rate: The rate the last update used
    :param kl: Its approximate KL divergence (SB3's ``train/approx_kl``)
    :param desired_kl: The KL an update should reach
    :param factor: The multiplicative step, > 1
    :param min_lr: The lowest rate
    :param max_lr: The highest rate
    :return: The next rate
    """
    if not math.isfinite(kl) or kl > 2.0 * desired_kl:
        learning_rate = learning_rate / factor
    elif 0.0 < kl < desired_kl / 2.0:
        learning_rate = learning_rate * factor
    return min(max(learning_rate, min_lr), max_lr)


@dataclass
class AdaptiveLearningRate:
    """
    A learning rate adapted to the measured KL divergence after each update (see
    :func:`adapt_learning_rate` for the rule). Callable like an SB3 schedule; the value does not
    depend on the progress. Saved and loaded with the model (SB3 pickles ``learning_rate``),
    and part of a rollback snapshot.

    With a separate ``critic_learning_rate`` only the actor's group adapts (the KL measures the
    policy's move, not the critic's); the critic keeps its own schedule. Without one, the single
    parameter group follows this rate. A rollback (:class:`sb3_safe.callbacks.RollbackCallback`)
    calls :meth:`back_off`, which lowers the rate and its ceiling together, so the rule cannot
    climb straight back to the rate that broke the run.

    :param initial: The first update's rate (3e-4: SB3's PPO default)
    :param desired_kl: The approximate KL an update should reach (0.01: rsl_rl's default)
    :param factor: Multiplicative step per update, > 1
    :param min_lr: The lowest rate
    :param max_lr: The highest rate
    """

    initial: float = 3e-4
    desired_kl: float = 0.01
    factor: float = 1.5
    min_lr: float = 1e-5
    max_lr: float = 1e-2
    #: The rate the next update uses
    value: float = field(init=False)

    def __post_init__(self) -> None:
        for name in ("initial", "desired_kl", "min_lr", "max_lr"):
            number = getattr(self, name)
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 < number < math.inf:
                raise ValueError(f"AdaptiveLearningRate `{name}` must be a finite number > 0; got {number!r}.")
        if isinstance(self.factor, bool) or not isinstance(self.factor, (int, float)) or not 1 < self.factor < math.inf:
            raise ValueError(f"AdaptiveLearningRate `factor` must be a number > 1; got {self.factor!r}. Try 1.5.")
        if not self.min_lr <= self.initial <= self.max_lr:
            raise ValueError(
                f"AdaptiveLearningRate `initial` = {self.initial:g} is outside [min_lr, max_lr] = "
                f"[{self.min_lr:g}, {self.max_lr:g}]. Move the bounds or the initial rate."
            )
        self.value = float(self.initial)

    def __call__(self, progress_remaining: float) -> float:
        return self.value

    def update(self, kl: float) -> float:
        """
        :param kl: The approximate KL divergence the update at :attr:`value` reached
        :return: The rate for the next update (also :attr:`value`)
        """
        self.value = adapt_learning_rate(self.value, kl, self.desired_kl, self.factor, self.min_lr, self.max_lr)
        return self.value

    def back_off(self, factor: float) -> None:
        """Multiply the rate and its ceiling by ``factor`` (< 1), not below ``min_lr``."""
        self.max_lr = max(self.min_lr, self.max_lr * factor)
        self.value = min(max(self.value * factor, self.min_lr), self.max_lr)

    def state(self) -> dict[str, float]:
        """:return: What changes during training (the rate and its ceiling)"""
        return {"value": self.value, "max_lr": self.max_lr}

    def load_state(self, state: dict[str, float]) -> None:
        """Put back a :meth:`state`."""
        self.value, self.max_lr = float(state["value"]), float(state["max_lr"])

    def __repr__(self) -> str:
        return (
            f"AdaptiveLearningRate(now={self.value:.3g}, desired_kl={self.desired_kl:g}, factor={self.factor:g}, "
            f"bounds=[{self.min_lr:g}, {self.max_lr:g}])"
        )


def adaptive_rate_of(model: object) -> AdaptiveLearningRate | None:
    """:return: The model's adaptive learning rate, or ``None`` when its ``learning_rate`` is a number or schedule"""
    rate = getattr(model, "learning_rate", None)
    return rate if isinstance(rate, AdaptiveLearningRate) else None
