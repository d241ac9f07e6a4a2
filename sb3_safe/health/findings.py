"""What a detector reports (:class:`Finding`), and reading one metric from a per-update row."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["SEVERITY_RANK", "Finding", "Row", "Severity", "finite", "metric", "row_step"]

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
Row = Mapping[str, float]


@dataclass(frozen=True)
class Finding:
    """One diagnosis: what is wrong, the numbers that show it, and what to change."""

    code: str
    severity: Severity
    timestep: int
    values: dict[str, float]
    message: str
    advice: str
    #: When the trouble began, as far as the detector can tell (the last update at which the value
    #: loss stood at its level, the best return before a collapse); the finding's own step otherwise
    onset: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def metric(row: Row, key: str) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def row_step(row: Row) -> int | None:
    step = metric(row, "timesteps")
    return int(step) if step is not None and math.isfinite(step) else None
