"""SafeRecurrentPPO and SafeMaskablePPO: the contrib algorithms by default, the safe options on top."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch as th
from sb3_contrib import MaskablePPO, RecurrentPPO
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_safe import SafeMaskablePPO, SafeRecurrentPPO
from sb3_safe.losses import value_loss
from tests.algorithms import ALL_ON, assert_same_parameters, params

# Short sequences in a batch smaller than the rollout: the minibatches hold padded slots.
LSTM: dict[str, Any] = dict(n_steps=32, batch_size=16, n_epochs=2, seed=0, device="cpu")
LSTM_POLICY = dict(lstm_hidden_size=8, net_arch=[8])


def masked_env() -> InvalidActionEnvDiscrete:
    return InvalidActionEnvDiscrete(dim=20, n_invalid_actions=10)


@pytest.mark.parametrize(
    "policy_kwargs",
    [{}, {"shared_lstm": True, "enable_critic_lstm": False}, {"enable_critic_lstm": False}],
    ids=["critic-lstm", "shared-lstm", "critic-linear"],
)
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_recurrent_defaults_reproduce_recurrent_ppo_bit_for_bit(env_id: str, policy_kwargs: dict[str, Any]):
    trained = []
    for cls in (RecurrentPPO, SafeRecurrentPPO):
        model = cls("MlpLstmPolicy", env_id, policy_kwargs={**LSTM_POLICY, **policy_kwargs}, **LSTM)
        model.learn(96)
        trained.append(params(model))
    assert_same_parameters(*trained)


def test_maskable_defaults_reproduce_maskable_ppo_bit_for_bit():
    trained = []
    for cls in (MaskablePPO, SafeMaskablePPO):
        model = cls("MlpPolicy", masked_env(), n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu")
        model.learn(128)
        trained.append(params(model))
    assert_same_parameters(*trained)


@pytest.mark.parametrize("policy_kwargs", [{}, {"shared_lstm": True, "enable_critic_lstm": False}])
def test_recurrent_safe_options_train_and_the_critic_group_holds_the_critic(policy_kwargs: dict[str, Any]):
    model = SafeRecurrentPPO("MlpLstmPolicy", "Pendulum-v1", policy_kwargs={**LSTM_POLICY, **policy_kwargs}, **LSTM, **ALL_ON)
    model.learn(128)
    assert model.last_update is not None and model.last_update.finite
    critic_group = next(g for g in model.policy.optimizer.param_groups if g.get("name") == "critic")
    critic = {id(p) for p in critic_group["params"]}
    names = {name for name, p in model.policy.named_parameters() if id(p) in critic}
    assert "value_net.weight" in names
    if policy_kwargs.get("shared_lstm"):
        assert not any(n.startswith("lstm") for n in names), "a shared LSTM stays with the actor"
    else:
        assert any(n.startswith("lstm_critic") for n in names)
        assert not any(n.startswith("lstm_actor") for n in names)


def test_maskable_safe_options_train():
    model = SafeMaskablePPO("MlpPolicy", masked_env(), n_steps=64, batch_size=32, n_epochs=2, seed=0, **ALL_ON)
    model.learn(128)
    assert model.last_update is not None and model.last_update.finite
    assert [g["name"] for g in model.policy.optimizer.param_groups] == ["actor", "critic"]


@pytest.mark.parametrize("cls", [SafeRecurrentPPO, SafeMaskablePPO])
def test_save_load_keeps_optimizer_groups_and_value_statistics(tmp_path: Path, cls: type[BaseAlgorithm]):
    policy, env = ("MlpLstmPolicy", "Pendulum-v1") if cls is SafeRecurrentPPO else ("MlpPolicy", masked_env())
    kwargs = {**LSTM, "policy_kwargs": LSTM_POLICY} if cls is SafeRecurrentPPO else dict(n_steps=64, batch_size=32, seed=0)
    model = cls(policy, env, **kwargs, **ALL_ON)
    model.learn(128)
    model.save(tmp_path / "model.zip")
    loaded = cls.load(tmp_path / "model.zip", device="cpu")
    a, b = params(model), params(loaded)
    assert a.keys() == b.keys() and all(th.equal(a[k], b[k]) for k in a)
    assert "value_normalizer.mean" in a and float(a["value_normalizer.count"]) > 1
    groups = [(g["name"], g["lr"], len(g["params"])) for g in loaded.policy.optimizer.param_groups]
    assert groups == [(g["name"], g["lr"], len(g["params"])) for g in model.policy.optimizer.param_groups]
    saved, restored = model.policy.optimizer.state_dict()["state"], loaded.policy.optimizer.state_dict()["state"]
    assert saved.keys() == restored.keys()
    assert all(th.equal(saved[i]["exp_avg"], restored[i]["exp_avg"]) for i in saved)


def test_masked_value_loss_ignores_padded_slots_even_when_they_are_inf():
    values = th.tensor([1.0, 2.0, float("inf"), 0.0], requires_grad=True)
    returns = th.tensor([0.0, 0.0, 0.0, 5.0])
    mask = th.tensor([True, True, False, False])
    kinds: tuple[Literal["mse", "huber", "blend"], ...] = ("mse", "huber", "blend")
    for kind in kinds:
        for clip in (None, 0.5):
            values.grad = None
            loss = value_loss(values, values.detach(), returns, kind, clip, 1.0, mask)
            loss.backward()
            assert values.grad is not None
            assert th.isfinite(loss) and th.isfinite(values.grad).all(), (kind, clip)
            assert values.grad[2] == 0 and values.grad[3] == 0, (kind, clip)
    values = values.detach()
    # by hand: mse over the valid slots = (1 + 4) / 2; huber (delta 1) = (0.5 + 1.5) / 2
    assert float(value_loss(values, values, returns, "mse", None, 1.0, mask)) == pytest.approx(2.5)
    assert float(value_loss(values, values, returns, "huber", None, 1.0, mask)) == pytest.approx(1.0)
    assert float(value_loss(values, values, returns, "blend", 0.5, 1.0, mask)) == pytest.approx(1.75)


def test_single_valid_entry_is_centred_not_divided_by_an_undefined_std():
    from sb3_safe.losses import normalize_advantages

    advantages = th.tensor([3.0, 0.0, 0.0])
    out = normalize_advantages(advantages, mask=th.tensor([True, False, False]))
    assert th.isfinite(out).all() and float(out[0]) == 0.0
    assert np.allclose(
        normalize_advantages(th.tensor([1.0, 3.0, 99.0]), mask=th.tensor([True, True, False]))[:2],
        [-0.7071, 0.7071],
        atol=1e-4,
    )
