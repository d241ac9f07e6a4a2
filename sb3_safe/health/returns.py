"""
The training return as the detectors read it: its trimmed mean, its noise, and how much of
what training gained a value gives back.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence

import numpy as np

from sb3_safe.health.findings import Row, metric, row_step
from sb3_safe.health.history import HealthHistory, History, as_history, enough_episodes
from sb3_safe.health.thresholds import Thresholds

__all__ = [
    "best_step",
    "gain_lost",
    "gained",
    "held_best",
    "measured_returns",
    "recent_returns",
    "return_noise",
    "trimmed_mean",
]


def trimmed_mean(values: Sequence[float], proportion: float = 0.02) -> tuple[float, float]:
    """
    The mean of ``values`` without the lowest and highest ``proportion`` of them, and its standard
    error (Tukey and McLaughlin: the winsorized standard deviation over ``(1 - 2 * proportion) *
    sqrt(n)``). A few outlier episodes move it little; its standard error is the noise of the
    training return in the return's own unit, whatever the reward scale.

    The default cut is small on purpose: where success is rare, the successes are the signal. On
    VMAS transport 91% of episodes return exactly 0 (the package never moved) while the policy
    learns, and a median or a 10% trimmed mean stays at 0 throughout.

    :param values: Episode returns (at least one)
    :param proportion: Fraction cut from each end, in [0, 0.5)
    :return: The trimmed mean and its standard error (0 for a single value)
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n = len(ordered)
    cut = int(proportion * n)
    mean = float(ordered[cut : n - cut].mean())
    if n < 2:
        return mean, 0.0
    winsorized = np.clip(ordered, ordered[cut], ordered[n - cut - 1])
    sem = float(winsorized.std(ddof=1) / ((1 - 2 * proportion) * math.sqrt(n)))
    return mean, sem


def measured_returns(rows: Iterable[Row], t: Thresholds) -> list[float]:
    """
    The mean episode returns over at least ``reward_collapse_min_episodes`` episodes: right after
    the start or a rollback (which empties the episode buffer) a mean over one 1,000-step Hopper
    episode is no level to measure a collapse from.
    """
    found = [metric(row, "ep_rew_mean") for row in rows if enough_episodes(row, t)]
    values = [v for v in found if v is not None and math.isfinite(v)]
    # An update after which no episode ended repeats the previous mean exactly: no new measurement
    # (with 100-step episodes and 50-step rollouts every other one), and no change to count as calm.
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def recent_returns(history: HealthHistory, t: Thresholds) -> list[float]:
    key = ("returns", t.reward_collapse_window, t.reward_collapse_min_episodes)
    if key not in history.cache:
        history.cache[key] = measured_returns(list(history.rows)[-t.reward_collapse_window :], t)
    return list(history.cache[key])


def return_noise(history: HealthHistory, t: Thresholds) -> float:
    """
    The run's own noise in mean return: how much the change from one update to the next varies
    over the window (median absolute deviation of the changes; a steady climb has none).
    """
    key = ("noise", t.reward_collapse_window, t.reward_collapse_min_episodes)
    if key not in history.cache:
        changes = [b - a for a, b in itertools.pairwise(recent_returns(history, t))]
        typical = statistics.median(changes) if changes else 0.0
        spread = statistics.median(abs(change - typical) for change in changes) if changes else 0.0
        # The standard error of each update's return, where the monitor logged it: a gain must stand out
        # from how precisely the return is measured, not only from how it moved.
        sems = [metric(row, "ep_rew_sem") for row in list(history.rows)[-t.reward_collapse_window :]]
        errors = [e for e in sems if e is not None and math.isfinite(e)]
        history.cache[key] = max(spread, statistics.median(errors) if errors else 0.0)
    return float(history.cache[key])


def gained(start: float, best: float, noise: float, t: Thresholds, multiple: float | None = None) -> bool:
    """
    Whether ``best`` is a real gain over ``start``: large next to the start's magnitude and to the run's noise.

    :param multiple: How many times the noise (default ``gain_noise_multiple``, the bar for a gain a collapse can lose)
    """
    gain = best - start
    bar = t.gain_noise_multiple if multiple is None else multiple
    return gain > t.reward_collapse_min_gain * abs(start) and gain > bar * noise


def gain_lost(history: History, value: float, thresholds: Thresholds | None = None) -> float | None:
    """
    How much of what training gained in mean episode return ``value`` gives back.

    The gain is the best level ``ep_rew_mean`` held for ``reward_collapse_updates`` updates in a
    row over the last ``reward_collapse_window`` updates, minus the first one (means over fewer
    than ``reward_collapse_min_episodes`` episodes do not count); 0 is the best level, 1 the
    starting level.

    :param history: Per-update rows with ``ep_rew_mean``
    :param value: A mean episode return to judge
    :param thresholds: Detector thresholds (default: :class:`Thresholds`)
    :return: The fraction of the gain lost, or ``None`` while there is no clear gain to lose
    """
    t = thresholds or Thresholds()
    history = as_history(history, t)
    start = history.start_return
    if start is None or not recent_returns(history, t):
        return None
    best = held_best(history, t)
    if not gained(start, best, return_noise(history, t), t):
        return None
    return (best - value) / (best - start)


def held_best(history: HealthHistory, t: Thresholds) -> float:
    """
    The best level the mean return held over ``reward_collapse_updates`` updates in a row, in
    the window: a collapse must last that long, and so must the level it falls from. A one-update
    spike (an outlier episode in a window that turns over every update, as with many agents'
    short episodes) is no level to collapse from.
    """
    key = ("held", t.reward_collapse_window, t.reward_collapse_min_episodes, t.reward_collapse_updates)
    if key not in history.cache:
        recent, n = recent_returns(history, t), t.reward_collapse_updates
        history.cache[key] = (
            min(recent) if len(recent) < n else max(min(recent[i : i + n]) for i in range(len(recent) - n + 1))
        )
    return float(history.cache[key])


def best_step(history: HealthHistory, t: Thresholds, best: float) -> int | None:
    """The step of the update with the best mean return in the window (where a collapse began)."""
    for row in list(history.rows)[-t.reward_collapse_window :]:
        if enough_episodes(row, t) and metric(row, "ep_rew_mean") == best:
            return row_step(row)
    return None
