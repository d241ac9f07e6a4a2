"""The run-folder owner: its layout, and readers that survive what a crash leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sb3_safe.bench import Job, _collect
from sb3_safe.errors import RunFolderError
from sb3_safe.runs import RunFolder, append_jsonl


def test_create_never_reuses_a_folder(tmp_path: Path):
    first = RunFolder.create(tmp_path, "Pendulum-v1", "hyperparams/safe.yml", 3)
    second = RunFolder.create(tmp_path, "Pendulum-v1", "hyperparams/safe.yml", 3)
    assert first.path != second.path and first.path.parent == tmp_path / "Pendulum-v1"
    assert first.path.name.startswith("safe-s3-")
    with pytest.raises(RunFolderError, match="already exists"):
        RunFolder.create(tmp_path, "Pendulum-v1", "safe", 0, run_dir=first.path)


def test_config_round_trip_and_containing(tmp_path: Path):
    folder = RunFolder.create(tmp_path, "CartPole-v1", "safe", 0)
    folder.write_config({"CartPole-v1": {"n_steps": 32}}, {"seed": 0}, ["sb3-safe", "train"])
    assert folder.read_config() == ("CartPole-v1", {"n_steps": 32}, {"seed": 0})
    folder.checkpoints_dir.mkdir()
    model = folder.checkpoint_path(5000)
    model.write_bytes(b"zip")
    assert RunFolder.containing(model) == folder
    assert RunFolder.containing(folder.path) == folder
    assert RunFolder.containing(tmp_path) is None
    assert "sb3-safe train" in folder.command_file.read_text()


def test_checkpoints_ignore_temporary_and_foreign_files(tmp_path: Path):
    folder = RunFolder(tmp_path)
    folder.checkpoints_dir.mkdir()
    for name in ("model_200_steps.zip", "model_1000_steps.zip", ".model_3000_steps.zip.abc.tmp", "model_x_steps.zip"):
        (folder.checkpoints_dir / name).write_bytes(b"")
    assert [steps for steps, _ in folder.checkpoints()] == [200, 1000]


def test_readers_tolerate_half_written_files(tmp_path: Path):
    folder = RunFolder(tmp_path)
    append_jsonl(folder.health_log, {"event": "rollback", "timestep": 10})
    with open(folder.health_log, "a") as f:
        f.write('{"event": "finding", "sever')  # killed mid-write
    assert folder.health_events() == [{"event": "rollback", "timestep": 10}]
    folder.result_file.write_text('{"eval_mean_return": 1')
    assert folder.read_result() is None
    folder.evaluations_file.parent.mkdir()
    folder.evaluations_file.write_bytes(b"PK\x03\x04 truncated")
    assert folder.evaluations() == ([], [])
    folder.config_file.write_text("Pendulum-v1: [")
    with pytest.raises(RunFolderError, match="cannot read"):
        folder.read_config()


def test_bench_collects_a_run_with_a_half_written_health_line(tmp_path: Path):
    job = Job("Pendulum-v1", "safe", "safe", 0, 1000)
    folder = RunFolder(job.run_dir(tmp_path))
    folder.path.mkdir(parents=True)
    folder.write_result({"eval_mean_return": -200.0, "steps_per_s": 100.0})
    folder.evaluations_file.parent.mkdir()
    np.savez(folder.evaluations_file, timesteps=np.array([500, 1000]), results=np.array([[-900.0], [-300.0]]))
    folder.health_log.write_text(json.dumps({"event": "rollback"}) + "\n" + '{"event": "find')
    row = _collect(job, tmp_path, threshold=-400.0)
    assert row["rollbacks"] == 1 and row["critical_findings"] == 0 and not row["crashed"]
    assert row["best_return"] == -300.0 and row["seconds_to_threshold"] == pytest.approx(10.0)
