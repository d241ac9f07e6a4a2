"""SafePPO: identical to PPO by default, and each new option doing what it says."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import LinearSchedule

from sb3_safe import SafePPO
from tests.algorithms import ALL_ON, assert_same_parameters, params

TINY: dict[str, Any] = dict(n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu", policy_kwargs=dict(net_arch=[16]))


@pytest.mark.parametrize(
    ("env_id", "extra"),
    [
        ("CartPole-v1", {}),
        ("Pendulum-v1", {"target_kl": 0.005}),
        ("Pendulum-v1", {"use_sde": True, "max_grad_norm": 0.3, "learning_rate": LinearSchedule(1e-3, 1e-4, 1.0)}),
    ],
)
def test_defaults_reproduce_ppo_bit_for_bit(env_id: str, extra: dict[str, Any]):
    trained = []
    for cls in (PPO, SafePPO):
        model = cls("MlpPolicy", env_id, **{**TINY, "n_steps": 128, "n_epochs": 3, **extra})
        model.learn(384)
        trained.append(params(model))
    assert_same_parameters(*trained)


def logged_keys(cls: type[PPO], tmp_path: Path, **kwargs: Any) -> set[str]:
    model = cls("MlpPolicy", "Pendulum-v1", **{**TINY, **kwargs})
    model.set_logger(configure(str(tmp_path / cls.__name__), ["csv"]))
    model.learn(128)
    with open(tmp_path / cls.__name__ / "progress.csv") as f:
        return set(next(csv.reader(f)))


def test_logs_every_ppo_key_and_more(tmp_path: Path):
    ppo_keys = logged_keys(PPO, tmp_path, clip_range_vf=0.1)
    safe_keys = logged_keys(SafePPO, tmp_path, clip_range_vf=0.1)
    assert ppo_keys <= safe_keys
    new = {
        "train/critic_learning_rate",
        "train/epochs_run",
        "train/skipped_updates",
        "train/advantages_mean",
        "train/advantages_std",
        "train/returns_mean",
        "train/values_mean",
        "train/rollout_reward_mean",
        "train/rollout_reward_std",
        "train/ratio_mean",
        "train/actor_grad_norm",
        "train/critic_grad_norm",
    }
    assert new <= safe_keys - ppo_keys


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize(
    "option",
    [
        {"value_loss": "huber"},
        {"value_loss": "blend", "clip_range_vf": 0.2},
        {"value_loss": "mse", "clip_range_vf": 0.2},
        {"critic_learning_rate": 1e-3},
        {"kl_stop": "epoch", "target_kl": 0.01},
        {"adv_norm_min_std": 0.01},
        {"normalize_value": True},
        ALL_ON,
    ],
    ids=["huber", "blend-clip", "mse-clip", "critic-lr", "kl-epoch", "min-std", "value-norm", "all"],
)
def test_every_option_trains(env_id: str, option: dict[str, Any]):
    model = SafePPO("MlpPolicy", env_id, **{**TINY, **option})
    before = params(model)
    model.learn(256)
    stats = model.last_update
    assert stats is not None
    assert stats.finite and stats.skipped_updates == 0
    assert stats.timesteps == 256
    changed = [k for k in before if not k.startswith("value_normalizer") and not th.equal(before[k], params(model)[k])]
    assert "value_net.weight" in changed and "action_net.weight" in changed


def test_critic_and_actor_learning_rates_differ_in_the_optimizer():
    model = SafePPO(
        "MlpPolicy",
        "Pendulum-v1",
        **TINY,
        learning_rate=LinearSchedule(1e-3, 1e-4, 1.0),
        critic_learning_rate=LinearSchedule(4e-3, 2e-3, 1.0),
    )
    model.learn(128)
    groups = {g["name"]: g for g in model.policy.optimizer.param_groups}
    # The last train() ran after 128 of 128 steps: progress_remaining 0, the schedules' end values.
    assert groups["actor"]["lr"] == pytest.approx(1e-4)
    assert groups["critic"]["lr"] == pytest.approx(2e-3)
    critic = {id(p) for p in groups["critic"]["params"]}
    policy = model.policy
    assert {id(p) for p in policy.value_net.parameters()} <= critic
    assert {id(p) for p in policy.mlp_extractor.value_net.parameters()} <= critic
    assert not {id(p) for p in policy.action_net.parameters()} & critic
    assert id(policy.log_std) not in critic
    assert len(critic) + sum(len(g["params"]) for g in groups.values() if g is not groups["critic"]) == len(
        list(policy.parameters())
    )
    assert model.last_update is not None
    assert model.last_update.critic_learning_rate == pytest.approx(2e-3)
    assert model.last_update.learning_rate == pytest.approx(1e-4)


def test_shared_features_extractor_stays_with_the_actor():
    model = SafePPO(
        "MlpPolicy",
        "CartPole-v1",
        **{**TINY, "policy_kwargs": dict(share_features_extractor=False)},
        critic_learning_rate=1e-3,
    )
    critic = {id(p) for g in model.policy.optimizer.param_groups if g["name"] == "critic" for p in g["params"]}
    assert {id(p) for p in model.policy.value_net.parameters()} <= critic


@pytest.mark.parametrize("kl_stop", ["epoch", "minibatch"])
def test_tiny_target_kl_stops_after_one_epoch(kl_stop: str):
    model = SafePPO("MlpPolicy", "CartPole-v1", **{**TINY, "n_epochs": 10}, kl_stop=kl_stop, target_kl=1e-12)
    model.learn(64)
    assert model.last_update is not None
    assert model.last_update.epochs_run == 1
    assert model._n_updates == 1


def test_epoch_rule_runs_every_epoch_under_a_loose_target():
    model = SafePPO("MlpPolicy", "CartPole-v1", **{**TINY, "n_epochs": 5}, kl_stop="epoch", target_kl=10.0)
    model.learn(64)
    assert model.last_update is not None
    assert model.last_update.epochs_run == 5


def test_epoch_rule_completes_the_epoch():
    # With a tiny target, SB3's minibatch rule steps on the first minibatch (its KL is exactly 0,
    # the policy has not moved yet) and stops before the second; the epoch rule applies the
    # whole first epoch (2 minibatches of 32) before stopping.
    steps = {}
    for rule in ("minibatch", "epoch"):
        model = SafePPO("MlpPolicy", "CartPole-v1", **TINY, kl_stop=rule, target_kl=1e-12)
        model.learn(64)
        weight = model.policy.action_net.weight
        assert isinstance(weight, th.nn.Parameter)
        steps[rule] = int(model.policy.optimizer.state[weight]["step"])
    assert steps == {"minibatch": 1, "epoch": 2}


def nan_gradient_hook(after: int):
    calls = {"n": 0}

    def hook(grad: th.Tensor) -> th.Tensor:
        calls["n"] += 1
        return grad * float("nan") if calls["n"] > after else grad

    return hook


def test_nan_gradients_never_reach_the_parameters():
    model = SafePPO("MlpPolicy", "Pendulum-v1", **TINY, **ALL_ON)
    before = params(model)
    model.policy.value_net.weight.register_hook(nan_gradient_hook(after=0))
    with pytest.warns(UserWarning, match="skipped an update") as record:
        model.learn(192)
    assert len([w for w in record if "skipped an update" in str(w.message)]) == 1, "warns once"
    after = params(model)
    for name in before:
        assert th.isfinite(after[name]).all(), name
        if not name.startswith("value_normalizer"):
            assert th.equal(before[name], after[name]), f"{name} changed although every step was skipped"
    assert model.policy.optimizer.state_dict()["state"] == {}, "optimizer state untouched"
    assert model.last_update is not None
    # 64 steps / batch 32 = 2 minibatches, 2 epochs (the epoch KL stop never fires: nothing moved)
    assert model.last_update.skipped_updates == 4


def test_one_bad_minibatch_is_skipped_and_training_goes_on():
    model = SafePPO("MlpPolicy", "CartPole-v1", **TINY)
    weight = model.policy.action_net.weight
    assert isinstance(weight, th.Tensor)
    weight.register_hook(nan_gradient_hook(after=2))
    with pytest.warns(UserWarning, match="skipped an update"):
        model.learn(64)
    assert model.last_update is not None
    assert model.last_update.skipped_updates == 2  # calls 3 and 4 of 4
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    assert model.policy.optimizer.state_dict()["state"], "the first two steps were taken"


def test_nan_loss_from_nan_return_is_skipped():
    class NanReturnPPO(SafePPO):
        def train(self) -> None:
            self.rollout_buffer.returns[3, 0] = np.nan
            super().train()

    model = NanReturnPPO("MlpPolicy", "Pendulum-v1", **TINY, normalize_value=True)
    with pytest.warns(UserWarning, match="skipped an update"):
        model.learn(64)
    assert model.last_update is not None
    assert model.last_update.skipped_updates == 2  # the minibatch holding the NaN, in each epoch
    normalizer = model.value_normalizer
    assert normalizer is not None and th.isfinite(normalizer.mean) and th.isfinite(normalizer.var)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_value_normalization_trains_on_normalized_targets():
    model = SafePPO("MlpPolicy", "Pendulum-v1", **TINY, normalize_value=True)
    model.learn(256)
    normalizer = model.value_normalizer
    assert normalizer is not None
    # Pendulum returns are in the hundreds below zero: the statistics must have moved there.
    assert normalizer.mean.item() < -10 and normalizer.std.item() > 1
    obs = th.as_tensor(model.get_env().reset(), dtype=th.float32)  # type: ignore[union-attr]
    with th.no_grad():
        true_scale = model.policy.predict_values(obs)
        with normalizer.raw_output():
            raw = model.policy.predict_values(obs)
    assert th.allclose(true_scale, normalizer.denormalize(raw))
    # GAE saw the true scale: rollout values and returns are on the same (large) scale.
    assert model.rollout_buffer.values.mean() < -10


@pytest.mark.parametrize("options", [{}, ALL_ON], ids=["defaults", "all"])
def test_save_load_round_trip_is_exact(tmp_path: Path, options: dict[str, Any]):
    model = SafePPO("MlpPolicy", "Pendulum-v1", **TINY, **options)
    model.learn(256)
    model.save(tmp_path / "model.zip")
    loaded = SafePPO.load(tmp_path / "model.zip", device="cpu")
    a, b = params(model), params(loaded)
    assert a.keys() == b.keys()
    assert all(th.equal(a[k], b[k]) for k in a)
    obs = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    assert np.array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    with th.no_grad():
        t = th.as_tensor(obs)
        assert th.equal(model.policy.predict_values(t), loaded.policy.predict_values(t))
    assert loaded.value_loss == model.value_loss and loaded.kl_stop == model.kl_stop
    assert [g["lr"] for g in loaded.policy.optimizer.param_groups] == [g["lr"] for g in model.policy.optimizer.param_groups]


def test_loaded_model_continues_with_both_learning_rates(tmp_path: Path):
    model = SafePPO("MlpPolicy", "Pendulum-v1", **TINY, critic_learning_rate=2e-3, learning_rate=5e-4)
    model.save(tmp_path / "m.zip")
    loaded = SafePPO.load(tmp_path / "m.zip", env=model.get_env(), device="cpu")
    loaded.learn(64)
    lrs = {g["name"]: g["lr"] for g in loaded.policy.optimizer.param_groups}
    assert lrs == {"actor": 5e-4, "critic": 2e-3}


def test_same_seed_same_parameters():
    runs = []
    for _ in range(2):
        model = SafePPO("MlpPolicy", "Pendulum-v1", **TINY, **ALL_ON)
        model.learn(256)
        runs.append(params(model))
    assert all(th.equal(runs[0][k], runs[1][k]) for k in runs[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"value_loss": "l2"}, "`value_loss` must be one of 'mse', 'huber', 'blend'; got 'l2'"),
        ({"kl_stop": "update"}, "`kl_stop` must be one of 'minibatch', 'epoch'"),
        ({"huber_delta": 0}, "`huber_delta` must be a number > 0; got 0"),
        ({"critic_learning_rate": -1e-3}, "`critic_learning_rate` must be a number > 0; got -0.001"),
        ({"adv_norm_min_std": -1}, "`adv_norm_min_std` must be a float >= 0"),
    ],
)
def test_bad_arguments_are_explained(kwargs: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        SafePPO("MlpPolicy", "CartPole-v1", **kwargs)
