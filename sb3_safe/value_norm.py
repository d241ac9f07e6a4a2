"""
Running normalization of value targets (MAPPO's ``ValueNorm``, without PopArt's output rescaling).

The critic regresses ``(R - mean) / std`` instead of ``R``, so its output stays near unit
scale whatever the reward scale is, and a reward 100x larger does not mean gradients
100x larger. Everywhere else (GAE, explained variance, ``predict_values``) sees values on
the true scale: :meth:`ValueNormalizer.attach` installs a forward hook on the policy's
``value_net`` that de-normalizes its output, and :meth:`ValueNormalizer.raw_output`
switches the hook off while the loss is computed.

The statistics are registered buffers of a module that lives on the policy, so they are
part of ``policy.state_dict()``: SB3's ``save``/``load`` and any snapshot of the policy carry
them with no extra code. SB3's numpy ``RunningMeanStd`` cannot do that, which is why the
(same) parallel mean/variance update is written here in torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch as th
from torch import nn

__all__ = ["DEFAULT_EPSILON", "ValueNormalizer", "preserve_outputs"]

#: Initial pseudo-count and variance floor of :class:`ValueNormalizer`
DEFAULT_EPSILON = 1e-4


class ValueNormalizer(nn.Module):
    """
    Running mean and variance of the value targets, with (de)normalization.

    :param epsilon: Initial pseudo-count and the floor added to the variance
    """

    mean: th.Tensor
    var: th.Tensor
    count: th.Tensor
    _shift: th.Tensor
    _scale: th.Tensor

    def __init__(self, epsilon: float = DEFAULT_EPSILON) -> None:
        super().__init__()
        self.epsilon = epsilon
        self.register_buffer("mean", th.zeros((), dtype=th.float64))
        self.register_buffer("var", th.ones((), dtype=th.float64))
        self.register_buffer("count", th.tensor(epsilon, dtype=th.float64))
        # float32 copies of mean and std for the hot path (every rollout step, every minibatch):
        # derived state, so not persistent; refreshed after every update and every load.
        self.register_buffer("_shift", th.zeros(()), persistent=False)
        self.register_buffer("_scale", th.ones(()), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _: module._refresh())  # type: ignore[no-untyped-call]
        self._refresh()
        # Not a buffer: whether the hook de-normalizes. Only ``raw_output`` changes it.
        self.denormalize_output = True
        # The value heads attached (a plain list, so not submodules: the state_dict keeps its keys).
        self._heads: list[nn.Module] = []

    @property
    def std(self) -> th.Tensor:
        return th.sqrt(self.var + self.epsilon)

    def _refresh(self) -> None:
        self._shift.copy_(self.mean)
        self._scale.copy_(self.std)

    @th.no_grad()
    def update(self, targets: th.Tensor) -> None:
        """
        Merge a batch of targets into the running statistics (Chan et al.'s parallel update).

        Non-finite targets are left out: one NaN reward must not poison the statistics, and
        through them every value the critic will ever predict.

        A count of 0 means "no targets seen yet" (a checkpoint trained without value
        normalization, resumed with it): the statistics become the batch's, and the attached
        linear heads are rescaled so that their de-normalized predictions do not change
        (PopArt's output-preserving update). A new normalizer starts at ``epsilon`` instead, as
        MAPPO's ValueNorm does, and never rescales.

        :param targets: Value targets on the true scale, any shape
        """
        batch = targets.detach().to(self.mean.device, th.float64).flatten()
        batch = batch[th.isfinite(batch)]
        n = batch.numel()
        if n == 0:
            return
        batch_mean = batch.mean()
        batch_var = batch.var(unbiased=False)
        if float(self.count) == 0.0:
            self._restart(batch_mean, batch_var, n)
            return
        delta = batch_mean - self.mean
        total = self.count + n
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean.add_(delta * n / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)
        self._refresh()

    def _restart(self, mean: th.Tensor, var: th.Tensor, n: int) -> None:
        old_shift, old_scale = self._shift.clone(), self._scale.clone()
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.fill_(n)
        self._refresh()
        for head in self._heads:
            if isinstance(head, nn.Linear):
                preserve_outputs(head, old_shift, old_scale, self._shift, self._scale)

    def normalize(self, x: th.Tensor) -> th.Tensor:
        """:return: ``(x - mean) / std``"""
        return (x - self._shift) / self._scale

    def denormalize(self, x: th.Tensor) -> th.Tensor:
        """:return: ``x * std + mean``"""
        return x * self._scale + self._shift

    def _hook(self, module: nn.Module, inputs: tuple[th.Tensor, ...], output: th.Tensor) -> th.Tensor:
        return self.denormalize(output) if self.denormalize_output else output

    def attach(self, value_net: nn.Module) -> None:
        """
        De-normalize every output of ``value_net`` from now on.

        :param value_net: The module whose output is the (normalized) value
        """
        value_net.register_forward_hook(self._hook)
        self._heads.append(value_net)

    @contextmanager
    def raw_output(self) -> Iterator[None]:
        """Within this context, ``value_net`` returns the normalized prediction the loss needs."""
        previous = self.denormalize_output
        self.denormalize_output = False
        try:
            yield
        finally:
            self.denormalize_output = previous


@th.no_grad()
def preserve_outputs(
    head: nn.Linear, old_shift: th.Tensor, old_scale: th.Tensor, new_shift: th.Tensor, new_scale: th.Tensor
) -> None:
    """
    Rescale a linear value head so that ``head(x) * scale + shift`` is the same before and after the
    statistics change (PopArt, van Hasselt et al. 2016): ``W' = W * old / new`` and
    ``b' = (b * old + old_shift - new_shift) / new``.
    """
    ratio = (old_scale / new_scale).to(head.weight.dtype)
    head.weight.mul_(ratio)
    if head.bias is not None:
        head.bias.copy_(((head.bias.double() * old_scale + old_shift - new_shift) / new_scale).to(head.bias.dtype))
