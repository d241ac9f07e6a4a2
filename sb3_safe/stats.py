"""
The per-update record that :class:`sb3_safe.SafePPO` keeps as ``model.last_update``.

SB3's logger clears its values at every dump, so a callback that reads ``train/*`` from it
sees nothing reliable. The algorithm keeps this record instead, and the health callbacks,
the logger and ``diagnose`` all read the same field names: ``train/<field>`` is the
logger key of each field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from stable_baselines3.common.logger import Logger

__all__ = ["TRAIN_PREFIX", "UpdateStats"]

TRAIN_PREFIX = "train/"

# Keys SB3's PPO does not send to TensorBoard (it logs them to stdout/CSV only).
_STDOUT_ONLY = {"n_updates"}


@dataclass(frozen=True)
class UpdateStats:
    """
    Everything measured during one call of ``SafePPO.train()``.

    Minibatch quantities are means over the minibatches that ran, as SB3 logs them, except
    ``approx_kl``, which (as in SB3) is the mean over the last epoch only. ``None`` means
    "not applicable" (no ``log_std``, no value clipping) and is not logged.
    """

    #: Environment steps taken when the update ran
    timesteps: int
    #: Number of gradient epochs started (less than ``n_epochs`` after a KL stop)
    epochs_run: int
    #: Total ``train()`` epochs so far, SB3's counter
    n_updates: int
    #: Actor (and shared layers) learning rate used for this update
    learning_rate: float
    #: Critic learning rate used for this update (equal to ``learning_rate`` when not separate)
    critic_learning_rate: float
    clip_range: float
    clip_range_vf: float | None
    #: SB3's losses: the last minibatch's total loss, and minibatch means of the parts
    loss: float
    policy_gradient_loss: float
    value_loss: float
    entropy_loss: float
    approx_kl: float
    clip_fraction: float
    explained_variance: float
    #: Mean of ``exp(log_std)`` for Gaussian policies
    std: float | None
    #: Mean probability ratio over minibatches (1.0 means the policy did not move)
    ratio_mean: float
    #: Raw GAE advantages of the rollout, before any normalization
    advantages_mean: float
    advantages_std: float
    #: Mean regression target and mean value prediction of the rollout (true scale)
    returns_mean: float
    returns_std: float
    values_mean: float
    #: Rewards stored in the rollout buffer (after any VecNormalize scaling)
    rollout_reward_mean: float
    rollout_reward_std: float
    #: Gradient norms before clipping, means over minibatches that stepped
    actor_grad_norm: float
    critic_grad_norm: float
    #: Minibatches whose loss or gradient norm was not finite; their step was skipped
    skipped_updates: int
    #: Whether every parameter was finite after the update
    params_finite: bool

    def as_dict(self) -> dict[str, float | int | bool | None]:
        """:return: The fields as a plain mapping"""
        # Every field is a plain number: no ``dataclasses.asdict`` recursion (this runs after every update).
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    def record(self, logger: Logger) -> None:
        """
        Send every applicable field to an SB3 logger as ``train/<field>``.

        :param logger: An SB3 ``Logger``
        """
        for name, value in self.as_dict().items():
            if value is None or name in ("timesteps", "params_finite"):
                continue
            exclude = "tensorboard" if name in _STDOUT_ONLY else None
            logger.record(TRAIN_PREFIX + name, value, exclude=exclude)

    @property
    def finite(self) -> bool:
        """Whether every float in the record is finite and the parameters are too."""
        floats = (v for v in self.as_dict().values() if isinstance(v, float))
        return self.params_finite and all(math.isfinite(v) for v in floats)


_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(UpdateStats))
