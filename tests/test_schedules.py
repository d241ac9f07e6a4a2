"""The KL-adaptive learning rate: the rule by hand, then live in SafePPO (optimizer, logs, save/load, rollback)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_safe import SafePPO
from sb3_safe.build import build_run
from sb3_safe.callbacks import HealthMonitorCallback, RollbackCallback
from sb3_safe.config import load_config
from sb3_safe.faults import NonFiniteInjection
from sb3_safe.schedules import AdaptiveLearningRate, adapt_learning_rate
from sb3_safe.snapshots import read_snapshot, restore_snapshot, take_snapshot, write_snapshot
from sb3_safe.training import train

TINY: dict[str, Any] = dict(n_steps=64, batch_size=64, n_epochs=4, seed=0, device="cpu", policy_kwargs=dict(net_arch=[16]))


class TestRule:
    @pytest.mark.parametrize(
        ("kl", "expected"),
        [
            (0.03, 1e-3 / 1.5),  # above 2 * 0.01: down
            (0.0201, 1e-3 / 1.5),
            (0.02, 1e-3),  # the band's edges keep the rate
            (0.01, 1e-3),
            (0.005, 1e-3),
            (0.0049, 1e-3 * 1.5),  # below 0.01 / 2: up
            (0.0, 1e-3),  # no move at all (a policy that did not change) is not "too small a step"
            (float("nan"), 1e-3 / 1.5),  # a skipped update counts as too far
            (float("inf"), 1e-3 / 1.5),
        ],
    )
    def test_band(self, kl: float, expected: float):
        assert adapt_learning_rate(1e-3, kl, desired_kl=0.01, factor=1.5) == pytest.approx(expected, rel=1e-15)

    def test_bounds(self):
        assert adapt_learning_rate(1.2e-5, 1.0, 0.01, factor=2.0, min_lr=1e-5) == 1e-5
        assert adapt_learning_rate(8e-3, 1e-6, 0.01, factor=2.0, max_lr=1e-2) == 1e-2


class TestAdaptiveLearningRate:
    def test_callable_like_a_schedule_and_updated(self):
        rate = AdaptiveLearningRate(1e-3, desired_kl=0.01, factor=2.0)
        assert rate(1.0) == rate(0.0) == 1e-3
        assert rate.update(0.001) == 2e-3 and rate(0.5) == 2e-3
        assert rate.update(0.5) == 1e-3

    def test_back_off_lowers_rate_and_ceiling(self):
        rate = AdaptiveLearningRate(4e-3, max_lr=8e-3, factor=2.0)
        rate.back_off(0.5)
        assert (rate.value, rate.max_lr) == (2e-3, 4e-3)
        rate.update(0.0001)
        rate.update(0.0001)
        assert rate.value == 4e-3  # held at the lowered ceiling
        tiny = AdaptiveLearningRate(1e-5, min_lr=1e-5, max_lr=1e-5)
        tiny.back_off(0.5)
        assert (tiny.value, tiny.max_lr) == (1e-5, 1e-5)

    def test_state_round_trip_and_pickle(self):
        rate = AdaptiveLearningRate(1e-3)
        rate.update(0.001)
        state = rate.state()
        copy = pickle.loads(pickle.dumps(rate))
        assert copy.value == rate.value and copy.max_lr == rate.max_lr
        other = AdaptiveLearningRate(1e-3)
        other.load_state(state)
        assert other.value == rate.value

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            (dict(initial=-1e-3), "`initial` must be a finite number > 0"),
            (dict(desired_kl=0.0), "`desired_kl` must be a finite number > 0"),
            (dict(factor=1.0), "`factor` must be a number > 1"),
            (dict(initial=0.1), "outside [min_lr, max_lr]"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, float], message: str):
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            AdaptiveLearningRate(**kwargs)


class RecordRates(BaseCallback):
    """Per update: the actor group's rate the update used, the critic group's, and the KL it reached."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[float, float, float]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        update = getattr(self.model, "last_update", None)
        if update is not None and len(self.rows) < update.n_updates:
            groups = self.model.policy.optimizer.param_groups
            self.rows.append((groups[0]["lr"], groups[-1]["lr"], update.approx_kl))


def test_safe_ppo_follows_the_rule_update_by_update():
    rate = AdaptiveLearningRate(1e-3, desired_kl=0.002, factor=1.5)
    model = SafePPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2, seed=0), learning_rate=rate, **TINY)
    assert model.learning_rate is not rate  # the model's own copy
    record = RecordRates()
    model.learn(64 * 2 * 12, callback=record)
    rates = [actor for actor, _, _ in record.rows]
    assert len(rates) >= 10 and len(set(rates)) > 2  # it moved, both ways or one
    expected = 1e-3
    for actor, critic, kl in record.rows:
        assert actor == pytest.approx(expected, rel=1e-12) and critic == actor  # one group follows the rate
        expected = adapt_learning_rate(expected, kl, 0.002, 1.5)
    assert rate.value == 1e-3  # the object given is untouched
    # the last update (after the last rollout start) used the rate the rule gave, and logged it
    assert model.last_update is not None and model.last_update.learning_rate == pytest.approx(expected, rel=1e-12)
    assert model.logger.name_to_value["train/learning_rate"] == pytest.approx(expected, rel=1e-12)


def test_critic_group_keeps_its_own_rate():
    model = SafePPO(
        "MlpPolicy",
        make_vec_env("Pendulum-v1", n_envs=2, seed=0),
        learning_rate=AdaptiveLearningRate(1e-3, desired_kl=0.002),
        critic_learning_rate=7e-4,
        **TINY,
    )
    record = RecordRates()
    model.learn(64 * 2 * 6, callback=record)
    assert {critic for _, critic, _ in record.rows} == {7e-4}
    assert len({actor for actor, _, _ in record.rows}) > 1


def test_save_load_keeps_the_adapted_rate(tmp_path: Path):
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = SafePPO("MlpPolicy", env, learning_rate=AdaptiveLearningRate(1e-3, desired_kl=0.002), **TINY)
    model.learn(64 * 2 * 6)
    adapted = model.learning_rate
    assert isinstance(adapted, AdaptiveLearningRate) and adapted.value != 1e-3
    model.save(tmp_path / "model")
    loaded = SafePPO.load(tmp_path / "model", env=env)
    assert isinstance(loaded.learning_rate, AdaptiveLearningRate)
    assert loaded.learning_rate.state() == adapted.state()
    assert loaded.lr_schedule(1.0) == adapted.value
    loaded.learn(64 * 2, reset_num_timesteps=False)
    assert loaded.learning_rate.value == adapt_learning_rate(
        adapted.value, loaded.last_update.approx_kl if loaded.last_update else np.nan, 0.002
    )


def test_snapshot_restores_the_rate(tmp_path: Path):
    model = SafePPO(
        "MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2, seed=0), learning_rate=AdaptiveLearningRate(1e-3), **TINY
    )
    rate = model.learning_rate
    assert isinstance(rate, AdaptiveLearningRate)
    snapshot = take_snapshot(model)
    write_snapshot(snapshot, tmp_path / "snap.pt")
    rate.update(1.0)
    rate.back_off(0.5)
    restore_snapshot(model, read_snapshot(tmp_path / "snap.pt"))
    assert rate.state() == {"value": 1e-3, "max_lr": 1e-2}


def test_rollback_backs_off_rate_and_ceiling():
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0, wrapper_class=lambda e: NonFiniteInjection(e, at_step=300))
    model = SafePPO("MlpPolicy", env, learning_rate=AdaptiveLearningRate(1e-3, max_lr=2e-3), **TINY)
    monitor = HealthMonitorCallback(verbose=0)
    rollback = RollbackCallback(monitor=monitor, lr_factor=0.5, verbose=0)
    model.learn(1024, callback=[monitor, rollback])
    rate = model.learning_rate
    assert isinstance(rate, AdaptiveLearningRate)
    assert rollback.rollbacks >= 1
    assert rate.max_lr == pytest.approx(2e-3 * 0.5**rollback.rollbacks)
    assert rate.value <= rate.max_lr
    assert model.lr_schedule(1.0) == rate.value  # not wrapped in a ScaledSchedule as well


def test_resume_continues_the_adapted_rate(tmp_path: Path):
    small = {"n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 4, "policy_kwargs": {"net_arch": [16]}}
    adaptive = {"learning_rate": "adaptive_1e-3", "desired_kl": 0.002, "adaptive_lr_max": 1e-2}
    run = train(load_config("safe", "Pendulum-v1", {**small, **adaptive, "n_timesteps": 768}), seed=0, runs_root=tmp_path)
    trained = SafePPO.load(run.run_dir / "model.zip").learning_rate
    assert isinstance(trained, AdaptiveLearningRate) and trained.value != 1e-3
    built = build_run(
        load_config("safe", "Pendulum-v1", {**small, **adaptive, "n_timesteps": 2048}),
        seed=0,
        checkpoint=run.run_dir / "model.zip",
    )
    rate = built.model.learning_rate
    assert isinstance(rate, AdaptiveLearningRate) and rate.value == trained.value
    assert any("adaptive learning rate continues at" in change for change in built.resume_changes)
    built.close()
