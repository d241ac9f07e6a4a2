"""Snapshots as data (take, restore, write, read) and the model-free rule that confirms them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_safe import SafePPO
from sb3_safe.confirmation import SnapshotConfirmer
from sb3_safe.errors import CheckpointError
from sb3_safe.health import HealthHistory
from sb3_safe.snapshots import read_snapshot, restore_snapshot, take_snapshot, write_snapshot

TINY: dict[str, Any] = dict(n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu", policy_kwargs=dict(net_arch=[16]))


def healthy_above(level: float):
    return lambda mean: mean > level


class TestConfirmer:
    def test_updates_alone(self):
        confirmer: SnapshotConfirmer[str] = SnapshotConfirmer(confirm_updates=2, confirm_episodes=0, confirm_max_updates=10)
        assert confirmer.add(100, "a", healthy_above(0)) is None
        assert confirmer.add(200, "b", healthy_above(0)) is None
        assert confirmer.add(300, "c", healthy_above(0)) == "a"  # "a" survived two more updates
        assert confirmer.add(400, "d", healthy_above(0)) == "b"

    def test_episodes_started_after_the_candidate_judge_it(self):
        confirmer: SnapshotConfirmer[str] = SnapshotConfirmer(confirm_updates=0, confirm_episodes=2, confirm_max_updates=10)
        judged: list[float] = []

        def judge(mean: float) -> bool:
            judged.append(mean)
            return mean > -500

        assert confirmer.add(1000, "a", judge) is None  # no episodes yet
        confirmer.episode_finished(0, -100.0)  # started before "a": not its episode
        confirmer.episode_finished(1000, -900.0)
        confirmer.episode_finished(1400, -800.0)
        assert confirmer.add(2000, "b", judge) is None  # "a" judged on -850: collapsed, discarded
        assert judged == [-850.0]
        confirmer.episode_finished(2000, -300.0)
        confirmer.episode_finished(2400, -200.0)
        assert confirmer.add(3000, "c", judge) == "b"  # "b" judged on -250
        assert judged == [-850.0, -250.0]
        # "c" (step 3000) is the oldest candidate left: the episodes that started before it are dropped
        confirmer.episode_finished(3000, -100.0)
        assert confirmer.add(4000, "d", judge) is None  # one episode of "c" so far: it waits
        assert confirmer.episodes == [(3000, -100.0)]

    def test_short_of_episodes_confirmed_after_max_updates(self):
        confirmer: SnapshotConfirmer[str] = SnapshotConfirmer(confirm_updates=0, confirm_episodes=3, confirm_max_updates=2)
        assert confirmer.add(1, "a", healthy_above(0)) is None
        assert confirmer.add(2, "b", healthy_above(0)) is None
        assert confirmer.add(3, "c", healthy_above(0)) == "a"  # "a" waited 2 updates

    def test_clear_forgets_everything(self):
        confirmer: SnapshotConfirmer[str] = SnapshotConfirmer(confirm_updates=1, confirm_episodes=1, confirm_max_updates=5)
        confirmer.add(1, "a", healthy_above(0))
        confirmer.episode_finished(1, 5.0)
        confirmer.clear()
        assert not confirmer.candidates and not confirmer.episodes


def test_snapshot_write_read_restore_bit_for_bit(tmp_path: Path):
    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    model = SafePPO("MlpPolicy", venv, **TINY, normalize_value=True, critic_learning_rate=1e-3)
    model.learn(128)
    health = HealthHistory.of([{"ep_rew_mean": -900.0, "episodes": 30.0}, {"ep_rew_mean": -800.0, "episodes": 30.0}])
    snapshot = take_snapshot(model, health=health)
    health.push({"ep_rew_mean": 0.0, "episodes": 30.0})  # the snapshot holds a copy
    write_snapshot(snapshot, tmp_path / "snap.pt")
    model.learn(256, reset_num_timesteps=False)
    loaded = read_snapshot(tmp_path / "snap.pt")
    assert loaded.timesteps == snapshot.timesteps == 128
    assert loaded.health is not None and len(loaded.health) == 2 and loaded.health.best_return == -800.0
    restore_snapshot(model, loaded)
    state = model.policy.state_dict()
    assert all(th.equal(snapshot.policy[key], state[key]) for key in state)
    saved_state = snapshot.optimizer["state"]
    now_state = model.policy.optimizer.state_dict()["state"]
    assert all(th.equal(saved_state[k][name], now_state[k][name]) for k in saved_state for name in saved_state[k])
    assert loaded.vec_normalize is not None
    assert (venv.obs_rms.mean == loaded.vec_normalize["obs_rms"].mean).all()  # type: ignore[attr-defined]


def test_damaged_snapshot_is_a_checkpoint_error(tmp_path: Path):
    (tmp_path / "snap.pt").write_bytes(b"not a snapshot")
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_snapshot(tmp_path / "snap.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_snapshot(tmp_path / "missing.pt")
