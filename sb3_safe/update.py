"""
The update every safe algorithm shares: SB3's PPO loop with the stabilizers, guarded.

:class:`SafeUpdateMixin` holds it once for :class:`sb3_safe.SafePPO` (over SB3's ``PPO``),
:class:`sb3_safe.SafeRecurrentPPO` and :class:`sb3_safe.SafeMaskablePPO` (over sb3-contrib's
``RecurrentPPO`` and ``MaskablePPO``, which copy PPO's ``train()`` with their own changes).
Each class supplies three small hooks:

- :meth:`SafeUpdateMixin._evaluate_minibatch`: values, log-probabilities and entropy of a
  minibatch (LSTM states and episode starts for the recurrent policy, action masks for the
  masked one);
- :meth:`SafeUpdateMixin._minibatch_mask`: the valid entries (``RecurrentPPO`` pads its
  sequences), or ``None``;
- :meth:`SafeUpdateMixin._normalized_advantages`: PPO skips a minibatch of one; the contrib
  classes normalize over the valid entries.

With every safe argument at its default, each class's update is its base class's, operation
for operation (the tests compare parameters after training).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance

from sb3_safe.config.algorithms import KL_STOPS
from sb3_safe.losses import (
    VALUE_LOSSES,
    ValueLossKind,
    approx_kl,
    clip_fraction,
    clipped_surrogate_loss,
    masked_mean,
    normalize_advantages,
    value_loss,
)
from sb3_safe.schedules import AdaptiveLearningRate
from sb3_safe.stats import UpdateStats
from sb3_safe.value_norm import ValueNormalizer

__all__ = ["KL_STOPS", "SafeUpdateMixin"]


# Names of the policy attributes whose parameters belong to the critic: SB3's ActorCriticPolicy
# (value_net, the value MLP, its own features extractor) and sb3-contrib's recurrent policy
# (its critic LSTM, or the linear ``critic`` layer it uses without one).
_CRITIC_MODULES = ("value_net", "vf_features_extractor", "lstm_critic", "critic")
_CRITIC_GROUP = "critic"


@dataclass
class UpdateLog:
    """What one update measured, minibatch by minibatch (the means go into :class:`~sb3_safe.stats.UpdateStats`)."""

    policy_gradient_loss: list[float] = field(default_factory=list)
    value_loss: list[float] = field(default_factory=list)
    entropy_loss: list[float] = field(default_factory=list)
    clip_fraction: list[float] = field(default_factory=list)
    ratio_mean: list[float] = field(default_factory=list)
    #: Approx KL of the last epoch's minibatches (SB3 logs the last epoch's)
    approx_kl: list[np.ndarray] = field(default_factory=list)
    #: ``[actor, critic]`` gradient norms of the steps taken
    grad_norms: list[th.Tensor] = field(default_factory=list)
    #: Minibatches skipped for a non-finite loss or gradient
    skipped: int = 0
    epochs_run: int = 0


class SafeUpdateMixin:
    """
    The safe update, mixed in before an on-policy algorithm with PPO's ``train()`` loop
    (``class SafePPO(SafeUpdateMixin, PPO)``). See :class:`sb3_safe.SafePPO` for the arguments.
    """

    # Provided by the algorithm it is mixed into (SB3's OnPolicyAlgorithm and PPO).
    policy: Any
    learning_rate: float | Schedule
    rollout_buffer: Any
    action_space: Any
    logger: Any
    lr_schedule: Schedule
    clip_range: Any
    clip_range_vf: Any
    n_epochs: int
    batch_size: int
    ent_coef: float
    vf_coef: float
    max_grad_norm: float
    target_kl: float | None
    normalize_advantage: bool
    num_timesteps: int
    verbose: int
    device: th.device
    _n_updates: int
    _current_progress_remaining: float

    def __init__(
        self,
        policy: Any,
        env: Any,
        *args: Any,
        value_loss: ValueLossKind = "mse",
        huber_delta: float = 1.0,
        critic_learning_rate: float | Schedule | None = None,
        kl_stop: str = "minibatch",
        adv_norm_min_std: float = 0.0,
        normalize_value: bool = False,
        **kwargs: Any,
    ) -> None:
        _check_choice("value_loss", value_loss, VALUE_LOSSES)
        _check_choice("kl_stop", kl_stop, KL_STOPS)
        _check_positive("huber_delta", huber_delta)
        if not isinstance(adv_norm_min_std, (int, float)) or adv_norm_min_std < 0:
            raise ValueError(
                f"`adv_norm_min_std` must be a float >= 0, got {adv_norm_min_std!r}. Use 0.0 for SB3's behaviour."
            )
        if isinstance(critic_learning_rate, (int, float)) and not isinstance(critic_learning_rate, bool):
            _check_positive("critic_learning_rate", critic_learning_rate)
        self.value_loss: ValueLossKind = value_loss
        self.huber_delta = float(huber_delta)
        self.critic_learning_rate = critic_learning_rate
        self.kl_stop = kl_stop
        self.adv_norm_min_std = float(adv_norm_min_std)
        self.normalize_value = normalize_value
        self.last_update: UpdateStats | None = None
        self._warned_non_finite = False
        super().__init__(policy, env, *args, **kwargs)  # type: ignore[call-arg]

    def _setup_model(self) -> None:
        if isinstance(self.learning_rate, AdaptiveLearningRate):
            # Its own copy: the rate is state of this model (two models given one object must not share it).
            self.learning_rate = copy.copy(self.learning_rate)
        super()._setup_model()  # type: ignore[misc]
        self.critic_lr_schedule: Schedule | None = None
        if self.normalize_value:
            normalizer = ValueNormalizer().to(self.device)
            self.policy.add_module("value_normalizer", normalizer)
            normalizer.attach(self.policy.value_net)
        if self.critic_learning_rate is not None:
            self.critic_lr_schedule = FloatSchedule(self.critic_learning_rate)
            self._split_optimizer()

    @property
    def value_normalizer(self) -> ValueNormalizer | None:
        """The running statistics of the value targets, or ``None`` without ``normalize_value``."""
        normalizer = getattr(self.policy, "value_normalizer", None)
        return normalizer if isinstance(normalizer, ValueNormalizer) else None

    def _critic_parameters(self) -> set[int]:
        """:return: ``id`` of every parameter of the critic (value head, value MLP, own features extractor)"""
        modules = [getattr(self.policy, name, None) for name in _CRITIC_MODULES]
        modules.append(getattr(getattr(self.policy, "mlp_extractor", None), "value_net", None))
        if getattr(self.policy, "share_features_extractor", True):
            modules.remove(getattr(self.policy, "vf_features_extractor", None))
        return {id(p) for module in modules if isinstance(module, th.nn.Module) for p in module.parameters()}

    def _split_optimizer(self) -> None:
        """Rebuild the policy's optimizer with an actor (and shared layers) group and a critic group."""
        critic_ids = self._critic_parameters()
        if not critic_ids:
            raise ValueError(
                f"`critic_learning_rate` is set but {type(self.policy).__name__} has no `value_net`: "
                "use an ActorCriticPolicy subclass, or leave `critic_learning_rate=None`."
            )
        params = list(self.policy.parameters())
        assert self.critic_lr_schedule is not None
        groups: list[dict[str, Any]] = [
            {"params": [p for p in params if id(p) not in critic_ids], "name": "actor"},
            {"params": [p for p in params if id(p) in critic_ids], "name": _CRITIC_GROUP, "lr": self.critic_lr_schedule(1)},
        ]
        # Same optimizer class and kwargs as SB3's _build(), two groups instead of one.
        self.policy.optimizer = self.policy.optimizer_class(groups, lr=self.lr_schedule(1), **self.policy.optimizer_kwargs)

    def _current_learning_rates(self) -> tuple[float, float]:
        """:return: The actor and critic learning rates for the current progress"""
        lr = self.lr_schedule(self._current_progress_remaining)
        if self.critic_lr_schedule is None:
            return lr, lr
        return lr, self.critic_lr_schedule(self._current_progress_remaining)

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        # SB3 sets every param group to ``lr_schedule``: keep the critic group on its own schedule.
        super()._update_learning_rate(optimizers)  # type: ignore[misc]
        if self.critic_lr_schedule is None:
            return
        _, critic_lr = self._current_learning_rates()
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            for group in optimizer.param_groups:
                if group.get("name") == _CRITIC_GROUP:
                    group["lr"] = critic_lr

    def _excluded_save_params(self) -> list[str]:
        # The record is rebuilt by the next update; the schedule is rebuilt from critic_learning_rate.
        return [*super()._excluded_save_params(), "last_update", "critic_lr_schedule"]  # type: ignore[misc]

    def train(self) -> None:
        """
        Update policy and critic on the current rollout buffer: SB3's PPO update, guarded, read top to bottom.

        For each epoch and minibatch: the losses (:meth:`_minibatch_loss`), the minibatch KL stop before the
        step (SB3's ``target_kl``), the guarded step (:meth:`_step`); after each epoch, the epoch KL stop.
        """
        clip_range, clip_range_vf, roles = self._start_update()
        normalizer = self.value_normalizer
        log = UpdateLog()
        loss: th.Tensor | None = None
        with normalizer.raw_output() if normalizer is not None else nullcontext():
            for epoch in range(self.n_epochs):
                log.approx_kl = []  # SB3 logs the last epoch's
                log.epochs_run += 1
                stopped = False
                for rollout_data in self.rollout_buffer.get(self.batch_size):
                    loss, kl = self._minibatch_loss(rollout_data, clip_range, clip_range_vf, log)
                    stopped = self._minibatch_kl_stop(kl, epoch)
                    if stopped:
                        break
                    self._step(loss, roles, log)
                self._n_updates += 1
                if stopped or self._epoch_kl_stop(log, epoch):
                    break
        self._finish_update(log, clip_range, clip_range_vf, float("nan") if loss is None else loss.item())

    def _start_update(self) -> tuple[float, float | None, list[tuple[th.nn.Parameter, bool]]]:
        """
        Training mode, learning rates and clip ranges for the current progress, the value normalizer's
        statistics updated with the rollout's returns.

        :return: The clip range, the value clip range, and each parameter with whether it is the critic's
        """
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        clip_range = self.clip_range(progress)
        clip_range_vf = None if self.clip_range_vf is None else self.clip_range_vf(progress)
        normalizer = self.value_normalizer
        if normalizer is not None:
            normalizer.update(th.as_tensor(self.rollout_buffer.returns))
        critic_ids = self._critic_parameters()
        return clip_range, clip_range_vf, [(p, id(p) in critic_ids) for p in self.policy.parameters()]

    def _minibatch_loss(
        self, rollout_data: Any, clip_range: float, clip_range_vf: float | None, log: UpdateLog
    ) -> tuple[th.Tensor, np.ndarray]:
        """
        PPO's loss on one minibatch: the clipped surrogate, the value loss (on normalized targets with
        ``normalize_value``) and the entropy bonus; each term and the approx KL go into ``log``.

        :return: The loss, and the minibatch's approx KL (http://joschu.net/blog/kl-approx.html)
        """
        actions = rollout_data.actions
        if isinstance(self.action_space, spaces.Discrete):
            # Convert discrete action from float to long
            actions = rollout_data.actions.long().flatten()

        mask = self._minibatch_mask(rollout_data)
        values, log_prob, entropy = self._evaluate_minibatch(rollout_data, actions)
        values = values.flatten()
        advantages = self._normalized_advantages(rollout_data.advantages, mask)

        log_ratio = log_prob - rollout_data.old_log_prob
        ratio = th.exp(log_ratio)
        policy_loss = clipped_surrogate_loss(advantages, ratio, clip_range, mask)
        log.policy_gradient_loss.append(policy_loss.item())
        log.clip_fraction.append(clip_fraction(ratio, clip_range, mask).item())
        log.ratio_mean.append(masked_mean(ratio, mask).item())

        returns, old_values = rollout_data.returns, rollout_data.old_values
        normalizer = self.value_normalizer
        if normalizer is not None:
            returns, old_values = normalizer.normalize(returns), normalizer.normalize(old_values)
        v_loss = value_loss(values, old_values, returns, self.value_loss, clip_range_vf, self.huber_delta, mask)
        log.value_loss.append(v_loss.item())

        # Approximate the entropy when it has no analytical form
        entropy_loss = -masked_mean(-log_prob, mask) if entropy is None else -masked_mean(entropy, mask)
        log.entropy_loss.append(entropy_loss.item())

        loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * v_loss

        with th.no_grad():
            approx_kl_div = approx_kl(log_ratio, mask).cpu().numpy()
            log.approx_kl.append(approx_kl_div)
        return loss, approx_kl_div

    def _minibatch_kl_stop(self, approx_kl_div: np.ndarray, epoch: int) -> bool:
        """SB3's ``target_kl`` (``kl_stop: minibatch``): stop every epoch before a step whose minibatch moved too far."""
        if self.kl_stop != "minibatch" or self.target_kl is None or not approx_kl_div > 1.5 * self.target_kl:
            return False
        if self.verbose >= 1:
            print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
        return True

    def _step(self, loss: th.Tensor, roles: list[tuple[th.nn.Parameter, bool]], log: UpdateLog) -> None:
        """Back-propagate and take the guarded optimizer step (skipped on a non-finite loss or gradient)."""
        self.policy.optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        norms = self._guarded_step(loss, roles)
        if norms is None:
            log.skipped += 1
        else:
            log.grad_norms.append(norms)

    def _epoch_kl_stop(self, log: UpdateLog, epoch: int) -> bool:
        """``kl_stop: epoch``: stop the remaining epochs once an epoch's mean approx KL exceeds ``target_kl``."""
        if self.kl_stop != "epoch" or self.target_kl is None:
            return False
        epoch_kl = float(np.mean(log.approx_kl))
        if epoch_kl <= self.target_kl:
            return False
        if self.verbose >= 1:
            print(f"Early stopping after epoch {epoch}: mean approx kl {epoch_kl:.4f} > {self.target_kl}")
        return True

    def _finish_update(self, log: UpdateLog, clip_range: float, clip_range_vf: float | None, loss: float) -> None:
        """Record the update (``last_update``, SB3's logger) and adapt an adaptive learning rate to its approx KL."""
        self.last_update = self._update_stats(log, clip_range, clip_range_vf, loss)
        self.last_update.record(self.logger)
        if isinstance(self.learning_rate, AdaptiveLearningRate):
            self.learning_rate.update(self.last_update.approx_kl)

    def _guarded_step(self, loss: th.Tensor, roles: list[tuple[th.nn.Parameter, bool]]) -> th.Tensor | None:
        """
        Clip the gradients and step the optimizer, unless the loss or the gradient norm is not finite.

        The total norm is computed exactly as ``clip_grad_norm_`` does (so default training
        matches SB3 bit for bit); the actor and critic norms come from the same per-tensor norms.

        :param loss: The minibatch loss, after ``backward()``
        :param roles: Every policy parameter with whether it belongs to the critic
        :return: ``[actor_norm, critic_norm]`` before clipping, or ``None`` when the step was skipped
        """
        with_grad = [(p, critic) for p, critic in roles if p.grad is not None]
        grads = [p.grad for p, _ in with_grad]
        norms = [th.linalg.vector_norm(g) for g in grads if g is not None]
        total_norm = th.linalg.vector_norm(th.stack(norms))
        if not bool(th.isfinite(loss) & th.isfinite(total_norm)):
            if not self._warned_non_finite:
                self._warned_non_finite = True
                warnings.warn(
                    f"SafePPO skipped an update with a non-finite loss ({loss.item()}) or gradient norm "
                    f"({total_norm.item()}) at timestep {self.num_timesteps}; parameters are untouched. "
                    "Check observations and rewards for NaN/inf (VecCheckNan), lower the learning rate, "
                    "or use value_loss='huber'. Further skips are counted in train/skipped_updates.",
                    stacklevel=2,
                )
            return None
        th.nn.utils.clip_grads_with_norm_([p for p, _ in with_grad], self.max_grad_norm, total_norm)
        self.policy.optimizer.step()
        actor = [n for n, (_, critic) in zip(norms, with_grad, strict=True) if not critic]
        critic = [n for n, (_, is_critic) in zip(norms, with_grad, strict=True) if is_critic]
        return th.stack([_group_norm(actor), _group_norm(critic)])

    def _update_stats(self, log: UpdateLog, clip_range: float, clip_range_vf: float | None, loss: float) -> UpdateStats:
        buffer = self.rollout_buffer
        lr, critic_lr = self._current_learning_rates()
        grad_norms = log.grad_norms
        actor_norm, critic_norm = th.stack(grad_norms).mean(dim=0).tolist() if grad_norms else (float("nan"), float("nan"))
        log_std = getattr(self.policy, "log_std", None)
        return UpdateStats(
            timesteps=self.num_timesteps,
            epochs_run=log.epochs_run,
            n_updates=self._n_updates,
            learning_rate=lr,
            critic_learning_rate=critic_lr,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            loss=loss,
            policy_gradient_loss=float(np.mean(log.policy_gradient_loss)),
            value_loss=float(np.mean(log.value_loss)),
            entropy_loss=float(np.mean(log.entropy_loss)),
            approx_kl=float(np.mean(log.approx_kl)),
            clip_fraction=float(np.mean(log.clip_fraction)),
            explained_variance=float(explained_variance(buffer.values.flatten(), buffer.returns.flatten())),
            std=None if log_std is None else th.exp(log_std).mean().item(),
            ratio_mean=float(np.mean(log.ratio_mean)),
            advantages_mean=float(np.mean(buffer.advantages)),
            advantages_std=float(np.std(buffer.advantages)),
            returns_mean=float(np.mean(buffer.returns)),
            returns_std=float(np.std(buffer.returns)),
            values_mean=float(np.mean(buffer.values)),
            rollout_reward_mean=float(np.mean(buffer.rewards)),
            rollout_reward_std=float(np.std(buffer.rewards)),
            actor_grad_norm=actor_norm,
            critic_grad_norm=critic_norm,
            skipped_updates=log.skipped,
            params_finite=_all_finite(self.policy.parameters()),
        )

    # -- hooks for the algorithm's own minibatch (defaults: SB3's PPO)

    def _evaluate_minibatch(self, rollout_data: Any, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """:return: Values, log-probabilities of ``actions`` and entropy (``None`` without a closed form)"""
        values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, actions)
        return values, log_prob, entropy

    def _minibatch_mask(self, rollout_data: Any) -> th.Tensor | None:
        """:return: The valid entries of the minibatch, or ``None`` when all are"""
        return None

    def _normalized_advantages(self, advantages: th.Tensor, mask: th.Tensor | None) -> th.Tensor:
        """:return: The advantages the policy loss uses (PPO: normalized unless the minibatch has one sample)"""
        # Normalization does not make sense if mini batchsize == 1, see SB3 GH issue #325
        if self.normalize_advantage and len(advantages) > 1:
            return normalize_advantages(advantages, self.adv_norm_min_std)
        return advantages


def _group_norm(norms: list[th.Tensor]) -> th.Tensor:
    return th.linalg.vector_norm(th.stack(norms)) if norms else th.zeros(())


def _all_finite(tensors: Iterable[th.Tensor]) -> bool:
    # One fused check and one device sync, not one per tensor.
    flat = [t.detach().reshape(-1) for t in tensors]
    return bool(th.isfinite(th.cat(flat)).all()) if flat else True


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, allowed))}; got {value!r}.")


def _check_positive(name: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"`{name}` must be a number > 0; got {value!r}.")
