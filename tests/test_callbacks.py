"""Health monitor and rollback, live: exact restores, NaN survived, plain PPO, running out of rollbacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecNormalize

from sb3_safe import SafePPO
from sb3_safe.bench import load_suite
from sb3_safe.callbacks import HealthMonitorCallback, NonFiniteGuardCallback, RollbackCallback, ScaledSchedule
from sb3_safe.config import load_config
from sb3_safe.faults import STRESSES, NonFiniteInjection, RewardOutliers, RewardScale, corrupt_gradients, stress_wrapper
from sb3_safe.health import HealthHistory
from sb3_safe.training import train

TINY: dict[str, Any] = dict(n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu", policy_kwargs=dict(net_arch=[16]))


def venv_with(wrapper: Any = None, n_envs: int = 2) -> VecNormalize:
    return VecNormalize(make_vec_env("Pendulum-v1", n_envs=n_envs, seed=0, wrapper_class=wrapper))


def obs_rms(venv: VecNormalize) -> RunningMeanStd:
    stats = venv.obs_rms
    assert isinstance(stats, RunningMeanStd)
    return stats


def test_restore_is_bit_for_bit():
    model = SafePPO("MlpPolicy", venv_with(), **TINY, normalize_value=True, critic_learning_rate=1e-3)
    model.learn(128)
    rollback = RollbackCallback()
    rollback.init_callback(model)
    snap = rollback.snapshot()
    venv = model.get_vec_normalize_env()
    assert venv is not None
    obs_mean = obs_rms(venv).mean.copy()
    model.learn(256, reset_num_timesteps=False)  # everything moves on
    assert not th.equal(snap.policy["value_net.weight"], model.policy.state_dict()["value_net.weight"])
    rollback.restore(snap)
    state = model.policy.state_dict()
    assert all(th.equal(snap.policy[k], state[k]) for k in state)
    assert "value_normalizer.mean" in state
    opt = model.policy.optimizer.state_dict()
    for key, saved in snap.optimizer["state"].items():
        for name, tensor in saved.items():
            assert th.equal(tensor, opt["state"][key][name])
    assert [g["lr"] for g in opt["param_groups"]] == [g["lr"] for g in snap.optimizer["param_groups"]]
    assert np.array_equal(obs_rms(venv).mean, obs_mean)


@pytest.mark.parametrize("target", ["obs", "reward"])
def test_injected_nan_ends_in_a_rollback_and_a_finished_run(target: str):
    env = venv_with(lambda e: NonFiniteInjection(e, at_step=300, target=target))  # type: ignore[arg-type]
    model = SafePPO("MlpPolicy", env, **TINY)
    monitor = HealthMonitorCallback(verbose=0)
    rollback = RollbackCallback(monitor=monitor, verbose=0)
    model.learn(1024, callback=[monitor, rollback])
    assert model.num_timesteps == 1024
    assert rollback.rollbacks >= 1 and not rollback.exhausted
    assert any(f.code == "non_finite" for f in monitor.findings)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    venv = model.get_vec_normalize_env()
    assert venv is not None and np.isfinite(obs_rms(venv).mean).all() and np.isfinite(venv.ret_rms.var)
    # learning rate halved once per rollback
    assert isinstance(model.lr_schedule, ScaledSchedule)
    assert model.lr_schedule(1.0) == pytest.approx(3e-4 * 0.5**rollback.rollbacks)


def test_plain_ppo_weights_are_restored_after_nan():
    # PPO has no update guard: a NaN reward reaches the weights, the rollback takes them back.
    env = venv_with(lambda e: NonFiniteInjection(e, at_step=200, target="reward"))
    model = PPO("MlpPolicy", env, **TINY)
    rollback = RollbackCallback(verbose=0)
    model.learn(1024, callback=rollback)
    assert rollback.rollbacks >= 1
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


class AlwaysNanRewardAfter(gym.Wrapper[Any, Any, Any, Any]):
    def __init__(self, env: gym.Env[Any, Any], after: int) -> None:
        super().__init__(env)
        self.after, self.steps = after, 0

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        return obs, (float("nan") if self.steps > self.after else reward), terminated, truncated, info


def test_running_out_of_rollbacks_stops_cleanly_with_the_last_healthy_model(tmp_path: Path):
    config = load_config(
        "safe",
        "Pendulum-v1",
        {"n_timesteps": 4096, "n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 1, "rollback": {"max_rollbacks": 2}},
    )
    result = train(
        config,
        runs_root=tmp_path,
        eval_freq=10**6,
        env_wrapper=lambda e: AlwaysNanRewardAfter(e, after=256),
        progress_bar=False,
    )
    assert result.stopped_early
    assert result.rollback is not None and result.rollback.rollbacks == 2
    assert result.num_timesteps < 4096
    assert (result.run_dir / "last_healthy_model.zip").is_file()
    assert (result.run_dir / "last_healthy_vecnormalize.pkl").is_file()
    events = [json.loads(line)["event"] for line in (result.run_dir / "health.jsonl").read_text().splitlines()]
    assert events.count("rollback") == 2 and events[-1] == "stopped"
    assert "last_healthy_model.zip" in result.rollback.summary
    assert all(th.isfinite(p).all() for p in result.model.policy.parameters())


def test_monitor_writes_logger_keys_and_jsonl(tmp_path: Path):
    model = SafePPO("MlpPolicy", "Pendulum-v1", **TINY)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    monitor = HealthMonitorCallback(verbose=0)
    corrupt_gradients(model.policy.value_net.weight, at_backward=3)
    with pytest.warns(UserWarning, match="skipped an update"):
        model.learn(256, callback=monitor)
    assert [f.code for f in monitor.findings] == ["non_finite"]
    assert monitor.findings[0].values["skipped_updates"] == 1.0
    lines = (tmp_path / "health.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["code"] == "non_finite"
    header = (tmp_path / "progress.csv").read_text().splitlines()[0]
    assert "health/non_finite" in header and "health/critical" in header
    assert len(monitor.history) == 4  # one row per update


def test_monitor_reads_plain_ppo_from_the_logger():
    model = PPO("MlpPolicy", "CartPole-v1", **TINY)
    monitor = HealthMonitorCallback(verbose=0)
    model.learn(256, callback=monitor)
    assert len(monitor.history) == 4
    assert {"approx_kl", "clip_fraction", "value_loss", "explained_variance", "timesteps"} <= set(monitor.history.last)


def test_fault_wrappers():
    env = RewardScale(gym.make("Pendulum-v1"), 100.0)
    env.reset(seed=0)
    raw = gym.make("Pendulum-v1")
    raw.reset(seed=0)
    assert env.step(np.zeros(1))[1] == pytest.approx(100.0 * float(raw.step(np.zeros(1))[1]))
    outliers = RewardOutliers(gym.make("Pendulum-v1"), probability=1.0, magnitude=1000.0, seed=0)
    outliers.reset(seed=0)
    assert abs(float(outliers.step(np.zeros(1))[1])) > 900
    nan = NonFiniteInjection(gym.make("Pendulum-v1"), at_step=2, target="obs")
    nan.reset(seed=0)
    assert np.isfinite(nan.step(np.zeros(1))[0]).all()
    assert np.isnan(nan.step(np.zeros(1))[0]).all()
    assert np.isfinite(nan.step(np.zeros(1))[0]).all()


def test_named_stresses_match_the_suite_and_place_one_step_faults_by_fraction():
    suite = load_suite(Path(__file__).parents[1] / "benchmarks" / "suites" / "full.yml")
    for name, spec in suite.stresses.items():
        expected = {k: v for k, v in STRESSES[name].items() if k != "at_fraction"}
        assert {k: v for k, v in spec.items() if k not in ("envs", "at_step")} == expected, name
    # the suite's nan-obs: step 10,000 of each of 4 copies in a 100,000-step Pendulum-v1 run
    nan = stress_wrapper("nan-obs", 100_000, 4)(gym.make("Pendulum-v1"))
    assert isinstance(nan, NonFiniteInjection) and nan.at_step == suite.stresses["nan-obs"]["at_step"] == 10_000
    scaled = stress_wrapper("reward-x100", 1000, 1)(gym.make("Pendulum-v1"))
    assert isinstance(scaled, RewardScale) and scaled.scale == 100.0


@pytest.mark.parametrize("target", ["obs", "reward"])
def test_safe_profile_survives_nan_with_evaluations_right_after_it(tmp_path: Path, target: str):
    # VecNormalize folds the NaN into its statistics at once; an evaluation in the same rollout
    # syncs them to the eval env. The rollback must repair them before that, or the eval crashes.
    config = load_config("safe", "Pendulum-v1", {"n_timesteps": 3072, "n_envs": 2, "n_steps": 256, "batch_size": 64})
    result = train(
        config,
        runs_root=tmp_path,
        eval_freq=64,
        n_eval_episodes=1,
        env_wrapper=lambda e: NonFiniteInjection(e, at_step=700, target=target),  # type: ignore[arg-type]
        progress_bar=False,
    )
    assert result.num_timesteps == 3072
    assert result.rollback is not None and result.rollback.rollbacks >= 1 and not result.stopped_early
    assert np.isfinite(result.eval_mean)
    assert all(th.isfinite(p).all() for p in result.model.policy.parameters())


def test_rollback_forgets_the_episodes_of_the_discarded_policy():
    model = SafePPO("MlpPolicy", "Pendulum-v1", **TINY)
    model.learn(256)
    rollback = RollbackCallback(verbose=0)
    rollback.init_callback(model)
    rollback.healthy = rollback.snapshot()
    assert model.ep_info_buffer  # one 200-step Pendulum episode finished
    rollback._roll_back([])
    assert model.ep_info_buffer is not None and len(model.ep_info_buffer) == 0
    assert rollback.rollbacks == 1


class TestSnapshotsVouchedForByTheirEpisodes:
    """A snapshot becomes the rollback target only once episodes played from it onwards look healthy."""

    @staticmethod
    def setup(**options: Any) -> tuple[SafePPO, RollbackCallback]:
        model = SafePPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2, seed=0), **TINY)
        monitor = HealthMonitorCallback(verbose=0)
        rollback = RollbackCallback(monitor, confirm_updates=0, verbose=0, **options)
        model._setup_learn(0)
        rollback.init_callback(model)
        rollback.on_training_start({}, {})
        # training went from -1000 to -200: a gain of 800
        monitor.history = HealthHistory.of({"ep_rew_mean": -1000.0 + 100.0 * i, "episodes": 50.0} for i in range(9))
        return model, rollback

    @staticmethod
    def finish_episodes(model: SafePPO, rollback: RollbackCallback, returns: list[float]) -> None:
        for ret in returns:  # env 0 finishes an episode every 200 steps
            model.num_timesteps += 2 * 200
            rollback.locals = {"dones": np.array([True, False]), "infos": [{"episode": {"r": ret, "l": 200}}, {}]}
            rollback.on_step()

    def test_collapsed_episodes_discard_the_snapshot(self):
        model, rollback = self.setup(confirm_episodes=2)
        model.num_timesteps = 1000
        rollback._advance()  # candidate at step 1000, waiting for episodes
        assert rollback.healthy is not None and rollback.healthy.timesteps == 0
        # the first episode started at step 0, before the candidate: it does not count
        self.finish_episodes(model, rollback, [-210.0, -950.0, -900.0])
        rollback._advance()  # mean -925 lost 91% of the gain: the step-1000 candidate is thrown away
        assert rollback.healthy.timesteps == 0
        self.finish_episodes(model, rollback, [-300.0, -250.0])
        rollback._advance()  # the candidate at 2200 has two episodes at -275 (9% lost): healthy
        assert rollback.healthy.timesteps == 2200

    def test_healthy_episodes_promote_the_snapshot(self):
        model, rollback = self.setup(confirm_episodes=2)
        model.num_timesteps = 1000
        rollback._advance()
        self.finish_episodes(model, rollback, [-1000.0, -400.0, -350.0])
        rollback._advance()
        assert rollback.healthy is not None and rollback.healthy.timesteps == 1000

    def test_without_episodes_a_snapshot_is_confirmed_after_confirm_max_updates(self):
        model, rollback = self.setup(confirm_episodes=2, confirm_max_updates=3)
        for update in range(1, 4):
            model.num_timesteps = 100 * update
            rollback._advance()
            assert rollback.healthy is not None and rollback.healthy.timesteps == 0
        model.num_timesteps = 400
        rollback._advance()  # the step-100 candidate has waited 3 updates
        assert rollback.healthy is not None and rollback.healthy.timesteps == 100

    def test_confirm_episodes_zero_is_updates_alone(self):
        model, rollback = self.setup(confirm_episodes=0)
        model.num_timesteps = 100
        rollback._advance()
        assert rollback.healthy is not None and rollback.healthy.timesteps == 100

    def test_bad_confirm_options(self):
        with pytest.raises(ValueError, match="confirm_max_updates"):
            RollbackCallback(confirm_updates=4, confirm_max_updates=2)
        with pytest.raises(ValueError, match="confirm_episodes"):
            RollbackCallback(confirm_episodes=-1)


def test_guard_alone_keeps_nan_out_without_a_rollback(tmp_path: Path):
    # rollback: false no longer turns off the protection against non-finite observations.
    config = load_config(
        "safe",
        "Pendulum-v1",
        {"n_timesteps": 1024, "n_envs": 2, "n_steps": 64, "batch_size": 64, "rollback": False, "guard": True},
    )
    result = train(
        config,
        runs_root=tmp_path,
        eval_freq=10**6,
        env_wrapper=lambda e: NonFiniteInjection(e, at_step=300, target="obs"),
        progress_bar=False,
    )
    assert result.rollback is None and result.num_timesteps == 1024
    assert result.monitor is not None and any(f.code == "non_finite" for f in result.monitor.findings)
    assert all(th.isfinite(p).all() for p in result.model.policy.parameters())


def test_guard_in_a_plain_sb3_script_warns_once_and_repairs_statistics():
    env = venv_with(lambda e: NonFiniteInjection(e, at_step=100, target="obs"))
    model = PPO("MlpPolicy", env, **TINY)
    guard = NonFiniteGuardCallback()
    with pytest.warns(UserWarning, match="non-finite obs at step"):
        model.learn(512, callback=guard)
    assert guard.repairs == 1  # both environments send their NaN observation in the same vector step
    assert np.isfinite(obs_rms(env).mean).all() and np.isfinite(obs_rms(env).var).all()


def test_guard_repairs_the_last_observation_a_truncation_bootstraps_from():
    """
    Pendulum-v1 truncates at 200 steps; a NaN in that step's observation is only in
    ``infos[i]["terminal_observation"]`` (the env has reset), and SB3 adds ``gamma * V(it)`` to the reward.
    """
    env = venv_with(lambda e: NonFiniteInjection(e, at_step=200, target="obs"))
    model = PPO("MlpPolicy", env, **TINY)
    guard = NonFiniteGuardCallback(verbose=0)
    model.learn(512, callback=guard)
    assert guard.repairs == 1
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_reward_outliers_come_at_different_steps_in_copies_seeded_apart():
    """A glitch in one simulator copy is not a glitch in all of them at the same step."""
    env = make_vec_env("Pendulum-v1", n_envs=4, seed=0, wrapper_class=lambda e: RewardOutliers(e, probability=0.05))
    env.reset()
    hits = np.array([np.abs(env.step(np.zeros((4, 1)))[1]) > 100 for _ in range(200)])
    assert hits.sum() > 20
    assert not (hits == hits[:, :1]).all()  # the copies' outlier steps differ
    again = make_vec_env("Pendulum-v1", n_envs=4, seed=0, wrapper_class=lambda e: RewardOutliers(e, probability=0.05))
    again.reset()
    same = np.array([np.abs(again.step(np.zeros((4, 1)))[1]) > 100 for _ in range(200)])
    np.testing.assert_array_equal(hits, same)  # and the same seeds draw the same outliers


def _feed(monitor: HealthMonitorCallback, returns: list[float]) -> dict[str, float]:
    """One rollout in which ``returns`` episodes ended (one step, one slot each), then the monitor's return row."""
    monitor.locals = {"dones": np.ones(len(returns), dtype=bool), "infos": [{"episode": {"r": r, "l": 100}} for r in returns]}
    monitor._on_step()
    return monitor._returns_row()


def test_the_training_return_at_thousands_of_episodes_per_update():
    """
    VMAS transport at 500 copies x 4 agents: 2,000 episodes end together, 9% of them successes; between
    those rollouts a few copies end early, and those are the successes. SB3's 100-episode window would see
    the last 100 slots; a window of the few would jump to the successes' return.
    """
    from stable_baselines3.common.logger import configure

    model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64)
    model.set_logger(configure(None, []))
    monitor = HealthMonitorCallback(verbose=0)
    monitor.init_callback(model)
    batch = [0.0] * 1820 + [1.0] * 180  # 9% successes
    full = _feed(monitor, batch)
    assert full["episodes"] == 2000
    assert full["ep_rew_mean"] == pytest.approx(140 / 1920)  # 40 cut from each end: 140 of the successes kept
    few = _feed(monitor, [1.0] * 10)  # the next rollout: 10 early successes
    assert few["episodes"] == 2000  # the window holds as many episodes as the most that ended in one rollout
    assert abs(few["ep_rew_mean"] - full["ep_rew_mean"]) < 0.01
    assert few["ep_rew_sem"] == pytest.approx(full["ep_rew_sem"], rel=0.1)
    # five outlier episodes of 1e6 among 2,000 move the trimmed mean by nothing
    outliers = _feed(monitor, [0.0] * 1815 + [1.0] * 180 + [1e6] * 5)
    assert outliers["ep_rew_mean"] < 0.1
    # no episode ended: the same measurement again (the detectors count it once)
    assert monitor._returns_row() == outliers
