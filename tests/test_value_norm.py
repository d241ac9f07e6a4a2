from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.running_mean_std import RunningMeanStd

from sb3_safe.value_norm import ValueNormalizer


def test_update_matches_sb3_running_mean_std():
    rng = np.random.default_rng(0)
    norm, reference = ValueNormalizer(), RunningMeanStd(shape=())
    for _ in range(3):
        batch = rng.normal(5.0, 3.0, size=100)
        norm.update(th.as_tensor(batch))
        reference.update(batch)
    assert norm.mean.item() == pytest.approx(reference.mean, rel=1e-12)
    assert norm.var.item() == pytest.approx(reference.var, rel=1e-12)
    assert norm.count.item() == pytest.approx(reference.count, rel=1e-12)


def test_non_finite_targets_are_ignored():
    norm = ValueNormalizer()
    norm.update(th.tensor([1.0, 3.0, float("nan"), float("inf")]))
    assert th.isfinite(norm.mean) and th.isfinite(norm.var)
    # only 1 and 3 counted: mean 2 * 2 / (2 + 1e-4)
    assert norm.mean.item() == pytest.approx(2 * 2 / (2 + 1e-4))
    before = norm.state_dict()
    norm.update(th.tensor([float("nan")]))
    assert all(th.equal(before[k], v) for k, v in norm.state_dict().items())


def test_normalize_denormalize_round_trip():
    norm = ValueNormalizer()
    norm.update(th.tensor([-100.0, -300.0, -200.0]))
    x = th.tensor([-150.0, 0.0, 42.0])
    assert th.allclose(norm.denormalize(norm.normalize(x)), x, atol=1e-4)
    assert abs(norm.normalize(th.tensor([-200.0])).item()) < 1e-4


def test_hook_denormalizes_unless_raw_output():
    norm = ValueNormalizer()
    norm.update(th.tensor([10.0, 20.0]))
    head = th.nn.Linear(2, 1)
    raw = head(th.ones(1, 2)).detach()
    norm.attach(head)
    assert th.allclose(head(th.ones(1, 2)), norm.denormalize(raw))
    with norm.raw_output():
        assert th.equal(head(th.ones(1, 2)), raw)
    assert norm.denormalize_output


def test_statistics_are_in_the_state_dict():
    parent = th.nn.Module()
    parent.add_module("value_normalizer", ValueNormalizer())
    assert set(parent.state_dict()) == {"value_normalizer.mean", "value_normalizer.var", "value_normalizer.count"}


def test_loading_statistics_refreshes_the_fast_path():
    source, target = ValueNormalizer(), ValueNormalizer()
    source.update(th.tensor([100.0, 300.0]))
    target.load_state_dict(source.state_dict())
    x = th.tensor([0.5, -1.0])
    assert th.equal(target.denormalize(x), source.denormalize(x))
    assert target.denormalize(x)[0].item() == pytest.approx(source.mean.item() + 0.5 * source.std.item(), rel=1e-6)
