"""Checkpoint retention: a size budget, and the checkpoints a recovery needs kept whatever else goes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sb3_safe.checkpoints import AtomicCheckpointCallback
from sb3_safe.config import load_config
from sb3_safe.errors import ConfigError
from sb3_safe.retention import checkpoints_to_keep, plan_retention, protected_steps
from sb3_safe.runs import RunFolder, read_jsonl
from sb3_safe.training import train

MB = 2**20


def test_everything_fits_the_budget_so_everything_stays():
    sizes = dict.fromkeys(range(2, 101, 2), MB)
    plan = plan_retention(sizes, budget_bytes=50 * MB)
    assert plan.kept == set(sizes) and plan.deleted == {}


def test_past_the_budget_older_ones_are_thinned_and_the_protected_stay():
    sizes = dict.fromkeys(range(2, 101, 2), MB)  # 50 checkpoints of 1 MiB
    protect = {62: "the newest checkpoint before the onset of policy_blowup (critical)", 30: "the best evaluation"}
    plan = plan_retention(sizes, budget_bytes=12 * MB, protect=protect)
    assert sum(sizes[s] for s in plan.kept) <= 12 * MB
    assert {100, 62, 30} <= plan.kept
    assert set(plan.deleted) == set(sizes) - plan.kept
    assert all("over the checkpoint budget of 12.0 MB" in why for why in plan.deleted.values())
    # the thinning is the doubling rule: every doubling of the distance back from the newest keeps one
    for k in range(5):
        low, high = 100 - 2 * 2 ** (k + 1), 100 - 2 * 2**k
        assert any(low < s <= high for s in plan.kept), (k, sorted(plan.kept))
    # protected ones alone over the budget: the oldest protected go first, never the newest
    tight = plan_retention(sizes, budget_bytes=2 * MB, protect=protect)
    assert tight.kept == {62, 100}
    assert "protected as the best evaluation" in tight.deleted[30]


def test_a_count_bound_still_applies():
    sizes = dict.fromkeys(range(1, 201), 1)
    plan = plan_retention(sizes, keep=3, protect={150: "x"})
    assert plan.kept == checkpoints_to_keep(list(sizes), keep=3, protect=[150])


def test_protected_steps_are_the_newest_before_each_event():
    steps = [2, 4, 6, 8]
    assert protected_steps(steps, {5: "onset", 8: "best", 1: "too early"}) == {4: "onset", 8: "best"}


def _fake_checkpoint(folder: Path, step: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"model_{step}_steps.zip").write_bytes(b"x" * size)
    (folder / f"vecnormalize_{step}_steps.pkl").write_bytes(b"y" * 10)


def test_the_transport_run_keeps_what_recovery_needs(tmp_path: Path):
    """
    The 100M-step baseline on VMAS transport saved every 2M steps; its policy blew up at ~63M, reported
    at 64M (onset 62.9M). With a budget of 12 checkpoints, at the end the one before the onset (62M) and
    the one before the best evaluation (40M) are there, the folder is within its budget, and every
    deletion is in health.jsonl with its reason.
    """
    size = 860_000  # bytes of one checkpoint of the run's 64x64 MAPPO policy
    folder = RunFolder(tmp_path / "run")
    events: dict[int, str] = {}
    callback = AtomicCheckpointCallback(
        1,
        folder.checkpoints_dir,
        events=lambda: dict(events),
        budget_mb=12 * (size + 10) / MB,
        log=folder.health_log,
    )
    for step in range(2_000_000, 100_000_001, 2_000_000):
        _fake_checkpoint(folder.checkpoints_dir, step, size)
        callback.num_timesteps = step
        events.clear()
        if step == 40_000_000:
            events[step] = "the checkpoint before the best evaluation"
        if step == 64_000_000:
            events[62_900_000] = "the newest checkpoint before the onset of policy_blowup (critical)"
        callback._prune()
    kept = [s for s, _ in folder.checkpoints()]
    assert 62_000_000 in kept and 40_000_000 in kept and kept[-1] == 100_000_000
    assert len(kept) <= 12
    deleted = [e for e in read_jsonl(folder.health_log) if e["event"] == "checkpoint_deleted"]
    assert len(deleted) == 50 - len(kept)
    assert {e["checkpoint"] for e in deleted}.isdisjoint(kept)
    assert all("budget" in e["reason"] for e in deleted)
    # companions go with their model
    assert sorted(p.name for p in folder.checkpoints_dir.glob("vecnormalize_*")) == sorted(
        f"vecnormalize_{s}_steps.pkl" for s in kept
    )


def test_a_budget_too_small_for_two_checkpoints_is_refused_before_any_folder(tmp_path: Path):
    config = load_config("safe", "Pendulum-v1", {"n_timesteps": 256, "checkpoint_budget_mb": 0.01})
    with pytest.raises(ConfigError, match=r"`checkpoint_budget_mb` = 0.01: must hold at least two checkpoints"):
        train(config, runs_root=tmp_path / "runs", progress_bar=False)
    assert not (tmp_path / "runs").exists()


def test_a_real_run_logs_nothing_deleted_under_the_default_budget(tmp_path: Path):
    config = load_config("safe", "Pendulum-v1", {"n_timesteps": 2048, "n_envs": 2, "n_steps": 64, "batch_size": 64})
    result = train(config, runs_root=tmp_path, save_freq=256, eval_freq=10**6, progress_bar=False)
    folder = RunFolder(result.run_dir)
    assert [s for s, _ in folder.checkpoints()] == list(range(256, 2049, 256))
    assert not any(e["event"] == "checkpoint_deleted" for e in read_jsonl(folder.health_log))
    assert json.loads((folder.path / "result.json").read_text())["num_timesteps"] == 2048
