"""The training pipeline end to end: run folders, checkpoints, resume, eval and the command line."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecNormalize

from sb3_safe import SafePPO
from sb3_safe.checkpoints import save_with_stats, stats_path_for
from sb3_safe.cli import main
from sb3_safe.config import load_config
from sb3_safe.envs import check_env_id
from sb3_safe.errors import ConfigError
from sb3_safe.runs import atomic_write
from sb3_safe.training import evaluate, train

# Observation normalization on (the Pendulum-v1 block trains on raw observations): the resume tests check both statistics.
SMALL = {
    "n_envs": 2,
    "n_steps": 64,
    "batch_size": 64,
    "n_epochs": 2,
    "policy_kwargs": {"net_arch": [16]},
    "normalize": {"norm_obs": True},
}


def small_config(env_id: str = "Pendulum-v1", profile: str = "safe", steps: int = 512):
    return load_config(profile, env_id, {**SMALL, "n_timesteps": steps})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    result = train(small_config(), seed=1, runs_root=root, save_freq=256, eval_freq=256, n_eval_episodes=1)
    return result.run_dir


def test_run_folder_has_every_artifact(finished_run: Path):
    names = {p.relative_to(finished_run).as_posix() for p in finished_run.rglob("*")}
    for expected in [
        "config.yml",
        "command.txt",
        "progress.csv",
        "result.json",
        "model.zip",
        "vecnormalize.pkl",
        "best_model.zip",
        "best_vecnormalize.pkl",
        "eval/evaluations.npz",
        "checkpoints/model_256_steps.zip",
        "checkpoints/vecnormalize_256_steps.pkl",
        "checkpoints/model_512_steps.zip",
        "checkpoints/vecnormalize_512_steps.pkl",
    ]:
        assert expected in names, expected
    assert any(name.startswith("tb/events.out.tfevents") for name in names)
    assert not [name for name in names if name.endswith(".tmp")], "no temporary files left"
    assert finished_run.parent.name == "Pendulum-v1" and finished_run.name.startswith("safe-s1-")
    with open(finished_run / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[-1]["time/total_timesteps"] == "512"
    assert "train/critic_grad_norm" in rows[-1]


def test_config_yml_is_a_profile_that_reproduces_the_run(finished_run: Path):
    data = yaml.safe_load((finished_run / "config.yml").read_text())
    assert data["run_info"]["seed"] == 1 and data["run_info"]["resumed_from"] is None
    again = load_config(str(finished_run / "config.yml"), "Pendulum-v1")
    assert again.n_timesteps == 512
    assert again.values["n_steps"] == 64 and again.values["value_loss"] == "blend"
    assert again.algorithm_kwargs() == small_config().algorithm_kwargs() | {
        k: v for k, v in again.algorithm_kwargs().items() if k not in small_config().algorithm_kwargs()
    }


def test_eval_uses_saved_statistics(finished_run: Path):
    result = evaluate(finished_run, episodes=2)
    assert np.isfinite(result.mean) and result.episodes == 2
    # Pendulum's true returns are in the hundreds below zero; normalized rewards would be near -10s.
    assert result.mean < -100
    assert evaluate(finished_run / "checkpoints" / "model_256_steps.zip", episodes=1).model_path.name == "model_256_steps.zip"


def test_eval_keeps_each_episode_and_one_seed_gives_the_same_episodes(finished_run: Path):
    """Two models on one seed meet the same starts: a paired comparison (make bench-recover) relies on it."""
    final = evaluate(finished_run, episodes=3, seed=7)
    assert len(final.returns) == 3
    assert final.mean == pytest.approx(np.mean(final.returns)) and final.std == pytest.approx(np.std(final.returns))
    assert evaluate(finished_run, episodes=3, seed=7).returns == final.returns
    assert evaluate(finished_run, episodes=3, seed=8).returns != final.returns


class RecordStart(BaseCallback):
    obs_rms: tuple[np.ndarray, np.ndarray, float]
    ret_rms: tuple[np.ndarray, np.ndarray, float]

    def _on_training_start(self) -> None:
        venv = self.model.get_vec_normalize_env()
        assert venv is not None
        self.start_timesteps = self.model.num_timesteps
        # learn() has reset the env, which adds the reset observations to the statistics
        self.reset_obs = venv.get_original_obs().copy()
        obs_rms = venv.obs_rms
        assert isinstance(obs_rms, RunningMeanStd)
        self.obs_rms = (obs_rms.mean.copy(), obs_rms.var.copy(), obs_rms.count)
        self.ret_rms = (venv.ret_rms.mean.copy(), venv.ret_rms.var.copy(), venv.ret_rms.count)

    def _on_step(self) -> bool:
        return True


def test_resume_continues_the_count_with_identical_statistics(finished_run: Path, tmp_path: Path):
    checkpoint = finished_run / "checkpoints" / "model_256_steps.zip"
    probe = RecordStart()
    config = load_config("safe", "Pendulum-v1", {**SMALL, "n_timesteps": 768})
    result = train(config, seed=1, runs_root=tmp_path, checkpoint=checkpoint, eval_freq=10_000, callbacks=[probe])
    assert probe.start_timesteps == 256
    assert result.num_timesteps == 768
    with open(stats_path_for(checkpoint), "rb") as f:
        saved = pickle.load(f)
    assert isinstance(saved, VecNormalize)
    assert probe.ret_rms == (saved.ret_rms.mean, saved.ret_rms.var, saved.ret_rms.count)
    obs_rms = saved.obs_rms
    assert isinstance(obs_rms, RunningMeanStd)
    obs_rms.update(probe.reset_obs)
    assert np.array_equal(probe.obs_rms[0], obs_rms.mean)
    assert np.array_equal(probe.obs_rms[1], obs_rms.var)
    assert probe.obs_rms[2] == obs_rms.count
    with open(result.run_dir / "progress.csv") as f:
        steps = [int(row["time/total_timesteps"]) for row in csv.DictReader(f)]
    assert steps[0] > 256 and steps[-1] == 768
    info = yaml.safe_load((result.run_dir / "config.yml").read_text())["run_info"]
    assert info["resumed_from"] == str(checkpoint.resolve()) and info["resumed_at_timestep"] == 256


def test_resume_beyond_the_budget_is_an_error(finished_run: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="nothing to train"):
        train(small_config(steps=512), runs_root=tmp_path, checkpoint=finished_run / "model.zip")
    assert not list(tmp_path.iterdir()), "no run folder is created for a run that cannot start"


def test_atomic_write_never_leaves_a_partial_file(tmp_path: Path):
    target = tmp_path / "model.zip"
    target.write_bytes(b"previous, complete")

    def crash(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_bytes() == b"previous, complete"
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]


def test_a_model_file_always_has_its_statistics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    venv = VecNormalize(SafePPO("MlpPolicy", "Pendulum-v1").get_env())  # type: ignore[arg-type]
    model = SafePPO("MlpPolicy", venv, n_steps=64, batch_size=64)

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed mid-save")

    monkeypatch.setattr(model, "save", crash)
    with pytest.raises(RuntimeError):
        save_with_stats(model, tmp_path / "model_64_steps.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vecnormalize_64_steps.pkl"]


def test_custom_environment_module_syntax():
    check_env_id("gymnasium.envs.classic_control:CartPole-v1")
    with pytest.raises(ConfigError, match="cannot import module 'not_a_package'"):
        check_env_id("not_a_package:CartPole-v1")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--env", "Pendulm-v1"], "unknown environment id 'Pendulm-v1'. Did you mean 'Pendulum-v1'?"),
        (["--set", "learnig_rate=1e-4"], "unknown key `learnig_rate`. Did you mean 'learning_rate'?"),
        (["--set", "learning_rate=-1"], "`learning_rate` = -1: must be a number > 0"),
        (["--profile", "safer"], "unknown profile 'safer'. Did you mean 'safe'?"),
        (["--checkpoint", "missing.zip"], "checkpoint 'missing.zip' does not exist"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], expected: str):
    code, _, err = run_cli(capsys, "train", "--runs-root", str(tmp_path), *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("sb3-safe: error: ")
    assert expected in err
    assert "Traceback" not in err


def test_cli_corrupt_checkpoint(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    corrupt = tmp_path / "model.zip"
    corrupt.write_bytes(b"PK\x03\x04 this is not a model")
    (tmp_path / "vecnormalize.pkl").write_bytes(b"junk")
    code, _, err = run_cli(capsys, "train", "--runs-root", str(tmp_path / "runs"), "--checkpoint", str(corrupt))
    assert code == 2
    assert "is damaged" in err and err.count("\n") == 1
    assert corrupt.read_bytes() == b"PK\x03\x04 this is not a model", "the input is left alone"


def test_cli_never_overwrites_a_run_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "model.zip").write_bytes(b"precious")
    code, _, err = run_cli(capsys, "train", "--run-dir", str(existing), "--timesteps", "64")
    assert code == 2 and "already exists" in err
    assert (existing / "model.zip").read_bytes() == b"precious"


def test_cli_train_then_eval(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    run_dir = tmp_path / "run"
    code, out, _ = run_cli(
        capsys,
        "train",
        "--env",
        "CartPole-v1",
        "--profile",
        "baseline",
        "--timesteps",
        "512",
        "--run-dir",
        str(run_dir),
        "--set",
        "policy_kwargs.net_arch=[16]",
        "--eval-freq",
        "100000",
    )
    assert code == 0, out
    assert "[100%] 512 of 512 steps" in out  # plain progress lines, not a bar, under CI
    assert (run_dir / "command.txt").read_text().strip().endswith("--eval-freq 100000")
    code, out, _ = run_cli(capsys, "eval", str(run_dir), "--episodes", "2")
    assert code == 0 and "mean return" in out


def test_a_budget_under_one_rollout_says_it_rounds_up_and_never_passes_100_percent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    """Acrobot-v1's profile block trains rollouts of 16 x 256 = 4,096 steps; 1,000 asked for is one rollout."""
    config = load_config("safe", "Acrobot-v1", {"n_timesteps": 1000})
    result = train(config, runs_root=tmp_path, progress_bar=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[") or "rounds up" in line]
    assert (
        lines[0]
        == "Training 4,096 steps: the budget of 1,000 rounds up to whole rollouts of 4,096 steps (16 envs x 256 steps)"
    )
    assert lines[-1].startswith("[100%] 4,096 of 4,096 steps")
    assert all(" of 4,096 steps" in line for line in lines[1:]) and len(lines) == 11
    # the default schedule evaluates at most once per rollout
    steps = np.load(result.run_dir / "eval" / "evaluations.npz")["timesteps"]
    assert steps.tolist() == [4096]
