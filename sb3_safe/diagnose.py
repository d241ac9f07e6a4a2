"""
``sb3-safe diagnose``: the health detectors over a finished (or crashed) run's logs.

Reads an sb3-safe run folder, SB3's ``progress.csv`` from any SB3 run, or TensorBoard event
files, turns them into the same per-update metric history the live monitor sees, and
replays :func:`sb3_safe.health.scan` over it.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sb3_safe.errors import RunFolderError
from sb3_safe.health import SEVERITY_RANK, Finding, Thresholds, evaluation_collapse, evaluation_noise_floor, scan
from sb3_safe.runs import RunFolder

__all__ = ["PLOT_ROWS", "Diagnosis", "diagnose", "iter_history", "load_history"]

# Logger keys that are not under train/ but that the detectors read. The monitor's own training return
# (health/ep_return: a trimmed mean over the latest rollout's episodes) comes after SB3's, so it wins.
_RENAMES = {
    "rollout/ep_rew_mean": "ep_rew_mean",
    "time/total_timesteps": "timesteps",
    "health/ep_return": "ep_rew_mean",
    "health/ep_return_sem": "ep_rew_sem",
    "health/episodes": "episodes",
}
_RETURN_KEYS = ("rollout/ep_rew_mean", "health/ep_return", "health/ep_return_sem", "health/episodes")


def _row_from(values: dict[str, float]) -> dict[str, float] | None:
    """A logger dump -> a detector row; ``None`` when the dump holds no PPO update."""
    row = {key.removeprefix("train/"): value for key, value in values.items() if key.startswith("train/")}
    if not row:
        return None
    row.update({new: values[old] for old, new in _RENAMES.items() if old in values})
    return row


def _rows(dumps: Iterable[dict[str, float]]) -> Iterator[dict[str, float]]:
    """
    Logger dumps -> detector rows, one per PPO update.

    SB3's on-policy loop dumps after collecting a rollout and *before* training on it, so an
    update's ``train/*`` values go out with the next dump: the next iteration's, or an
    ``EvalCallback``'s in between, which has no ``rollout/ep_rew_mean``. The latest mean return
    is carried to such rows (without it most rows of a run with evaluations had no return,
    and ``diagnose`` missed collapses the live monitor saw).
    """
    latest: dict[str, float] = {}
    for values in dumps:
        if any(key in values for key in _RETURN_KEYS):
            latest = {_RENAMES[key]: values[key] for key in _RETURN_KEYS if key in values}
        row = _row_from(values)
        if row is None:
            continue
        if "ep_rew_mean" not in row:
            row.update(latest)
        yield row


def _read_csv(path: Path) -> Iterator[dict[str, float]]:
    """The rows of SB3's ``progress.csv``, one at a time (a file of a million updates is never held whole)."""
    try:
        with open(path, newline="") as f:
            yield from _rows(_csv_dumps(csv.DictReader(f)))
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise RunFolderError(f"cannot read {str(path)!r} as SB3's progress.csv: {error}") from None


def _csv_dumps(reader: Iterable[dict[str | None, str | None]]) -> Iterator[dict[str, float]]:
    for record in reader:
        values = {}
        for key, text in record.items():
            if key is None or text in (None, ""):
                continue
            try:
                values[key] = float(text)
            except (TypeError, ValueError):
                continue
        yield values


def _read_tensorboard(path: Path) -> list[dict[str, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # type: ignore[import-untyped]

    files = [path] if path.is_file() else sorted(path.rglob("events.out.tfevents*"))
    by_step: dict[int, dict[str, float]] = defaultdict(dict)
    for file in files:
        try:
            accumulator = EventAccumulator(str(file), size_guidance={"scalars": 0})
            accumulator.Reload()
        except Exception as error:  # the reader raises several types on a damaged file
            raise RunFolderError(f"cannot read TensorBoard events {str(file)!r}: {error}") from None
        for tag in accumulator.Tags().get("scalars", []):
            for event in accumulator.Scalars(tag):
                by_step[event.step][tag] = event.value
    return list(_rows({**by_step[step], "time/total_timesteps": float(step)} for step in sorted(by_step)))


def _source(path: Path) -> Path:
    if not path.exists():
        raise RunFolderError(f"{str(path)!r} does not exist. Pass a run folder, a progress.csv or TensorBoard events")
    csv_file = path.is_file() and path.suffix == ".csv"
    events = path.name.startswith("events.out.tfevents") or (path.is_dir() and any(path.rglob("events.out.tfevents*")))
    if path.is_dir() and RunFolder(path).progress_csv.is_file():
        source = RunFolder(path).progress_csv
    elif csv_file or events:
        source = path
    else:
        raise RunFolderError(f"{str(path)!r} holds no progress.csv or TensorBoard events (events.out.tfevents.*)")
    return source


def iter_history(path: Path) -> tuple[Iterator[dict[str, float]], Path]:
    """
    :param path: A run folder, a ``progress.csv``, a TensorBoard event file, or a folder of them
    :return: The rows, one per PPO update, as they are read (a CSV is streamed; TensorBoard's
        reader loads its files whole), and the file they come from
    """
    source = _source(path)
    return (_read_csv(source) if source.suffix == ".csv" else iter(_read_tensorboard(source))), source


def _no_updates(source: Path) -> RunFolderError:
    return RunFolderError(f"no PPO updates (train/* values) in {str(source)!r}: was the run stopped before its first update?")


def load_history(path: Path) -> tuple[list[dict[str, float]], Path]:
    """
    :param path: A run folder, a ``progress.csv``, a TensorBoard event file, or a folder of them
    :return: One row per PPO update (all of them, in memory), and the file it was read from
    """
    rows, source = iter_history(path)
    history = list(rows)
    if not history:
        raise _no_updates(source)
    return history, source


def _target_kl(folder: RunFolder | None) -> float | None:
    if folder is None:
        return None
    try:
        _, block, _ = folder.read_config()
    except RunFolderError:
        return None
    value = block.get("target_kl")
    return float(value) if isinstance(value, (int, float)) else None


@dataclass
class Diagnosis:
    """
    What ``diagnose`` found.

    :param source: The file the updates were read from
    :param history: The rows to plot: every update for a log of up to :data:`PLOT_ROWS` updates,
        evenly thinned beyond (always including the last)
    :param findings: The first finding of every episode of trouble, in time order
    :param events: Rollbacks and stops from the run folder's ``health.jsonl``
    :param updates: How many updates the log holds
    :param run: The run folder the log belongs to (sb3-safe's or SB3's), if any
    """

    source: Path
    history: list[dict[str, float]]
    findings: list[Finding]
    events: list[dict[str, Any]] = field(default_factory=list)
    updates: int = 0
    run: Path | None = None

    def __post_init__(self) -> None:
        self.updates = self.updates or len(self.history)

    @property
    def worst_first(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (-SEVERITY_RANK[f.severity], f.timestep))

    @property
    def verdict(self) -> str:
        steps = self.history[-1].get("timesteps", float("nan"))
        span = f"{self.updates} updates" + (f", {int(steps):,} steps" if math.isfinite(steps) else "")
        if not self.findings:
            return f"healthy: no findings over {span}."
        counts = {s: sum(f.severity == s for f in self.findings) for s in ("critical", "warning", "info")}
        worst = self.worst_first[0]
        state = "unhealthy" if counts["critical"] else "needs attention"
        listed = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        return f"{state}: {listed} over {span}; worst: {worst.code} at step {worst.timestep:,}."

    def report(self) -> str:
        lines = [f"sb3-safe diagnose: {self.source}"]
        for finding in self.worst_first:
            lines.append(f"{finding.severity.upper():8} {finding.code} at step {finding.timestep:,}: {finding.message}")
            lines.append(f"         advice: {finding.advice}")
        for event in self.events:
            if event["event"] == "rollback":
                lines.append(
                    f"rollback at step {event['timestep']:,}: {event['reasons']}; restored step {event['restored_timestep']:,}"
                )
            else:
                lines.append(f"stopped at step {event['timestep']:,} after running out of rollbacks ({event['reasons']})")
        lines.append(f"Verdict: {self.verdict}")
        command = self.recover_command
        if command is not None:
            lines.append(
                f"To continue it under the safe profile from the newest checkpoint before the trouble began: {command}"
            )
        return "\n".join(lines)

    @property
    def unhandled(self) -> list[Finding]:
        """The critical findings no rollback dealt with (a rollback is logged at the step of its finding)."""
        rolled_back = {int(event["timestep"]) for event in self.events if event.get("event") == "rollback"}
        return [f for f in self.findings if f.severity == "critical" and f.timestep not in rolled_back]

    @property
    def recover_command(self) -> str | None:
        """``sb3-safe recover RUN`` for a run with trouble no rollback dealt with, else ``None``"""
        if self.run is None or not self.unhandled:
            return None
        return f"sb3-safe recover {shlex.quote(str(self.run))}"

    def as_json(self) -> str:
        return json.dumps(
            {
                "source": str(self.source),
                "updates": self.updates,
                "verdict": self.verdict,
                "findings": [f.as_dict() for f in self.worst_first],
                "events": self.events,
                "recover_command": self.recover_command,
            },
            indent=2,
        )


def diagnose(
    path: Path, thresholds: Thresholds | None = None, target_kl: float | None = None, evaluations: bool = True
) -> Diagnosis:
    """
    :param path: A run folder, a ``progress.csv``, or TensorBoard events
    :param thresholds: Detector thresholds
    :param target_kl: The run's ``target_kl`` (read from an sb3-safe run folder's config.yml when not given)
    :param evaluations: Also judge the run folder's evaluations (:func:`~sb3_safe.health.evaluation_collapse`:
        the final evaluation against the periodic ones); ``False``: the training log's detectors only
    :return: The findings, one per episode of trouble
    """
    rows, source = iter_history(path)
    folder = RunFolder.containing(source)
    target = target_kl if target_kl is not None else _target_kl(folder)
    sample = _Sample()
    findings = scan((sample.add(row) for row in rows), thresholds, target)
    if not sample.count:
        raise _no_updates(source)
    if evaluations and folder is not None and (collapse := _evaluation_collapse(folder)) is not None:
        findings.append(collapse)
    events = [] if folder is None else folder.health_events(("rollback", "stopped"))
    run = folder.path if folder is not None else (source.parent if source.name == "progress.csv" else None)
    return Diagnosis(source, sample.rows(), findings, events, updates=sample.count, run=run)


def _evaluation_collapse(folder: RunFolder) -> Finding | None:
    """
    The finished run's final evaluation against its periodic ones (``None`` without both); gains and
    losses within the evaluations' noise do not count (a 5-episode Pendulum evaluation swings by 100).
    """
    result = folder.read_result()
    if not result or result.get("crashed") or "eval_mean_return" not in result:
        return None
    steps, means = folder.evaluations()
    final_step = int(result.get("num_timesteps", steps[-1] if steps else 0))
    noise = evaluation_noise_floor(folder.evaluation_noise())
    return evaluation_collapse(steps, means, float(result["eval_mean_return"]), final_step, noise=noise)


#: Rows kept for the plot of a long log (thinned evenly beyond this).
PLOT_ROWS = 4000


class _Sample:
    """Every ``stride``-th row, the stride doubling whenever the sample is full: bounded memory."""

    def __init__(self) -> None:
        self.kept: list[dict[str, float]] = []
        self.stride = 1
        self.count = 0
        self.last: dict[str, float] | None = None

    def add(self, row: dict[str, float]) -> dict[str, float]:
        if self.count % self.stride == 0:
            self.kept.append(row)
            if len(self.kept) >= 2 * PLOT_ROWS:
                self.kept = self.kept[::2]
                self.stride *= 2
        self.count += 1
        self.last = row
        return row

    def rows(self) -> list[dict[str, float]]:
        return self.kept if self.last is None or (self.kept and self.kept[-1] is self.last) else [*self.kept, self.last]
