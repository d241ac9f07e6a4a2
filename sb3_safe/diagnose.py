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
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sb3_safe.errors import RunFolderError
from sb3_safe.health import SEVERITY_RANK, Finding, Thresholds, scan
from sb3_safe.runs import RunFolder

__all__ = ["Diagnosis", "diagnose", "load_history"]

# Logger keys that are not under train/ but that the detectors read.
_RENAMES = {"rollout/ep_rew_mean": "ep_rew_mean", "time/total_timesteps": "timesteps"}


def _row_from(values: dict[str, float]) -> dict[str, float] | None:
    """A logger dump -> a detector row; ``None`` when the dump holds no PPO update."""
    row = {key.removeprefix("train/"): value for key, value in values.items() if key.startswith("train/")}
    if not row:
        return None
    row.update({new: values[old] for old, new in _RENAMES.items() if old in values})
    return row


def _read_csv(path: Path) -> list[dict[str, float]]:
    rows = []
    try:
        with open(path, newline="") as f:
            for record in csv.DictReader(f):
                values = {}
                for key, text in record.items():
                    if key is None or text in (None, ""):
                        continue
                    try:
                        values[key] = float(text)
                    except ValueError:
                        continue
                row = _row_from(values)
                if row is not None:
                    rows.append(row)
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise RunFolderError(f"cannot read {str(path)!r} as SB3's progress.csv: {error}") from None
    return rows


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
    rows = []
    for step in sorted(by_step):
        row = _row_from({**by_step[step], "time/total_timesteps": float(step)})
        if row is not None:
            rows.append(row)
    return rows


def load_history(path: Path) -> tuple[list[dict[str, float]], Path]:
    """
    :param path: A run folder, a ``progress.csv``, a TensorBoard event file, or a folder of them
    :return: One row per PPO update, and the file it was read from
    """
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
    rows = _read_csv(source) if source.suffix == ".csv" else _read_tensorboard(source)
    if not rows:
        raise RunFolderError(
            f"no PPO updates (train/* values) in {str(source)!r}: was the run stopped before its first update?"
        )
    return rows, source


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
    source: Path
    history: list[dict[str, float]]
    findings: list[Finding]
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def worst_first(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (-SEVERITY_RANK[f.severity], f.timestep))

    @property
    def verdict(self) -> str:
        steps = self.history[-1].get("timesteps", float("nan"))
        span = f"{len(self.history)} updates" + (f", {int(steps):,} steps" if math.isfinite(steps) else "")
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
        return "\n".join(lines)

    def as_json(self) -> str:
        return json.dumps(
            {
                "source": str(self.source),
                "updates": len(self.history),
                "verdict": self.verdict,
                "findings": [f.as_dict() for f in self.worst_first],
                "events": self.events,
            },
            indent=2,
        )


def diagnose(path: Path, thresholds: Thresholds | None = None, target_kl: float | None = None) -> Diagnosis:
    """
    :param path: A run folder, a ``progress.csv``, or TensorBoard events
    :param thresholds: Detector thresholds
    :param target_kl: The run's ``target_kl`` (read from an sb3-safe run folder's config.yml when not given)
    :return: The findings, one per episode of trouble
    """
    history, source = load_history(path)
    folder = RunFolder.containing(source)
    target = target_kl if target_kl is not None else _target_kl(folder)
    events = [] if folder is None else folder.health_events(("rollback", "stopped"))
    return Diagnosis(source, history, scan(history, thresholds, target), events)
