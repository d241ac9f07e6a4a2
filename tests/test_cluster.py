"""Benchmark suites and tuning workers on a Ray cluster (``--ray``), simulated on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import optuna
import pytest
import torch as th

from sb3_safe.bench import Job, RaySettings, Suite, run_suite
from sb3_safe.cli import main
from sb3_safe.cluster import (
    ATTEMPTS_ACTOR,
    SCRATCH_PREFIX,
    pack_folder,
    remove_stale_scratch,
    run_jobs_on_ray,
    unpack_folder,
)
from sb3_safe.runs import RunFolder
from tests.extras import require
from tests.test_tuning import POSTGRES_URL, settings

if TYPE_CHECKING:
    from ray.cluster_utils import Cluster

SUITE = Suite(
    name="tiny",
    seeds=[0, 1],
    configs={"safe": "safe"},
    envs={"CartPole-v1": {"timesteps": 768}},
    n_evaluations=2,
    eval_episodes=2,
)
ROW_KEYS = ("env", "config", "seed", "crashed", "final_return", "best_return", "first_return", "collapsed", "rollbacks")


@pytest.fixture(scope="module")
def ray() -> ModuleType:
    """Ray (the ``cluster`` extra): missing, the tests that need it fail naming the extra."""
    return require("ray", "cluster")


def _cluster(**head: Any) -> Cluster:
    from ray.cluster_utils import Cluster

    return Cluster(initialize_head=True, head_node_args={"include_dashboard": False, **head})


@pytest.fixture(scope="module")
def two_nodes(ray: ModuleType) -> Iterator[Cluster]:
    """A head and a second node of one CPU each, on loopback, as two machines would be."""
    cluster = _cluster(num_cpus=1)
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_a_suite_on_two_nodes_gives_the_rows_of_local_workers(tmp_path: Path, two_nodes: Cluster):
    local = run_suite(SUITE, tmp_path / "local", workers=1)
    on_ray = run_suite(SUITE, tmp_path / "ray", ray=RaySettings(two_nodes.address))
    assert [{k: row[k] for k in ROW_KEYS} for row in on_ray] == [{k: row[k] for k in ROW_KEYS} for row in local]
    assert [row["retried"] for row in on_ray] == [False, False]
    # every run folder came back whole, and nothing half-written was left beside them
    for seed in (0, 1):
        run = tmp_path / "ray" / "runs" / "CartPole-v1" / f"safe-s{seed}"
        assert (run / "result.json").is_file() and (run / "model.zip").is_file()
    assert not list((tmp_path / "ray").rglob(".incoming-*"))
    # a resumed suite skips the finished runs
    again = run_suite(SUITE, tmp_path / "ray", ray=RaySettings(two_nodes.address))
    assert [row["final_return"] for row in again] == [row["final_return"] for row in on_ray]


def _wait_until_both_runs_started(ray: ModuleType) -> bool:
    """Poll the suite's attempt counter until both runs have begun training (bounded: 2 minutes)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(ATTEMPTS_ACTOR)]
        if names and ray.get(ray.get_actor(names[0]).started.remote()) == 2:
            return True
        time.sleep(0.2)
    return False


def test_a_node_that_dies_mid_suite_has_its_run_retried_on_another(tmp_path: Path, ray: ModuleType):
    """
    A head that runs no task and two one-CPU nodes: once both runs are under way one node is removed;
    its run is retried on the other node, and the suite ends with every run present once, marked retried.
    """
    ray.shutdown()
    cluster = _cluster(num_cpus=0)
    doomed = cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        rows: list[dict[str, Any]] = []
        settings = RaySettings(cluster.address)
        suite = threading.Thread(target=lambda: rows.extend(run_suite(SUITE, tmp_path / "out", ray=settings)))
        suite.start()
        assert _wait_until_both_runs_started(ray), "the runs did not start within 2 minutes"
        cluster.remove_node(doomed)
        suite.join(timeout=600)
        assert not suite.is_alive()
        assert [row["crashed"] for row in rows] == [False, False]
        assert sorted(row["retried"] for row in rows) == [False, True]
        runs = sorted(p.name for p in (tmp_path / "out" / "runs" / "CartPole-v1").iterdir())
        assert runs == ["safe-s0", "safe-s1"]
        assert not list((tmp_path / "out").rglob(".incoming-*"))
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_with_a_shared_out_a_retried_run_goes_on_from_its_checkpoint(tmp_path: Path, ray: ModuleType):
    """
    ``--ray-shared-out``: runs write into the suite's folder. A node removed once both runs have a checkpoint
    there: its run is retried on the other node and resumes from its newest checkpoint (the part it came
    from kept as ``<run>.part1``), not from the start.
    """
    suite = Suite(
        name="shared",
        seeds=[0, 1],
        configs={"safe": "safe"},
        envs={"CartPole-v1": {"timesteps": 4096}},
        n_evaluations=4,
        eval_episodes=2,
    )
    ray.shutdown()
    cluster = _cluster(num_cpus=0)
    doomed = cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    out = tmp_path / "shared"
    runs = out / "runs" / "CartPole-v1"
    try:
        rows: list[dict[str, Any]] = []
        settings = RaySettings(cluster.address, shared_out=True)
        thread = threading.Thread(target=lambda: rows.extend(run_suite(suite, out, ray=settings)))
        thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until both runs have written a checkpoint to the shared folder
            if all(list((runs / f"safe-s{seed}" / "checkpoints").glob("model_*_steps.zip")) for seed in (0, 1)):
                break
            time.sleep(0.1)
        cluster.remove_node(doomed)
        thread.join(timeout=600)
        assert not thread.is_alive()
        assert sorted(row["retried"] for row in rows) == [False, True]
        assert [row["crashed"] for row in rows] == [False, False]
        (part,) = sorted(runs.glob("*.part1"))
        resumed = RunFolder(runs / part.name.removesuffix(".part1"))
        info = resumed.read_config()[2]
        assert info["resumed_from"] is not None and Path(info["resumed_from"]).is_relative_to(part)
        assert info["resumed_at_timestep"] > 0
        assert resumed.read_result() is not None
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_run_folder_travels_whole_and_never_overwrites(tmp_path: Path):
    source = tmp_path / "source" / "safe-s0"
    (source / "checkpoints").mkdir(parents=True)
    (source / "result.json").write_text('{"eval_mean_return": 1.0}')
    (source / "checkpoints" / "model_5_steps.zip").write_bytes(b"zip" * 1000)
    data = pack_folder(source)
    target = tmp_path / "out" / "runs" / "safe-s0"
    target.parent.mkdir(parents=True)
    unpack_folder(data, target)
    assert (target / "checkpoints" / "model_5_steps.zip").read_bytes() == b"zip" * 1000
    with pytest.raises(FileExistsError):
        unpack_folder(data, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["safe-s0"]


@pytest.mark.skipif(
    POSTGRES_URL is None and not os.environ.get("CI"),
    reason="no PostgreSQL: set SB3_SAFE_TEST_POSTGRES_URL (.ci/run installs and starts one) to run this test",
)
def test_tuning_workers_on_ray_share_one_postgresql_study(tmp_path: Path, two_nodes: Cluster):
    from sb3_safe.tuning import run_tuning

    assert POSTGRES_URL is not None, "CI must provide SB3_SAFE_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)"
    name = f"ray-test-{os.getpid()}-{time.time_ns()}"
    study = run_tuning(settings(tmp_path, trials=4, workers=2, storage=POSTGRES_URL, study_name=name, ray=two_nodes.address))
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) >= 4
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both workers ran trials
    optuna.delete_study(study_name=name, storage=POSTGRES_URL)


@pytest.mark.skipif(
    POSTGRES_URL is None and not os.environ.get("CI"),
    reason="no PostgreSQL: set SB3_SAFE_TEST_POSTGRES_URL (.ci/run installs and starts one) to run this test",
)
def test_a_tuning_worker_killed_mid_trial_on_ray_has_its_trial_retried(tmp_path: Path, two_nodes: Cluster):
    """
    The Ray task of the only worker is killed (SIGKILL) while its trial trains. Ray runs the task again; the
    new worker fails the stale trial once its heartbeat is 2 s old and reruns its parameters, as without Ray.
    """
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from sb3_safe.tuning import run_tuning
    from sb3_safe.tuning.study import open_study

    assert POSTGRES_URL is not None
    name = f"ray-kill-{os.getpid()}-{time.time_ns()}"
    config = settings(
        tmp_path,
        trials=1,
        workers=1,
        timesteps=4096,
        storage=POSTGRES_URL,
        study_name=name,
        heartbeat_interval=1,
        ray=two_nodes.address,
    )
    tuning = threading.Thread(target=run_tuning, args=(config,))
    tuning.start()
    study = open_study(config)
    victim = None
    for _ in range(1200):  # up to 2 minutes until the trial trains in a Ray worker
        running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
        if running and "worker" in running[0].user_attrs and len(running[0].params) == 4:
            victim = int(running[0].user_attrs["worker"].rsplit(":", 1)[1])
            break
        time.sleep(0.1)
    assert victim is not None, "no trial started"
    os.kill(victim, signal.SIGKILL)
    tuning.join(timeout=300)
    assert not tuning.is_alive()
    trials = optuna.load_study(study_name=name, storage=POSTGRES_URL).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert retried and retried[0].params == trials[0].params
    assert retried[0].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    optuna.delete_study(study_name=name, storage=POSTGRES_URL)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tune", "--env", "CartPole-v1", "--ray"], "--ray with the default SQLite file"),
        (["tune", "--env", "CartPole-v1", "--ray", "--storage", "study.log"], "a journal study is one machine's file"),
        (["bench", "SUITE", "--ray", "127.0.0.1:9"], "--ray '127.0.0.1:9': nothing answers at 127.0.0.1:9"),
        (["bench", "SUITE", "--ray", "ray://nowhere"], "expected auto, HOST:PORT or ray://HOST:PORT"),
    ],
)
def test_ray_mistakes_are_one_line_and_create_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
):
    suite = tmp_path / "suite.yml"
    suite.write_text("seeds: [0]\nconfigs: {safe: safe}\nenvs: {CartPole-v1: {timesteps: 256}}\n")
    out = tmp_path / "out"
    argv = [str(suite) if a == "SUITE" else a for a in argv] + ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_without_ray_the_error_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "ray", None)
    suite = tmp_path / "suite.yml"
    suite.write_text("seeds: [0]\nconfigs: {safe: safe}\nenvs: {CartPole-v1: {timesteps: 256}}\n")
    assert main(["bench", str(suite), "--ray", "--out", str(tmp_path / "out")]) == 2
    assert "pip install 'sb3-safe[cluster]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _jobs(n: int) -> list[Job]:
    return [Job("CartPole-v1", "safe", "safe", seed, 256) for seed in range(n)]


def test_ray_gpus_ask_each_run_to_train_on_cuda(tmp_path: Path, ray: ModuleType, monkeypatch: pytest.MonkeyPatch):
    """A GPU Ray schedules by (declared here: no hardware needed), and the device each run is asked to train on."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # Ray refuses declared GPUs that it is told are hidden
    ray.shutdown()
    cluster = _cluster(num_cpus=1, num_gpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:

        def fake_run(job: Job, out: Path, n_evaluations: int, eval_episodes: int, device: str) -> dict[str, Any]:
            return {"env": job.env_label, "config": job.config, "seed": job.seed, "crashed": False, "device": device}

        records = run_jobs_on_ray(fake_run, _jobs(2), tmp_path, 1, 1, shared_out=True, gpus=0.5)
        assert [r["device"] for r in records] == ["cuda", "cuda"]
        assert [r["device"] for r in run_jobs_on_ray(fake_run, _jobs(1), tmp_path, 1, 1, shared_out=True)] == ["cpu"]
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a GPU: on a machine with one, every run reports cuda:0")
def test_ray_gpus_train_on_the_gpu(tmp_path: Path, two_nodes: Cluster):
    rows = run_suite(SUITE, tmp_path / "gpu", ray=RaySettings(two_nodes.address, gpus=0.5))
    assert [row["device"] for row in rows] == ["cuda:0", "cuda:0"]


def test_a_run_that_fails_after_its_retries_is_a_failed_row_and_the_others_finish(tmp_path: Path, two_nodes: Cluster):
    def fails_for_seed_1(job: Job, out: Path, n_evaluations: int, eval_episodes: int, device: str) -> dict[str, Any]:
        if job.seed == 1:
            raise RuntimeError("the node's disk is gone")
        return {"env": job.env_label, "config": job.config, "seed": job.seed, "crashed": False}

    records = run_jobs_on_ray(fails_for_seed_1, _jobs(3), tmp_path, 1, 1)
    by_seed = {r["seed"]: r for r in records}
    assert sorted(by_seed) == [0, 1, 2]
    assert not by_seed[0].get("failed") and not by_seed[2].get("failed")
    assert by_seed[1]["failed"] and by_seed[1]["crashed"]
    assert "failed on Ray after its retries" in by_seed[1]["error"] and "the node's disk is gone" in by_seed[1]["error"]


def test_a_partial_folder_in_the_way_is_set_aside_and_the_run_lands(tmp_path: Path, two_nodes: Cluster):
    """An interrupted local run left runs/CartPole-v1/safe-s0 (a checkpoint, no result): kept as .part1, not an abort."""
    out = tmp_path / "out"
    partial = out / "runs" / "CartPole-v1" / "safe-s0"
    (partial / "checkpoints").mkdir(parents=True)
    (partial / "checkpoints" / "model_128_steps.zip").write_bytes(b"an earlier part")
    stale = out / "runs" / "CartPole-v1" / ".incoming-0123"  # a driver killed while unpacking
    stale.mkdir()
    rows = run_suite(SUITE, out, ray=RaySettings(two_nodes.address))
    assert [row["crashed"] for row in rows] == [False, False]
    assert (partial / "result.json").is_file()
    assert (partial.with_name("safe-s0.part1") / "checkpoints" / "model_128_steps.zip").read_bytes() == b"an earlier part"
    assert not stale.exists()


def test_scratch_folders_of_dead_workers_are_removed(tmp_path: Path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    gone = tmp_path / f"{SCRATCH_PREFIX}{dead.stdout.strip()}-abc"
    alive = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-def"
    for folder in (gone, alive):
        (folder / "runs").mkdir(parents=True)
    assert remove_stale_scratch(tmp_path) == [gone]
    assert alive.is_dir() and not gone.exists()


def test_every_dead_tuning_worker_is_reported(two_nodes: Cluster):
    def worker(settings: Any) -> None:
        if settings["die"]:
            raise MemoryError("out of memory")

    from sb3_safe.cluster import run_workers_on_ray

    assert run_workers_on_ray(worker, {"die": False}, 2) == []
    errors = run_workers_on_ray(worker, {"die": True}, 2)
    assert len(errors) == 2 and errors[0].startswith("worker 0: ") and "out of memory" in errors[1]
