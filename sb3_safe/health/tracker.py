"""Findings over time: episodes of trouble (:class:`TroubleTracker`) and replaying a log (:func:`scan`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sb3_safe.health.detectors import detect
from sb3_safe.health.findings import Finding, Row
from sb3_safe.health.history import HealthHistory
from sb3_safe.health.thresholds import Thresholds

__all__ = ["TroubleTracker", "scan"]


@dataclass
class TroubleTracker:
    """
    Turn per-update findings into episodes of trouble: a code is reported when it starts
    firing, and again only after it has been silent for ``quiet_updates`` updates.
    """

    quiet_updates: int = 5
    _last_seen: dict[str, int] = field(default_factory=dict)
    _updates: int = 0

    def new(self, findings: Sequence[Finding]) -> list[Finding]:
        """:return: The findings that open a new episode"""
        self._updates += 1
        fresh = []
        for finding in findings:
            last = self._last_seen.get(finding.code)
            if last is None or self._updates - last > self.quiet_updates:
                fresh.append(finding)
            self._last_seen[finding.code] = self._updates
        return fresh


def scan(
    rows: Iterable[Row], thresholds: Thresholds | None = None, target_kl: float | None = None, quiet_updates: int = 5
) -> list[Finding]:
    """
    Replay a log update by update, as the live monitor would have seen it, in bounded memory
    (``rows`` may be a generator over a file of a million updates).

    :return: The first finding of every episode of trouble, in time order
    """
    thresholds = thresholds or Thresholds()
    history = HealthHistory(thresholds)
    tracker = TroubleTracker(quiet_updates)
    found: list[Finding] = []
    for row in rows:
        history.push(row)
        found.extend(tracker.new(detect(history, thresholds, target_kl)))
    return found
