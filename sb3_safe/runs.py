"""
Run folders: the one place that knows their layout, writes their files and reads them back.

Layout of a run folder::

    config.yml                  the resolved profile block (a profile itself) and ``run_info``
    command.txt                 the command that made the run
    progress.csv, tb/           SB3's logger output
    health.jsonl                findings, rollbacks and stops, one JSON object per line
    checkpoints/                model_<steps>_steps.zip + vecnormalize_<steps>_steps.pkl
    eval/evaluations.npz        EvalCallback's periodic evaluations
    best_model.zip              best evaluation so far, with best_vecnormalize.pkl
    last_healthy_model.zip      written when the rollbacks ran out, with last_healthy_vecnormalize.pkl
    model.zip                   the final model, with vecnormalize.pkl
    result.json                 the final evaluation, wall time and steps/s (or the crash)

Every file is written atomically (temporary file, then rename), so a crash leaves the old
version or the new one. ``health.jsonl`` is appended to; its readers skip a half-written last
line. Training, ``eval``, ``diagnose``, ``bench`` and resume all go through :class:`RunFolder`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shlex
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sb3_safe.errors import DiskFullError, RunFolderError
from sb3_safe.files import (
    NO_ROOM,
    append_jsonl,
    atomic_write,
    checkpoint_path,
    list_checkpoints,
    no_room_message,
    read_jsonl,
)

__all__ = [
    "RunFolder",
    "append_jsonl",
    "atomic_write",
    "chain_evaluations",
    "free_path",
    "list_checkpoints",
    "read_jsonl",
    "resume_chain",
    "set_aside_interrupted",
]

_CONFIG_HEADER = "# Resolved by sb3-safe; train again with: sb3-safe train --profile <this file> --env <the id below>\n"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


@dataclass(frozen=True)
class RunFolder:
    """
    One run's folder: every file of the layout by name, and tolerant readers.

    :param path: The folder
    """

    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / "config.yml"

    @property
    def command_file(self) -> Path:
        return self.path / "command.txt"

    @property
    def progress_csv(self) -> Path:
        return self.path / "progress.csv"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tb"

    #: The health monitor's event log, in the run folder or beside SB3's logger output
    HEALTH_LOG = "health.jsonl"

    @property
    def health_log(self) -> Path:
        return self.path / self.HEALTH_LOG

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def evaluations_file(self) -> Path:
        return self.path / "eval" / "evaluations.npz"

    @property
    def best_model(self) -> Path:
        return self.path / "best_model.zip"

    @property
    def last_healthy_model(self) -> Path:
        return self.path / "last_healthy_model.zip"

    @property
    def final_model(self) -> Path:
        return self.path / "model.zip"

    @property
    def result_file(self) -> Path:
        return self.path / "result.json"

    @property
    def crash_file(self) -> Path:
        return self.path / "crash.txt"

    # -- creating

    @classmethod
    def create(cls, root: Path, env_id: str, profile: str, seed: int, run_dir: Path | None = None) -> RunFolder:
        """
        Create a new, empty run folder. An existing folder is never reused.

        :param root: Parent of all runs (``runs/``)
        :param env_id: Environment id (a folder level)
        :param profile: Profile name or path (its stem names the run)
        :param seed: The run's seed
        :param run_dir: An explicit folder; it must not exist yet
        :return: The created folder
        :raises RunFolderError: When the folder exists or cannot be created (a read-only or full filesystem)
        """
        try:
            return cls._create(root, env_id, profile, seed, run_dir)
        except OSError as error:
            where = run_dir if run_dir is not None else root
            raise RunFolderError(
                f"cannot create a run folder in {str(where)!r}: {error.strerror or error}. Choose a writable place with "
                "--runs-root or --run-dir"
            ) from None

    @classmethod
    def _create(cls, root: Path, env_id: str, profile: str, seed: int, run_dir: Path | None) -> RunFolder:
        if run_dir is not None:
            if run_dir.exists():
                raise RunFolderError(
                    f"--run-dir {str(run_dir)!r} already exists; runs are never overwritten. Choose a new folder"
                )
            run_dir.mkdir(parents=True)
            return cls(run_dir)
        stem = f"{_slug(Path(profile).stem)}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        parent = root / _slug(env_id)
        parent.mkdir(parents=True, exist_ok=True)
        for candidate in itertools.islice(_free_names(parent / stem), 1000):
            try:
                candidate.mkdir()  # atomic: two runs started in the same second get different folders
            except FileExistsError:
                continue
            return cls(candidate)
        raise RunFolderError(f"cannot create a new run folder under {parent}: 1000 names taken. Use --runs-root")

    def remove_stale_temporaries(self) -> list[Path]:
        """
        Remove what an interrupted atomic write left in ``checkpoints/`` (a SIGKILL between writing
        ``.model_<N>_steps.zip.<random>.tmp`` and renaming it): never a checkpoint, never read, and
        nothing else removes it. Called when a run folder is opened to resume or recover from.

        :return: The files removed
        """
        stale = sorted(self.checkpoints_dir.glob(".*.tmp")) if self.checkpoints_dir.is_dir() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    @classmethod
    def containing(cls, path: Path) -> RunFolder | None:
        """
        :param path: A run folder, or a file inside one (``model.zip``, ``checkpoints/model_5000_steps.zip``,
            ``progress.csv``)
        :return: The run folder (the nearest folder with a ``config.yml``), or ``None``
        """
        folders = (path.parent, path.parent.parent) if path.is_file() else (path,)
        for folder in folders:
            if (folder / "config.yml").is_file():
                return cls(folder)
        return None

    def write_config(self, profile_block: Mapping[str, Any], run_info: Mapping[str, Any], argv: Sequence[str]) -> None:
        """
        Write ``config.yml`` (loadable as a profile) and ``command.txt``.

        :param profile_block: ``{env_id: resolved block}``
        :param run_info: Facts about the run (seed, profile source, versions, resumed_from)
        :param argv: The command line
        """
        text = _CONFIG_HEADER + yaml.safe_dump(
            {**profile_block, "run_info": dict(run_info)}, sort_keys=False, default_flow_style=None
        )
        atomic_write(self.config_file, lambda path: path.write_text(text))
        command = " ".join(shlex.quote(arg) for arg in argv)
        atomic_write(self.command_file, lambda path: path.write_text(f"cd {shlex.quote(os.getcwd())} && {command}\n"))

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """
        A write into the run folder that fails for want of room (a full disk or quota, a read-only filesystem) becomes
        :class:`~sb3_safe.errors.DiskFullError`: one line naming the folder, the free space and the newest checkpoint,
        which atomic writes leave intact. Other errors pass through.
        """
        try:
            yield
        except OSError as error:
            if error.errno not in NO_ROOM:
                raise
            raise DiskFullError(self.no_room_message(error)) from None

    def no_room_message(self, error: OSError, what: str = "a file could not be written") -> str:
        """:return: The one line of :meth:`writing`: what failed, the free space, and how to go on"""
        newest = self.checkpoints()[-1:]
        return no_room_message(self.path, error, what, newest[0][1] if newest else None)

    def write_result(self, result: Mapping[str, Any]) -> None:
        """Write ``result.json`` (the run is finished, or crashed, when it exists)."""
        text = json.dumps(dict(result), indent=2) + "\n"
        atomic_write(self.result_file, lambda path: path.write_text(text))

    def checkpoint_path(self, timesteps: int) -> Path:
        """:return: Where the checkpoint at ``timesteps`` steps goes"""
        return checkpoint_path(self.checkpoints_dir, timesteps)

    # -- reading (a crash can leave any of these missing or half-written)

    def read_config(self) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """
        :return: The environment id, its resolved block and ``run_info``
        :raises RunFolderError: When ``config.yml`` is missing or not a run's config
        """
        try:
            data = yaml.safe_load(self.config_file.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise RunFolderError(f"cannot read {str(self.config_file)!r}: {error}. Is this an sb3-safe run folder?") from None
        blocks = {key: block for key, block in (data or {}).items() if key != "run_info" and isinstance(block, dict)}
        if not isinstance(data, dict) or len(blocks) != 1:
            raise RunFolderError(f"{str(self.config_file)!r} is not an sb3-safe run config (one environment block)")
        ((env_id, block),) = blocks.items()
        run_info = data.get("run_info")
        return str(env_id), block, run_info if isinstance(run_info, dict) else {}

    def read_result(self) -> dict[str, Any] | None:
        """:return: ``result.json``, or ``None`` when it is missing or unreadable (the run did not finish)"""
        try:
            data = json.loads(self.result_file.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def health_events(self, kinds: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """
        :param kinds: Keep only these ``event`` values (``finding``, ``rollback``, ``stopped``)
        :return: The records of ``health.jsonl`` in order, a half-written line skipped
        """
        return [event for event in read_jsonl(self.health_log) if kinds is None or event.get("event") in kinds]

    def evaluations(self) -> tuple[list[int], list[float]]:
        """:return: The periodic evaluations' steps and mean returns (empty when there are none or the file is damaged)"""
        try:
            with np.load(self.evaluations_file) as data:
                return [int(s) for s in data["timesteps"]], [float(np.mean(r)) for r in data["results"]]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
            return [], []

    def evaluation_noise(self) -> float:
        """
        :return: The standard error of one periodic evaluation's mean, pooled over the run's evaluations (the root of
            their mean variance of episode returns, over the square root of the episodes); 0 with fewer than 2 episodes
            per evaluation, none, or a damaged file. Pooled, not the median: where success is rare (VMAS transport:
            most evaluations return 0 in every episode, a few hold one delivery) the median is the zeros' and calls
            every delivery a real difference.
        """
        try:
            with np.load(self.evaluations_file) as data:
                results = np.asarray(data["results"], dtype=np.float64)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
            return 0.0
        if results.ndim != 2 or results.shape[0] == 0 or results.shape[1] < 2:
            return 0.0
        return float(np.sqrt(results.var(axis=1, ddof=1).mean() / results.shape[1]))

    def checkpoints(self) -> list[tuple[int, Path]]:
        """:return: The complete checkpoints ``(steps, model path)``, oldest first; temporary files are not checkpoints"""
        return list_checkpoints(self.checkpoints_dir)


def _free_names(base: Path) -> Iterator[Path]:
    """The one naming rule for a folder whose name is taken: ``base``, then ``base-2``, ``base-3``, ..."""
    yield base
    for n in itertools.count(2):
        yield base.with_name(f"{base.name}-{n}")


def free_path(base: Path) -> Path:
    """:return: ``base``, or the first of ``base-2``, ``base-3``, ... that does not exist (results are never overwritten)"""
    return next(candidate for candidate in _free_names(base) if not candidate.exists())


def set_aside_interrupted(run_dir: Path) -> Path | None:
    """
    Make way for a run that was interrupted (no ``result.json``): a folder without checkpoints is
    removed (nothing in it is a result); one with checkpoints is kept as the next free
    ``<run>.partN`` and the run goes on from its newest checkpoint, health monitor state included.
    The new run's ``config.yml`` names that checkpoint (``run_info.resumed_from``), so the
    parts form a chain that :func:`resume_chain` follows back. (``sb3-safe bench`` calls it for each run
    it starts.)

    :return: The checkpoint to resume from, or ``None`` to start afresh
    """
    if not run_dir.exists():
        return None
    checkpoints = RunFolder(run_dir).checkpoints()
    if not checkpoints:
        import shutil

        shutil.rmtree(run_dir)
        return None
    part = 1
    while run_dir.with_name(f"{run_dir.name}.part{part}").exists():
        part += 1
    kept = run_dir.with_name(f"{run_dir.name}.part{part}")
    run_dir.rename(kept)
    _, newest = checkpoints[-1]
    return kept / newest.relative_to(run_dir)


def resume_chain(run_dir: Path) -> list[Path]:
    """
    :param run_dir: A run folder
    :return: The folders of its resume chain, oldest first, ``run_dir`` last: each one resumed from
        a checkpoint of the one before (``run_info.resumed_from`` in ``config.yml``)
    """
    chain = [run_dir]
    while True:
        try:
            _, _, info = RunFolder(chain[0]).read_config()
        except RunFolderError:
            break
        source = info.get("resumed_from")
        parent = RunFolder.containing(Path(source)) if source else None
        if parent is None or parent.path in chain:
            break
        chain.insert(0, parent.path)
    return chain


def chain_evaluations(run_dir: Path) -> tuple[list[int], list[float]]:
    """
    The periodic evaluations of a run and of the parts it continued (:func:`resume_chain`): each part evaluates from
    where it started, so a run continued from a checkpoint holds only its own. Where a part went on past the
    checkpoint its successor continued from, the successor's evaluations of those steps are the ones kept.

    :param run_dir: A run folder
    :return: The evaluations' steps and mean returns, oldest first
    """
    steps: list[int] = []
    means: list[float] = []
    for part in reversed(resume_chain(run_dir)):
        part_steps, part_means = RunFolder(part).evaluations()
        earlier = [(s, m) for s, m in zip(part_steps, part_means, strict=True) if not steps or s < steps[0]]
        steps[:0] = [s for s, _ in earlier]
        means[:0] = [m for _, m in earlier]
    return steps, means


# Checkpoint handling moved to sb3_safe.checkpoints; its names stay importable from here.
def __getattr__(name: str) -> Any:
    from sb3_safe import checkpoints

    if name in checkpoints.__all__:
        return getattr(checkpoints, name)
    raise AttributeError(f"module 'sb3_safe.runs' has no attribute {name!r}")
