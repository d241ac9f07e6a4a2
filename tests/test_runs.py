"""The run-folder owner: its layout, and readers that survive what a crash leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sb3_safe.bench import Job, _collect
from sb3_safe.checkpoints import checkpoints_to_keep, monitor_state_path_for, stats_path_for
from sb3_safe.config import load_config
from sb3_safe.errors import RunFolderError
from sb3_safe.runs import RunFolder, append_jsonl, chain_evaluations, free_path
from sb3_safe.training import train


def test_create_never_reuses_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("time.strftime", lambda _: "20261203-101010")  # three runs started in the same second
    first = RunFolder.create(tmp_path, "Pendulum-v1", "hyperparams/safe.yml", 3)
    second = RunFolder.create(tmp_path, "Pendulum-v1", "hyperparams/safe.yml", 3)
    third = RunFolder.create(tmp_path, "Pendulum-v1", "hyperparams/safe.yml", 3)
    # one naming rule for a taken name, here and in free_path: -2, -3, ...
    assert [f.path.name for f in (first, second, third)] == [
        "safe-s3-20261203-101010",
        "safe-s3-20261203-101010-2",
        "safe-s3-20261203-101010-3",
    ]
    assert free_path(first.path).name == "safe-s3-20261203-101010-4"
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


def test_a_run_continued_twice_is_judged_on_all_its_evaluations(tmp_path: Path):
    """A suite interrupted twice: the run folder holds the third part; the first two are its resume chain."""
    job = Job("Pendulum-v1", "baseline", "baseline", 0, 6000)
    run = RunFolder(job.run_dir(tmp_path))
    parts = [RunFolder(run.path.with_name(f"{run.path.name}.part{i}")) for i in (1, 2)] + [run]
    evaluations = [
        ([1000, 2000, 3000], [-1200.0, -200.0, -150.0]),
        ([3000, 4000], [-160.0, -1300.0]),
        ([5000, 6000], [-1400.0, -1500.0]),
    ]
    for index, (folder, (steps, means)) in enumerate(zip(parts, evaluations, strict=True)):
        folder.path.mkdir(parents=True)
        # each part continued from the checkpoint at 2000 and 4000: the first part's evaluation at 3000 is redone
        source = None if index == 0 else parts[index - 1].checkpoint_path(2000 * index)
        if source is not None:
            source.parent.mkdir()
            source.write_bytes(b"zip")
        folder.write_config({"Pendulum-v1": {}}, {"seed": 0, "resumed_from": source and str(source)}, ["sb3-safe", "bench"])
        folder.evaluations_file.parent.mkdir()
        np.savez(folder.evaluations_file, timesteps=np.array(steps), results=np.array(means)[:, None])
    run.write_result({"eval_mean_return": -1500.0, "steps_per_s": 100.0})

    assert chain_evaluations(run.path) == (
        [1000, 2000, 3000, 4000, 5000, 6000],
        [-1200.0, -200.0, -160.0, -1300.0, -1400.0, -1500.0],
    )
    row = _collect(job, tmp_path, threshold=-400.0)
    # the last part alone (-1400, -1500) neither reached the threshold nor fell from a best
    assert row["best_return"] == -160.0 and row["first_return"] == -1200.0 and row["collapsed"]
    assert row["seconds_to_threshold"] == pytest.approx(20.0)


def prune_after_every_save(saves: range, keep: int) -> list[int]:
    present: list[int] = []
    for step in saves:
        present.append(step)
        present = sorted(checkpoints_to_keep(present, keep))
    return present


def test_retention_keeps_newest_spaced_oldest_and_protected():
    saves = range(1000, 200_001, 1000)  # 200 saves, every 1,000 steps
    kept = checkpoints_to_keep(list(saves), keep=3, protect=[150_500 - 500])
    assert {198_000, 199_000, 200_000, 150_000, 1000} <= kept  # the newest, the last healthy one, the oldest
    for present in (sorted(kept), prune_after_every_save(saves, keep=3)):
        newest = present[-1]
        for k in range(8):  # every doubling band back from the newest holds a checkpoint
            low, high = newest - 1000 * 2 ** (k + 1), newest - 1000 * 2**k
            assert any(low < s <= high for s in present), (k, present)
        assert len(present) <= 3 + 1 + 2 * 8
    # pruning after every save keeps exactly what one pass over all of them keeps
    assert prune_after_every_save(saves, keep=3) == sorted(checkpoints_to_keep(list(saves), keep=3))
    # a run ten times longer keeps only a few more files
    assert len(prune_after_every_save(range(1000, 2_000_001, 1000), keep=3)) <= len(kept) + 7
    assert checkpoints_to_keep([], keep=3) == set()
    assert checkpoints_to_keep([500], keep=1) == {500}


def test_pruning_deletes_only_what_the_rule_drops(tmp_path: Path):
    config = load_config(
        "safe", "Pendulum-v1", {"n_timesteps": 4096, "n_envs": 2, "n_steps": 64, "batch_size": 64, "keep_checkpoints": 2}
    )
    result = train(config, runs_root=tmp_path, save_freq=256, eval_freq=10**6, progress_bar=False)
    folder = RunFolder(result.run_dir)
    steps = [s for s, _ in folder.checkpoints()]
    assert steps == prune_after_every_save(range(256, 4097, 256), keep=2) or set(steps) > set(
        prune_after_every_save(range(256, 4097, 256), keep=2)
    )  # plus, at most, the last healthy one
    assert len(steps) < 16 and steps[-1] == 4096 and steps[0] == 256
    for _, path in folder.checkpoints():  # every kept checkpoint is complete
        assert stats_path_for(path).is_file() and monitor_state_path_for(path).is_file()
    leftovers = [
        p.name for p in folder.checkpoints_dir.iterdir() if not any(p.name.endswith(f"_{s}_steps{p.suffix}") for s in steps)
    ]
    assert leftovers == []


def test_resume_carries_the_monitor_history(tmp_path: Path):
    config = load_config("safe", "Pendulum-v1", {"n_timesteps": 2048, "n_envs": 2, "n_steps": 64, "batch_size": 64})
    first = train(config, runs_root=tmp_path, save_freq=1024, eval_freq=10**6, progress_bar=False)
    assert first.monitor is not None
    checkpoint = RunFolder(first.run_dir).checkpoint_path(1024)
    saved = json.loads(monitor_state_path_for(checkpoint).read_text())["health"]
    assert saved["count"] == 1024 // 128 - 1  # saved during the rollout that precedes the 8th update
    resumed = train(
        config.with_overrides({"n_timesteps": 3072}),
        runs_root=tmp_path,
        checkpoint=checkpoint,
        eval_freq=10**6,
        progress_bar=False,
    )
    assert resumed.monitor is not None
    assert len(resumed.monitor.history) == saved["count"] + (3072 - 1024) // 128
    assert resumed.monitor.history.first == saved["first"]  # the start of the run, not of the resume


def test_resuming_removes_what_a_killed_checkpoint_write_left(tmp_path: Path):
    """A SIGKILL between writing a checkpoint's temporary file and renaming it leaves the file; opening the run removes it."""
    config = load_config("safe", "Pendulum-v1", {"n_timesteps": 1024, "n_envs": 2, "n_steps": 64, "batch_size": 64})
    first = train(config, runs_root=tmp_path, save_freq=512, eval_freq=10**6, progress_bar=False)
    folder = RunFolder(first.run_dir)
    stale = folder.checkpoints_dir / ".model_1024_steps.zip.k1ll3d.tmp"
    stale.write_bytes(b"half a zip")
    kept = {path.name for path in folder.checkpoints_dir.iterdir()} - {stale.name}
    train(config.with_overrides({"n_timesteps": 1536}), runs_root=tmp_path, checkpoint=folder.checkpoint_path(512))
    assert not stale.exists()
    assert {path.name for path in folder.checkpoints_dir.iterdir()} == kept


def test_train_takes_one_settings_object_or_its_fields_by_name(tmp_path: Path):
    from sb3_safe.training import TrainSettings

    config = load_config("safe", "CartPole-v1", {"n_timesteps": 256, "n_envs": 2, "n_steps": 64, "batch_size": 64})
    settings = TrainSettings(seed=3, runs_root=tmp_path, eval_freq=10**6, progress_bar=False)
    result = train(config, settings, run_dir=tmp_path / "named")
    assert result.run_dir == tmp_path / "named"
    assert RunFolder(result.run_dir).read_config()[2]["seed"] == 3
    with pytest.raises(TypeError, match="'eval_frequency'"):
        train(config, settings, eval_frequency=10)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_written_whole_get_the_mode_the_users_umask_gives(tmp_path: Path, umask: int):
    import os

    from sb3_safe.files import atomic_write

    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "result.json", lambda tmp: tmp.write_text("{}"))
        (tmp_path / "plain.txt").write_text("")  # what any other write of the user's gets
    finally:
        os.umask(previous)
    mode = (tmp_path / "result.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask == (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt", "result.json"]  # no temporary file left
