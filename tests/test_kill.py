"""Checkpoints under SIGKILL: a training process killed at random moments, resumed each time from its newest checkpoint."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_safe import SafePPO
from sb3_safe.checkpoints import monitor_state_path_for, stats_path_for
from sb3_safe.runs import RunFolder

SAVE_FREQ = 256
ROLLOUT = 2 * 64  # n_envs * n_steps


def _command(run_dir: Path, timesteps: int, checkpoint: Path | None) -> list[str]:
    command = [sys.executable, "-m", "sb3_safe", "train", "--env", "Pendulum-v1", "--profile", "safe"]
    command += ["--timesteps", str(timesteps), "--n-envs", "2", "--set", "n_steps=64", "--set", "batch_size=64"]
    command += ["--save-freq", str(SAVE_FREQ), "--eval-freq", "1000000", "--keep-checkpoints", "3", "--run-dir", str(run_dir)]
    return command + ([] if checkpoint is None else ["--checkpoint", str(checkpoint)])


def _last_logged_step(folder: RunFolder) -> int:
    steps = 0
    try:
        with open(folder.progress_csv, newline="") as f:
            for row in csv.DictReader(f):
                value = row.get("time/total_timesteps") or ""
                if value.strip().isdigit():
                    steps = int(value)
    except (OSError, csv.Error):
        pass
    return steps


def _wait_for_checkpoints(folder: RunFolder, process: subprocess.Popen[bytes], count: int, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while len(folder.checkpoints()) < count and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


def test_sigkill_at_random_moments_leaves_only_loadable_checkpoints(tmp_path: Path):
    rng = random.Random(7)  # seeded moments of death
    env = {**os.environ, "CI": "true", "OMP_NUM_THREADS": "1"}
    checkpoint: Path | None = None
    for kill in range(3):
        folder = RunFolder(tmp_path / f"run{kill}")
        start = 0 if checkpoint is None else int(checkpoint.name.split("_")[1])
        process = subprocess.Popen(
            _command(folder.path, start + 200_000, checkpoint), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _wait_for_checkpoints(folder, process, count=2)  # the process is training and saving
        time.sleep(rng.uniform(0.0, 1.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, process.stderr.read().decode() if process.stderr else ""

        found = folder.checkpoints()
        assert found, f"kill {kill}: no checkpoint was written"
        for steps, path in found:  # every checkpoint present is complete and loads
            assert stats_path_for(path).is_file() and monitor_state_path_for(path).is_file()
            venv = VecNormalize.load(
                str(stats_path_for(path)), DummyVecEnv([lambda: __import__("gymnasium").make("Pendulum-v1")])
            )
            model = SafePPO.load(path, env=venv, device="cpu")
            assert model.num_timesteps == steps
        # temporary files are never taken for checkpoints, and at most one save interval is lost
        assert all(not p.name.startswith("model_") or p.suffix == ".zip" for p in folder.checkpoints_dir.iterdir())
        newest = found[-1][0]
        assert _last_logged_step(folder) - newest <= SAVE_FREQ + ROLLOUT
        checkpoint = found[-1][1]

    assert checkpoint is not None
    newest = int(checkpoint.name.split("_")[1])
    final = RunFolder(tmp_path / "final")
    done = subprocess.run(_command(final.path, newest + 512, checkpoint), env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert final.read_result() is not None
    assert final.read_config()[2]["resumed_from"] == str(checkpoint.resolve())
