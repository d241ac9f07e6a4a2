"""
Studies: storage, sampler and pruner, worker processes, and what a study leaves in ``--out``.

One study lives in one storage: an SQLite file in the output folder by default (nothing to
install), any Optuna RDB URL (PostgreSQL, MySQL) to share it across machines, or a
``.log`` journal file. ``--trials N`` is the study's total: running the same command again
resumes it, and the same command on another machine, pointed at the same PostgreSQL URL,
joins it. On an RDB storage each running trial sends a heartbeat; a trial whose worker died
is marked failed after the grace period and retried once with the same parameters.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from sb3_safe.config import SCHEMA, load_config
from sb3_safe.errors import ClusterError, ConfigError, MissingDependencyError, StorageError, UserError
from sb3_safe.tuning.objective import ObjectiveSettings, TrialObjective
from sb3_safe.tuning.space import load_space

__all__ = ["PRUNERS", "SAMPLERS", "TuneSettings", "open_study", "run_tuning", "storage_url"]

SAMPLERS = ("tpe", "random", "cmaes")
PRUNERS = ("median", "halving", "none")
_SCHEMES = ("sqlite", "postgresql", "mysql")
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class TuneSettings:
    """Everything a worker needs to rebuild the study and the objective (picklable)."""

    env_id: str
    profile: str
    out: Path
    trials: int
    objective: ObjectiveSettings
    storage: str | None = None
    study_name: str | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    space: Path | None = None
    workers: int = 1
    timeout: float | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    heartbeat_interval: int = 30
    n_startup_trials: int = 5
    #: Run the workers as Ray tasks on this cluster (``--ray``: ``local``, ``auto``, ``HOST:PORT``, ``ray://HOST:PORT``)
    ray: str | None = None

    @property
    def name(self) -> str:
        return self.study_name or f"{self.env_id.split(':')[-1]}-{Path(self.profile).stem}"


def _hide_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def storage_url(settings: TuneSettings) -> str:
    """:return: The storage URL (default: ``sqlite:///<out>/study.db``), checked for a known scheme"""
    if settings.storage is None:
        return f"sqlite:///{(settings.out / 'study.db').resolve()}"
    url = settings.storage
    if url.endswith(".log") and "://" not in url:
        return url
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in _SCHEMES:
        raise StorageError(
            f"--storage {_hide_password(url)!r}: unknown scheme {scheme or url!r}. Use sqlite:///path/study.db, "
            "postgresql://user:password@127.0.0.1/db, mysql://..., or a path ending in .log (journal file)"
        )
    return url


def _storage(settings: TuneSettings) -> optuna.storages.BaseStorage:
    url = storage_url(settings)
    if url.endswith(".log") and "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        settings.out.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several worker processes share the file
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna; they are what we want here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _rdb_storage(url, engine_kwargs, settings.heartbeat_interval)
    except ImportError as error:
        raise StorageError(
            f"--storage {_hide_password(url)!r} needs a driver: {error}. pip install 'sb3-safe[tune]'"
        ) from None
    except Exception as error:  # sqlalchemy raises OperationalError and friends on an unreachable server
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StorageError(
            f"cannot open storage {_hide_password(url)!r}: {first}. Is the database server running and reachable, "
            "and do the user, password and database exist?"
        ) from None


def _rdb_storage(url: str, engine_kwargs: dict[str, Any], heartbeat: int) -> RDBStorage:
    return RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=heartbeat,
        grace_period=2 * heartbeat,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
    )


def _sampler(settings: TuneSettings) -> optuna.samplers.BaseSampler:
    seed = settings.objective.seed + os.getpid() if settings.workers > 1 else settings.objective.seed
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(n_startup_trials=settings.n_startup_trials, multivariate=True, seed=seed)
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if importlib.util.find_spec("cmaes") is None:
        raise MissingDependencyError("--sampler cmaes needs the cmaes package: pip install 'sb3-safe[tune]'")
    return optuna.samplers.CmaEsSampler(n_startup_trials=settings.n_startup_trials, seed=seed)


def _pruner(settings: TuneSettings) -> optuna.pruners.BasePruner:
    objective = settings.objective
    evaluations = objective.n_evaluations * objective.seeds_per_trial * len(objective.conditions)
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings.n_startup_trials, n_warmup_steps=evaluations // 3)
    if settings.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def open_study(settings: TuneSettings) -> optuna.Study:
    """Create the study, or load it when it exists (same name, same storage)."""
    return optuna.create_study(
        storage=_storage(settings),
        study_name=settings.name,
        sampler=_sampler(settings),
        pruner=_pruner(settings),
        direction="maximize",
        load_if_exists=True,
    )


def counted_trials(study: optuna.Study, running: bool = False) -> int:
    """Trials that count against ``--trials``: finished (or running) ones that were not rejected before training."""
    states = (*_FINISHED, TrialState.RUNNING) if running else _FINISHED
    return sum(not t.user_attrs.get("invalid") for t in study.get_trials(deepcopy=False, states=states))


class TrialBudget:
    """
    Stop a worker once the study holds ``n_trials`` counted trials (Optuna's ``MaxTrialsCallback``
    would also count the configurations rejected before training, which cost nothing).

    :param n_trials: Trials that count
    :param max_rejected: Stop anyway after this many rejected configurations (a space whose
        combinations are almost all invalid would otherwise never end)
    """

    def __init__(self, n_trials: int, max_rejected: int) -> None:
        self.n_trials = n_trials
        self.max_rejected = max_rejected

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        rejected = sum(
            bool(t.user_attrs.get("invalid")) for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        )
        if counted_trials(study, running=True) >= self.n_trials or rejected >= self.max_rejected:
            study.stop()


def run_worker(settings: TuneSettings) -> None:
    """One worker: run trials on the shared study until it holds ``settings.trials`` finished trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(settings)
    base = load_config(settings.profile, settings.env_id, settings.overrides)
    objective = TrialObjective(base, load_space(settings.space, base.algo, base.env_id), settings.objective)
    if counted_trials(study) >= settings.trials:
        return
    study.optimize(
        objective,
        timeout=settings.timeout,
        callbacks=[TrialBudget(settings.trials, max_rejected=50 * settings.trials)],
        gc_after_trial=True,
    )


def _worker_entry(settings: TuneSettings) -> None:
    try:
        run_worker(settings)
    except UserError as error:
        raise SystemExit(f"sb3-safe: error: {error}") from None


def run_tuning(settings: TuneSettings) -> optuna.Study:
    """
    Run the study with ``settings.workers`` worker processes (one torch thread each).

    Configuration, storage and search space are checked in this process first, so a bad
    input is one error, not one per worker.

    :return: The study, reloaded after the workers finished
    """
    base = load_config(settings.profile, settings.env_id, settings.overrides)
    space = load_space(settings.space, base.algo, base.env_id)
    if not base.algorithm.safe:
        safe_keys = [p.key for p in space.params if p.key in SCHEMA and SCHEMA[p.key].safe_only]
        if safe_keys:
            raise ConfigError(
                f"the search space has sb3-safe-only `{safe_keys[0]}` but the profile's algo is {base.algo}; pass --space"
            )
    if settings.ray is not None:
        return _run_on_ray(settings)
    study = open_study(settings)
    # This process is the first worker: it has torch, SB3 and the study loaded already and starts at
    # once, while each extra worker process pays the start-up (about 4 s of imports; measured in
    # benchmarks/tune.py). Extra workers are spawned, not forked: a fork of a process that has run
    # torch can hang in OpenMP.
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_entry, args=(settings,)) for _ in range(settings.workers - 1)]
    for process in processes:
        process.start()
    try:
        run_worker(settings)
    finally:
        for process in processes:
            process.join()
    failed = [p.exitcode for p in processes if p.exitcode not in (0, None)]
    if failed and counted_trials(study) == 0:
        raise ConfigError(f"every worker failed (exit codes {failed}); run with --workers 1 to see the error")
    return open_study(settings)  # reloaded: the workers' trials, this process's sampler and pruner


def _run_on_ray(settings: TuneSettings) -> optuna.Study:
    """``--workers`` workers as Ray tasks, every one joining the study's RDB storage."""
    url = storage_url(settings)
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else "journal"
    if scheme not in ("postgresql", "mysql"):
        shown = "the default SQLite file" if settings.storage is None else repr(_hide_password(url))
        raise StorageError(
            f"--ray with {shown}: a {scheme} study is one machine's file, which workers on other machines cannot join. "
            "Pass --storage postgresql://user:password@host/db (or mysql://...)"
        )
    from sb3_safe.cluster import connect, run_workers_on_ray

    connect(settings.ray)
    study = open_study(settings)  # checks the storage from here before any worker starts
    errors = run_workers_on_ray(run_worker, settings, settings.workers)
    for error in errors:
        print(f"sb3-safe tune: Ray {error}", file=sys.stderr, flush=True)
    if errors:
        kept = counted_trials(study)
        raise ClusterError(
            f"{len(errors)} of {settings.workers} Ray workers died ({errors[0]}); the study keeps the {kept} trials the "
            "others finished. Look at the workers' logs (`ray logs`), then run the same command again to go on"
        )
    return open_study(settings)
