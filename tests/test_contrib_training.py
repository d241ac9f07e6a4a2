"""The recurrent and masked algorithms through profiles, training, evaluation, rollback and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_checker import check_env

from sb3_safe import SafeMaskablePPO, SafeRecurrentPPO
from sb3_safe.cli import main
from sb3_safe.config import load_config
from sb3_safe.errors import ConfigError
from sb3_safe.faults import NonFiniteInjection
from sb3_safe.tasks import MaskedMaze
from sb3_safe.training import evaluate, train

TINY_LSTM = {
    "n_envs": 2,
    "n_steps": 64,
    "batch_size": 64,
    "n_epochs": 2,
    "policy_kwargs": {"lstm_hidden_size": 8, "net_arch": [8]},
}


def test_profiles_build_the_contrib_classes():
    for env_id, cls in [
        ("PendulumNoVel-v1", SafeRecurrentPPO),
        ("CartPoleNoVel-v1", SafeRecurrentPPO),
        ("MaskedMaze-v0", SafeMaskablePPO),
    ]:
        for profile in ("safe", "baseline"):
            assert load_config(profile, env_id).algorithm_class is cls


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algo": "safe_recurrent_ppo"}, "`policy` = 'MlpPolicy' does not go with algo: safe_recurrent_ppo"),
        ({"policy": "MlpLstmPolicy"}, "`policy` = 'MlpLstmPolicy' does not go with algo: safe_ppo"),
        ({"policy_kwargs": {"lstm_hidden_size": 8}}, "`policy_kwargs.lstm_hidden_size` is for recurrent policies"),
        ({"algo": "safe_maskable_ppo", "use_sde": True}, "has no gSDE"),
        ({"algo": "recurrent_ppo", "policy": "MlpLstmPolicy"}, "is an sb3-safe option but `algo` is recurrent_ppo"),
    ],
)
def test_algo_and_policy_mismatches_are_one_line_errors(overrides: dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        load_config("safe", "Pendulum-v1", overrides)
    assert "\n" not in str(error.value)


def test_an_rl_zoo_ppo_lstm_block_loads_as_plain_recurrent_ppo(tmp_path: Path):
    """rl-zoo's ppo_lstm.yml names no algo (its file does): an Lstm policy means RecurrentPPO."""
    zoo = tmp_path / "ppo_lstm.yml"
    zoo.write_text(
        "CartPoleNoVel-v1:\n  n_envs: 8\n  n_timesteps: !!float 1e5\n  policy: 'MlpLstmPolicy'\n  n_steps: 32\n"
        "  batch_size: 256\n  learning_rate: lin_0.001\n  clip_range: lin_0.2\n"
        '  policy_kwargs: "dict(enable_critic_lstm=False, lstm_hidden_size=16)"\n'
    )
    config = load_config(str(zoo), "CartPoleNoVel-v1")
    assert config.algo == "recurrent_ppo" and config.values["policy_kwargs"]["lstm_hidden_size"] == 16


def test_no_velocity_variants_zero_the_velocities():
    for env_id, zeroed in [("CartPoleNoVel-v1", [1, 3]), ("PendulumNoVel-v1", [2]), ("MountainCarContinuousNoVel-v0", [1])]:
        env = gym.make(env_id)
        obs, _ = env.reset(seed=0)
        for _ in range(5):
            obs, *_ = env.step(env.action_space.sample())
            assert np.all(obs[zeroed] == 0.0), env_id
        kept = [i for i in range(len(obs)) if i not in zeroed]
        assert np.any(obs[kept] != 0.0)


def test_masked_maze_masks_walls_and_always_has_a_path():
    env = MaskedMaze(size=5, wall_fraction=0.4)
    check_env(env)
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        walls = obs[25:].reshape(5, 5).astype(bool)
        assert not walls[0, 0] and not walls[4, 4]
        masks = env.action_masks()
        # up and left leave the grid from the start corner
        assert not masks[0] and not masks[2]
        assert masks[1] == (not walls[1, 0]) and masks[3] == (not walls[0, 1])
    # an invalid move leaves the agent in place and costs a step
    env.reset(seed=0)
    obs, reward, terminated, truncated, _ = env.step(np.int64(0))
    assert obs[0] == 1.0 and reward == -0.01 and not terminated and not truncated


@pytest.mark.parametrize("env_id", ["CartPoleNoVel-v1", "MaskedMaze-v0"])
def test_safe_profile_trains_evaluates_and_diagnoses(tmp_path: Path, env_id: str, capsys: pytest.CaptureFixture[str]):
    extra = TINY_LSTM if "NoVel" in env_id else {"n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 2}
    config = load_config("safe", env_id, {**extra, "n_timesteps": 512})
    result = train(config, seed=0, runs_root=tmp_path, eval_freq=256, save_freq=256, n_eval_episodes=2, progress_bar=False)
    assert result.num_timesteps >= 512 and np.isfinite(result.eval_mean)
    assert isinstance(result.model, SafeRecurrentPPO if "NoVel" in env_id else SafeMaskablePPO)
    assert evaluate(result.run_dir, episodes=2).episodes == 2
    assert main(["diagnose", str(result.run_dir)]) == 0
    assert "Verdict:" in capsys.readouterr().out
    # resume under the same profile, one checkpoint in
    checkpoint = result.run_dir / "checkpoints" / "model_256_steps.zip"
    resumed = train(config.with_overrides({"n_timesteps": 768}), runs_root=tmp_path, checkpoint=checkpoint, progress_bar=False)
    assert resumed.num_timesteps >= 768


def test_recurrent_rollback_restores_and_training_goes_on(tmp_path: Path):
    config = load_config("safe", "PendulumNoVel-v1", {**TINY_LSTM, "n_timesteps": 1536, "normalize": False})
    result = train(
        config,
        runs_root=tmp_path,
        eval_freq=10_000,
        n_eval_episodes=1,
        env_wrapper=lambda e: NonFiniteInjection(e, at_step=300, target="reward"),
        progress_bar=False,
    )
    assert result.rollback is not None and result.rollback.rollbacks >= 1 and not result.stopped_early
    assert result.num_timesteps >= 1536
    assert all(th.isfinite(p).all() for p in result.model.policy.parameters())


def test_recurrent_baseline_checkpoint_resumes_under_safe(tmp_path: Path):
    """The recovery path for a recurrent run: optimizer groups rebuilt, reward normalization switched on."""
    from sb3_safe.build import build_run

    baseline = load_config("baseline", "PendulumNoVel-v1", {**TINY_LSTM, "n_timesteps": 256})
    run = train(baseline, seed=0, runs_root=tmp_path, eval_freq=10_000, save_freq=128, progress_bar=False).run_dir
    safe = load_config("safe", "PendulumNoVel-v1", {**TINY_LSTM, "n_timesteps": 512})
    built = build_run(safe, seed=0, checkpoint=run / "checkpoints" / "model_128_steps.zip")
    assert isinstance(built.model, SafeRecurrentPPO)
    assert [g["name"] for g in built.model.policy.optimizer.param_groups] == ["actor", "critic"]
    assert any("optimizer rebuilt with 2 parameter groups" in c for c in built.resume_changes)
    assert any("reward normalization on" in c for c in built.resume_changes)
    built.model.learn(128, reset_num_timesteps=False)
    assert all(th.isfinite(p).all() for p in built.model.policy.parameters())
    built.close()
