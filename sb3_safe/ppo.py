"""SafePPO: SB3's PPO with the stabilizers practitioners otherwise add by hand."""

from __future__ import annotations

from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_safe.bootstrap import BatchedBootstrap
from sb3_safe.update import KL_STOPS, SafeUpdateMixin

__all__ = ["KL_STOPS", "SafePPO"]


class SafePPO(SafeUpdateMixin, PPO):
    """
    Proximal Policy Optimization with guards against the two ways PPO runs die:
    a policy that never moves, and a critic that diverges until the weights are NaN.

    A drop-in subclass of :class:`stable_baselines3.PPO`: every PPO argument works unchanged,
    and with the new arguments at their defaults the update is SB3's, float for float (the
    test suite checks identical parameters after training). The loss math lives in
    :mod:`sb3_safe.losses` as pure functions.

    Always on, whatever the arguments: a minibatch whose loss or gradient norm is not finite
    is skipped (parameters and optimizer state untouched), counted in
    ``train/skipped_updates`` and warned about once. SB3 has no such check
    (only ``VecCheckNan`` at the environment boundary).

    After each update ``model.last_update`` holds an :class:`sb3_safe.stats.UpdateStats`
    with SB3's metrics and more (raw advantage statistics, ratio mean, actor and critic
    gradient norms, skipped updates, epochs run), because SB3's logger is cleared at
    every dump and callbacks need these numbers.

    ``learning_rate`` also takes an :class:`sb3_safe.schedules.AdaptiveLearningRate`: the rate
    then follows the approximate KL divergence each update reaches (rsl_rl's adaptive schedule).

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param args: PPO's positional arguments, see :class:`stable_baselines3.PPO`
    :param value_loss: ``"mse"`` (SB3's), ``"huber"`` or ``"blend"`` (``0.5 * mse + 0.5 * huber``).
        Huber bounds the gradient of a large value error, so one outlier return cannot blow
        the critic up. See :func:`sb3_safe.losses.value_loss`.
    :param huber_delta: Error size at which the Huber loss turns from quadratic to linear
    :param critic_learning_rate: Learning rate (float or schedule of the progress remaining)
        of the value network and value head. ``None`` (default): one learning rate as in PPO.
        The policy and any shared layers keep ``learning_rate``. SB3 has no equivalent
        (https://github.com/DLR-RM/stable-baselines3/issues/338).
    :param kl_stop: How ``target_kl`` stops the epochs. ``"minibatch"`` (default, SB3's rule):
        stop before the step of the first minibatch whose approx KL exceeds ``1.5 * target_kl``.
        ``"epoch"``: finish the epoch, then stop the remaining ones when the mean approx KL over
        that epoch's minibatches exceeds ``target_kl``. (CleanRL also checks once per epoch, but
        against the KL of the epoch's *last* minibatch; the mean is steadier.)
    :param adv_norm_min_std: With ``normalize_advantage``, a minibatch whose advantage std is
        below this is only centred, not scaled: scaling near-constant advantages to unit std
        turns numerical noise into a gradient. ``0.0`` (default) is SB3's behaviour.
    :param normalize_value: The critic learns returns normalized by running mean and std (as
        MAPPO's ValueNorm does). Values are de-normalized wherever SB3 uses them (GAE,
        explained variance, ``predict_values``); the statistics are part of the policy's
        ``state_dict`` and so are saved, loaded and snapshotted with it. With this on,
        ``clip_range_vf`` is measured in normalized units, independent of the reward scale.
    :param kwargs: PPO's keyword arguments. Note that ``clip_range_vf`` keeps SB3's meaning of
        the clip size but is applied in the max form ``max((v - R)^2, (v_clipped - R)^2)``
        (CleanRL, MAPPO); SB3 uses only ``(v_clipped - R)^2``, which can reward the critic for
        moving away from the target.
    """

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """
        SB3's ``collect_rollouts``; a step that ends many episodes by their time limit bootstraps
        them in one forward pass (:class:`sb3_safe.bootstrap.BatchedBootstrap`).
        """
        return super().collect_rollouts(env, BatchedBootstrap(self, callback), rollout_buffer, n_rollout_steps)
