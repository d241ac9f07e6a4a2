"""
Work that outgrows one machine, on a Ray cluster (``--ray [ADDRESS]``; ``pip install 'sb3-safe[cluster]'``).

- :func:`run_jobs_on_ray`: each run of a benchmark suite is one Ray task (one CPU, retried on another
  node when its node dies). Without a shared filesystem the task trains into a temporary folder on
  its node and returns the finished run folder packed (``tar.gz`` bytes through Ray's object store);
  the driver unpacks it beside ``--out`` and renames it into place, so ``--out`` never holds a half
  written run. With ``shared_out`` the task writes into ``--out`` directly, and a retried run goes
  on from its newest checkpoint there (:mod:`sb3_safe.bench`).
- :func:`run_workers_on_ray`: tuning workers as Ray tasks, every one joining the study's RDB storage
  (Optuna's way of spreading a study over machines; Ray only starts the workers).

Nothing imports Ray unless ``--ray`` is given. Start a cluster with ``ray start --head`` on one
machine and ``ray start --address HEAD:6379`` on the others; ``--ray auto`` joins it from any of
them, ``--ray ray://HEAD:10001`` from outside (Ray Client), and ``--ray`` alone starts a local Ray.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sb3_safe.errors import ConfigError, MissingDependencyError
from sb3_safe.runs import set_aside_interrupted

__all__ = [
    "ATTEMPTS_ACTOR",
    "LOCAL",
    "SCRATCH_PREFIX",
    "connect",
    "pack_folder",
    "remove_stale_incoming",
    "remove_stale_scratch",
    "run_jobs_on_ray",
    "run_workers_on_ray",
    "unpack_folder",
]

#: ``--ray`` without an address: start a Ray instance on this machine
LOCAL = "local"
#: Name prefix of the actor that counts each run's starts (``started()``: how many runs began)
ATTEMPTS_ACTOR = "sb3-safe-attempts"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(
            "--ray needs Ray: pip install 'sb3-safe[cluster]' (or pip install ray), on every machine of the cluster"
        ) from None
    return ray


def _check_reachable(address: str) -> None:
    """A host:port that nothing answers on is a one-line error now, not a minute of Ray's retries."""
    host_port = address.removeprefix("ray://")
    host, sep, port = host_port.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(
            f"--ray {address!r}: expected auto, HOST:PORT or ray://HOST:PORT (e.g. ray://127.0.0.1:10001), "
            "or --ray alone for a local Ray"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except OSError as error:
        raise ConfigError(
            f"--ray {address!r}: nothing answers at {host}:{port} ({error.strerror or error}). Start the head with "
            "`ray start --head` (its address is printed) or pass --ray alone for a local Ray"
        ) from None


def connect(address: str | None) -> Any:
    """
    Connect to a Ray cluster (or start a local Ray instance).

    :param address: ``None`` or :data:`LOCAL` (start one here), ``auto`` (the cluster this machine
        belongs to), ``HOST:PORT`` or ``ray://HOST:PORT``
    :return: The ``ray`` module, initialized
    :raises MissingDependencyError: When Ray is not installed
    :raises ConfigError: When the address is malformed or unreachable
    """
    ray = _import_ray()
    if address not in (None, LOCAL, "auto"):
        _check_reachable(address)
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
    try:
        if address in (None, LOCAL):
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ConfigError(
            f"--ray {address!r}: cannot join the cluster ({str(error).splitlines()[0]}). Check `ray status` on its head"
        ) from None
    return ray


def pack_folder(folder: Path) -> bytes:
    """:return: ``folder`` as ``tar.gz`` bytes, its contents under the folder's own name"""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return buffer.getvalue()


def unpack_folder(data: bytes, target: Path) -> None:
    """
    Unpack :func:`pack_folder`'s bytes as ``target``: into a hidden folder beside it first, then one
    rename, so ``target`` exists whole or not at all. An existing ``target`` is never overwritten.
    """
    staging = target.parent / f".incoming-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            archive.extractall(staging, filter="data")
        (unpacked,) = list(staging.iterdir())
        if target.exists():
            raise FileExistsError(f"{target} exists; a finished run is never overwritten")
        unpacked.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _attempts_actor(ray: Any) -> Any:
    """A tiny actor that counts the starts of each task, so the driver learns which runs were retried."""

    class Attempts:
        def __init__(self) -> None:
            self.counts: dict[str, int] = {}

        def start(self, key: str) -> int:
            self.counts[key] = self.counts.get(key, 0) + 1
            return self.counts[key]

        def started(self) -> int:
            return len(self.counts)

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # on the driver's node: it lives as long as the suite, whichever other node goes away
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor: Any = ray.remote(num_cpus=0)(Attempts)
    return actor.options(scheduling_strategy=here, name=f"{ATTEMPTS_ACTOR}-{uuid.uuid4().hex}").remote()


def run_jobs_on_ray(
    run_job: Callable[[Any, Path, int, int, str], dict[str, Any]],
    jobs: Sequence[Any],
    out: Path,
    n_evaluations: int,
    eval_episodes: int,
    *,
    shared_out: bool = False,
    gpus: float = 0.0,
    report: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """
    Run benchmark jobs as Ray tasks, one CPU each, and bring every finished run folder under ``out``.

    :param run_job: ``sb3_safe.bench._run_job``: trains one job into ``<its out>/runs/...`` on a device, never raises
    :param jobs: The jobs still to run
    :param out: The suite's output folder (on the driver)
    :param n_evaluations: Evaluations per run
    :param eval_episodes: Episodes per evaluation
    :param shared_out: ``out`` is on a filesystem every node sees: runs write there directly
    :param gpus: GPUs per run (``--ray-gpus``); with any, each run trains on ``cuda``
    :param report: Called with ``(index, total, record)`` as runs finish
    :return: One record per job, with ``retried`` (the task ran more than once), and ``failed`` with the reason
        when its task failed after its retries or its folder could not land
    """
    ray = connect(None)  # run_suite has connected; a direct call starts a local Ray
    attempts = _attempts_actor(ray)
    shared = out.resolve() if shared_out else None
    device = "cuda" if gpus > 0 else "cpu"
    if shared is None:
        remove_stale_incoming(out)
        for job in jobs:  # an interrupted run's folder (no result) is in the way of the finished one: set it aside
            set_aside_interrupted(job.run_dir(out))

    def train_one_body(job: Any, key: str) -> tuple[dict[str, Any], bytes | None, int]:
        attempt = int(ray.get(attempts.start.remote(key)))
        if shared is not None:
            return run_job(job, shared, n_evaluations, eval_episodes, device), None, attempt
        remove_stale_scratch()
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as scratch:
            record = run_job(job, Path(scratch), n_evaluations, eval_episodes, device)
            folder = job.run_dir(Path(scratch))
            return record, pack_folder(folder) if folder.is_dir() else None, attempt

    # a task whose worker or node dies is run again on another node (Ray's retries)
    train_one: Any = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=3)(train_one_body)
    pending = {train_one.remote(job, str(job.run_dir(Path(".")))): job for job in jobs}
    records = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(done[0])
        record = _land(ray, done[0], job, out)
        records.append(record)
        if report is not None:
            report(len(records) - 1, len(jobs), record)
    return records


def _land(ray: Any, ref: Any, job: Any, out: Path) -> dict[str, Any]:
    """
    A finished task's record, its run folder unpacked into place. A task that failed after its retries, or a
    folder that cannot land, is a record marked failed with the reason: the suite goes on with the others.
    """
    failed = {"env": job.env_label, "config": job.config, "seed": job.seed, "crashed": True, "failed": True}
    try:
        record: dict[str, Any]
        record, packed, attempt = ray.get(ref)
    except Exception as error:  # Ray's task, worker and node errors: the run failed after its retries
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        return {**failed, "retried": True, "error": f"failed on Ray after its retries: {type(error).__name__}: {reason}"}
    record["retried"] = attempt > 1
    if packed is not None:
        target = job.run_dir(out)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            unpack_folder(packed, target)
        except (OSError, tarfile.TarError, ValueError) as error:
            return {**record, **failed, "error": f"the finished run folder could not land at {target}: {error}"}
        record["bytes_returned"] = len(packed)
    return record


#: Prefix of a task's scratch folder: ``sb3-safe-run-<pid>-...`` in the node's temporary folder
SCRATCH_PREFIX = "sb3-safe-run-"


def remove_stale_scratch(root: Path | None = None) -> list[Path]:
    """
    Remove the scratch folders of tasks whose process is gone (a worker killed mid-run leaves its folder: nothing
    else removes it). Called by every task before it makes its own.

    :param root: The temporary folder (default: :func:`tempfile.gettempdir`)
    :return: The folders removed
    """
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        pid = folder.name.removeprefix(SCRATCH_PREFIX).partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_incoming(out: Path) -> list[Path]:
    """
    Remove the half-unpacked ``.incoming-*`` folders a driver killed while unpacking left under ``out``.

    :return: The folders removed
    """
    stale = list(out.glob("runs/**/.incoming-*")) if out.is_dir() else []
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def run_workers_on_ray(worker: Callable[[Any], None], settings: Any, workers: int) -> list[str]:
    """
    Run ``workers`` tuning workers as Ray tasks (one CPU each) and wait for them.

    :param worker: ``sb3_safe.tuning.study.run_worker``
    :param settings: Its :class:`~sb3_safe.tuning.study.TuneSettings`
    :param workers: How many
    :return: The errors of workers that failed (empty when all finished)
    """
    ray = _import_ray()

    def tune_worker_body(settings: Any) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        worker(settings)

    tune_worker: Any = ray.remote(num_cpus=1, max_retries=1)(tune_worker_body)
    errors = []
    for number, ref in enumerate([tune_worker.remote(settings) for _ in range(workers)]):
        try:
            ray.get(ref)
        except Exception as error:  # a worker's failure is reported, the others' trials stand
            lines = [line for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
            errors.append(f"worker {number}: {type(error).__name__}: {lines[-1].strip()}")
    return errors
