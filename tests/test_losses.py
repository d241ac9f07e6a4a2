"""Each loss against numbers computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch as th
from torch.nn import functional as F

from sb3_safe import losses


def t(*values: float) -> th.Tensor:
    return th.tensor(values, dtype=th.float64)


def test_normalize_advantages_matches_hand_values():
    # mean 2.5, unbiased std sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3) = sqrt(5/3)
    out = losses.normalize_advantages(t(1, 2, 3, 4))
    std = math.sqrt(5 / 3)
    expected = t(-1.5, -0.5, 0.5, 1.5) / (std + 1e-8)
    assert th.allclose(out, expected, rtol=0, atol=1e-12)


def test_normalize_advantages_is_sb3_formula_bit_for_bit():
    adv = th.randn(64, generator=th.Generator().manual_seed(0))
    assert th.equal(losses.normalize_advantages(adv), (adv - adv.mean()) / (adv.std() + 1e-8))


def test_normalize_advantages_min_std_only_centres():
    # std of (1, 1.0001) is 7.07e-5 < 0.01: centre only, do not blow the difference up to +-0.707
    out = losses.normalize_advantages(t(1.0, 1.0001), min_std=0.01)
    assert th.allclose(out, t(-0.00005, 0.00005), atol=1e-12)
    # std 0.707 > 0.01: the usual scaling applies
    out = losses.normalize_advantages(t(0.0, 1.0), min_std=0.01)
    assert th.allclose(out, t(-0.5, 0.5) / (math.sqrt(0.5) + 1e-8), atol=1e-12)


def test_clipped_surrogate_loss():
    # A*r = (1.5, -0.5); A*clip(r, 0.8, 1.2) = (1.2, -0.8); min = (1.2, -0.8); -mean = -0.2
    loss = losses.clipped_surrogate_loss(t(1, -1), t(1.5, 0.5), clip_range=0.2)
    assert loss.item() == pytest.approx(-0.2, abs=1e-12)


def test_clip_fraction():
    # |r - 1| = (0.5, 0.1, 0.3, 0): two of four exceed 0.2
    assert losses.clip_fraction(t(1.5, 1.1, 0.7, 1.0), 0.2).item() == 0.5


def test_approx_kl():
    # log r = (0, ln 2): (r - 1) - log r = (0, 1 - ln 2); mean = (1 - ln 2) / 2
    kl = losses.approx_kl(t(0.0, math.log(2.0)))
    assert kl.item() == pytest.approx((1 - math.log(2.0)) / 2, abs=1e-12)


V, R, OLD = (1.0, 2.0), (0.0, 4.0), (0.0, 0.0)


def test_mse_value_loss_unclipped_is_sb3_bit_for_bit():
    # errors (1, -2): (1 + 4) / 2 = 2.5
    loss = losses.value_loss(t(*V), t(*OLD), t(*R), "mse")
    assert loss.item() == 2.5
    values, returns = th.randn(32), th.randn(32)
    assert th.equal(losses.value_loss(values, values, returns, "mse"), F.mse_loss(returns, values))


def test_huber_value_loss():
    # |e| = (1, 2), delta 1: 0.5 * 1^2 = 0.5 and 1 * (2 - 0.5) = 1.5; mean 1.0
    assert losses.value_loss(t(*V), t(*OLD), t(*R), "huber").item() == pytest.approx(1.0)
    # delta 3: both quadratic: (0.5 + 2) / 2 = 1.25
    assert losses.value_loss(t(*V), t(*OLD), t(*R), "huber", huber_delta=3.0).item() == pytest.approx(1.25)


def test_clipped_value_loss_is_max_form():
    # v_clip = 0 + clip(v - 0, -0.5, 0.5) = (0.5, 0.5)
    # unclipped squared errors (1, 4); clipped (0.25, 12.25); max (1, 12.25); mean 6.625.
    # SB3's clipped-only form would give (0.25 + 12.25) / 2 = 6.25.
    loss = losses.value_loss(t(*V), t(*OLD), t(*R), "mse", clip_range_vf=0.5)
    assert loss.item() == pytest.approx(6.625)


def test_blend_value_loss():
    # unclipped: 0.5 * 2.5 + 0.5 * 1.0 = 1.75
    assert losses.value_loss(t(*V), t(*OLD), t(*R), "blend").item() == pytest.approx(1.75)
    # clipped: mse 6.625 (above); huber unclipped (0.5, 1.5), clipped errors (0.5, 3.5) -> (0.125, 3.0),
    # max (0.5, 3.0), mean 1.75; blend 0.5 * 6.625 + 0.5 * 1.75 = 4.1875
    loss = losses.value_loss(t(*V), t(*OLD), t(*R), "blend", clip_range_vf=0.5)
    assert loss.item() == pytest.approx(4.1875)


def test_huber_gradient_is_bounded():
    # An outlier return 1000 away pulls with gradient delta / n, not 2 * 1000 / n.
    values = t(0.0, 0.0).requires_grad_()
    losses.value_loss(values, t(0, 0), t(0.0, 1000.0), "huber", huber_delta=1.0).backward()
    assert values.grad is not None
    assert values.grad.tolist() == pytest.approx([0.0, -0.5])


def test_unknown_value_loss_is_rejected():
    with pytest.raises(ValueError, match="`value_loss` must be one of"):
        losses.value_loss(t(*V), t(*OLD), t(*R), "l1")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["mse", "huber", "blend"])
def test_clipped_loss_equals_explicit_max_form_with_gradients(kind: losses.ValueLossKind):
    # The fused loss picks the larger error once; check it against max(loss(v), loss(v_clipped)) spelled out.
    gen = th.Generator().manual_seed(1)
    values = (th.randn(256, generator=gen, dtype=th.float64) * 3).requires_grad_()
    old, returns = th.randn(256, generator=gen, dtype=th.float64) * 3, th.randn(256, generator=gen, dtype=th.float64) * 3

    def elementwise(pred: th.Tensor) -> th.Tensor:
        mse = (pred - returns) ** 2
        huber = F.huber_loss(pred, returns, reduction="none", delta=1.5)
        return {"mse": mse, "huber": huber, "blend": 0.5 * mse + 0.5 * huber}[kind]

    clipped = old + th.clamp(values - old, -0.3, 0.3)
    explicit = th.max(elementwise(values), elementwise(clipped)).mean()
    ours = losses.value_loss(values, old, returns, kind, clip_range_vf=0.3, huber_delta=1.5)
    assert ours.item() == pytest.approx(explicit.item(), rel=1e-12)
    (grad_explicit,) = th.autograd.grad(explicit, values)
    (grad_ours,) = th.autograd.grad(ours, values)
    assert th.allclose(grad_ours, grad_explicit, rtol=0, atol=1e-12)
