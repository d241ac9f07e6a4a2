"""
The safe update for sb3-contrib's recurrent and masked PPO: :class:`SafeRecurrentPPO` and :class:`SafeMaskablePPO`.

Both contrib classes derive from ``OnPolicyAlgorithm`` and carry their own copy of PPO's
``train()``; here :class:`~sb3_safe.update.SafeUpdateMixin` replaces it, with the hooks that
make it theirs:

- ``RecurrentPPO`` evaluates each minibatch of padded sequences with its LSTM states and
  episode starts, and every statistic is a mean over the valid (unpadded) slots;
- ``MaskablePPO`` evaluates each minibatch with the action masks collected in the rollout.

Everything else (rollout collection with LSTM states or masks, ``predict``, saving) is the
contrib class's own. With every safe argument at its default, each update is the contrib
class's, operation for operation.
"""

from __future__ import annotations

from typing import Any

import torch as th
from sb3_contrib import MaskablePPO, RecurrentPPO

from sb3_safe.losses import normalize_advantages
from sb3_safe.update import SafeUpdateMixin

__all__ = ["SafeMaskablePPO", "SafeRecurrentPPO"]

_SAFE_ARGUMENTS = """
    :param value_loss: ``"mse"`` (the base class's), ``"huber"`` or ``"blend"``; see :class:`sb3_safe.SafePPO`
    :param huber_delta: Error size at which the Huber loss turns from quadratic to linear
    :param critic_learning_rate: Learning rate of the critic's parameters (``None``: one rate)
    :param kl_stop: ``"minibatch"`` (SB3's rule) or ``"epoch"`` (stop after an epoch whose mean approx KL
        exceeds ``target_kl``)
    :param adv_norm_min_std: Below this advantage std a minibatch is only centred
    :param normalize_value: The critic learns returns normalized by running statistics (from the
        rollout's unpadded returns)
    :param kwargs: The base class's arguments
"""


class SafeRecurrentPPO(SafeUpdateMixin, RecurrentPPO):  # type: ignore[misc]
    """
    sb3-contrib's ``RecurrentPPO`` (PPO with LSTM policies) with sb3-safe's update.

    Every loss and statistic is reduced over the valid slots of the padded sequences
    (``rollout_data.mask``) after an elementwise computation, Huber, blend and max-form value
    clipping included; padded slots reach no gradient. The critic's parameters for
    ``critic_learning_rate`` are its LSTM (``lstm_critic``) or its linear ``critic`` layer, the
    value MLP and ``value_net``; with ``shared_lstm`` the LSTM is the actor's and stays with it.
    A minibatch with a single valid entry is centred, not divided by an undefined std.
    """

    __doc__ = (__doc__ or "") + _SAFE_ARGUMENTS

    def _evaluate_minibatch(self, rollout_data: Any, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        values, log_prob, entropy = self.policy.evaluate_actions(
            rollout_data.observations, actions, rollout_data.lstm_states, rollout_data.episode_starts
        )
        return values, log_prob, entropy

    def _minibatch_mask(self, rollout_data: Any) -> th.Tensor | None:
        # Convert mask from float to bool, as RecurrentPPO does
        mask: th.Tensor = rollout_data.mask > 1e-8
        return mask

    def _normalized_advantages(self, advantages: th.Tensor, mask: th.Tensor | None) -> th.Tensor:
        if not self.normalize_advantage:
            return advantages
        return normalize_advantages(advantages, self.adv_norm_min_std, mask=mask)


class SafeMaskablePPO(SafeUpdateMixin, MaskablePPO):  # type: ignore[misc]
    """
    sb3-contrib's ``MaskablePPO`` (PPO with invalid-action masking) with sb3-safe's update.

    Minibatches are evaluated with the masks collected during the rollout, so the
    log-probabilities, entropy and KL are those of the masked distribution. Its policy has no
    gSDE. As in ``MaskablePPO``, advantages are normalized in every minibatch, even of one sample.
    """

    __doc__ = (__doc__ or "") + _SAFE_ARGUMENTS

    def _evaluate_minibatch(self, rollout_data: Any, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        values, log_prob, entropy = self.policy.evaluate_actions(
            rollout_data.observations, actions, action_masks=rollout_data.action_masks
        )
        return values, log_prob, entropy

    def _normalized_advantages(self, advantages: th.Tensor, mask: th.Tensor | None) -> th.Tensor:
        if not self.normalize_advantage:
            return advantages
        return normalize_advantages(advantages, self.adv_norm_min_std)
