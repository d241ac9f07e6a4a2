"""
Training-health detectors: pure functions over a metric history, raising plain-language findings.

A history is a sequence of rows, one per PPO update, each a mapping from metric name to
value (the :class:`~sb3_safe.stats.UpdateStats` field names, plus ``ep_rew_mean``).
The same detectors run live (:class:`~sb3_safe.callbacks.HealthMonitorCallback`, on the
algorithm's per-update record) and after the fact (``sb3-safe diagnose``, on
``progress.csv`` or TensorBoard events): they cannot tell the difference.

A missing metric (plain SB3 logs no gradient norms; a CSV row may lack ``train/*``) makes
the detectors that need it stay silent; it never raises.

The package, one job per module:

- :mod:`~sb3_safe.health.findings`: :class:`Finding` and reading a metric from a row;
- :mod:`~sb3_safe.health.thresholds`: :class:`Thresholds`;
- :mod:`~sb3_safe.health.history`: :class:`HealthHistory`, the bounded past;
- :mod:`~sb3_safe.health.returns`: the training return, its noise and :func:`gain_lost`;
- :mod:`~sb3_safe.health.detectors`: the detectors and :func:`detect`;
- :mod:`~sb3_safe.health.evaluation`: the evaluation collapse rule;
- :mod:`~sb3_safe.health.tracker`: :class:`TroubleTracker` and :func:`scan`.
"""

from sb3_safe.health.detectors import DETECTORS, detect
from sb3_safe.health.evaluation import (
    EVALUATION_COLLAPSE_FRACTION,
    evaluation_collapse,
    evaluation_noise_floor,
    evaluation_peak_before,
)
from sb3_safe.health.findings import SEVERITY_RANK, Finding, Row, Severity
from sb3_safe.health.history import HealthHistory, History
from sb3_safe.health.returns import gain_lost, trimmed_mean
from sb3_safe.health.thresholds import Thresholds
from sb3_safe.health.tracker import TroubleTracker, scan

#: Former names, kept importable: ``CODES`` holds the detectors, ``EpisodeTracker`` tracks
#: episodes of *trouble* (not environment episodes).
CODES = DETECTORS
EpisodeTracker = TroubleTracker

__all__ = [
    "CODES",
    "DETECTORS",
    "EVALUATION_COLLAPSE_FRACTION",
    "SEVERITY_RANK",
    "EpisodeTracker",
    "Finding",
    "HealthHistory",
    "History",
    "Row",
    "Severity",
    "Thresholds",
    "TroubleTracker",
    "detect",
    "evaluation_collapse",
    "evaluation_noise_floor",
    "evaluation_peak_before",
    "gain_lost",
    "scan",
    "trimmed_mean",
]
