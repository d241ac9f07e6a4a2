"""
Training-health detectors: pure functions over a metric history, raising plain-language findings.

A history is a sequence of rows, one per PPO update, each a mapping from metric name to
value (the :class:`~sb3_safe.stats.UpdateStats` field names, plus ``ep_rew_mean``).
The same detectors run live (:class:`~sb3_safe.callbacks.HealthMonitorCallback`, on the
algorithm's per-update record) and after the fact (``sb3-safe diagnose``, on
``progress.csv`` or TensorBoard events): they cannot tell the difference.

A missing metric (plain SB3 logs no gradient norms; a CSV row may lack ``train/*``) makes
the detectors that need it stay silent; it never raises.
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np

from sb3_safe.options import (
    AnyFinite,
    Count,
    Fraction,
    FractionOrZero,
    Multiple,
    NonNegative,
    Positive,
    check_fields,
)

__all__ = [
    "DETECTORS",
    "SEVERITY_RANK",
    "Finding",
    "HealthHistory",
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


@dataclass(frozen=True)
class Thresholds:
    """
    Every threshold of the detectors, with defaults that raise nothing critical on healthy runs.

    "Updates" count calls of ``train()`` (one per rollout). Each field's type says what it
    accepts (:mod:`sb3_safe.options`: a count is a whole number >= 1, a fraction is in
    (0, 1], ...); a bad value raises :class:`~sb3_safe.options.OptionError` here and in a profile.
    """

    #: frozen_policy: approx KL below this ...
    frozen_kl: Positive = 1e-5
    #: ... and clip fraction below this ...
    frozen_clip_fraction: Fraction = 1e-3
    #: ... for this many consecutive updates ...
    frozen_updates: Count = 5
    #: ... while the entropy kept at least this fraction of its first value (exploration did not end).
    frozen_entropy_kept: Fraction = 0.5
    #: value_collapse: explained variance below this ...
    collapse_explained_variance: AnyFinite = -1.0
    #: ... for this many consecutive updates ...
    collapse_updates: Count = 5
    #: ... while the rollout's return targets vary: their std is above this fraction of the largest
    #: std the run has seen (a solved task's barely vary, whatever the reward scale).
    collapse_min_returns_std: FractionOrZero = 1e-3
    #: value_divergence: value loss this many times its reference level (geometric mean) ...
    divergence_factor: Multiple = 10.0
    #: ... over this many consecutive updates, each at least half that. Critical when the critic is
    #: also worse than a constant (explained variance < 0) and the loss is still growing (above its
    #: value this many updates before) or ``divergence_severe`` times its level.
    divergence_updates: Count = 2
    #: Updates with a value loss before any is judged (the warm-up) ...
    divergence_window: Count = 10
    #: ... against a reference level: a geometric moving average of the value loss over about this many updates.
    divergence_horizon: Count = 30
    #: The level stops following a loss this many times above it while the critic explains the
    #: returns worse (below 0, or ``divergence_ev_drop`` below its own level): a slow rise of 1.3x
    #: per update cannot drag the reference along ...
    divergence_rise: Multiple = 2.0
    #: ... for at most this many updates; then it follows again (a new scale of the returns that
    #: the critic never learned to explain is a value_collapse warning, not a divergence).
    divergence_max_rise_updates: Count = 30
    #: Critical at this many times the level while the critic is worse than a constant, growing or not.
    divergence_severe: Multiple = 30.0
    #: The rise must also stand out from the loss's own variability: its log at least this many
    #: standard deviations of the log loss around the level. A critic whose loss swings 50x between
    #: rollouts with and without episode ends (CartPole-v1 with rl-zoo's settings) is not diverging
    #: when it swings once more; one whose loss wobbles by 1.4x is, at 10x.
    divergence_noise_multiple: Multiple = 3.0
    #: The reference level is at least this fraction of the largest value loss of the first
    #: ``divergence_window`` updates: a converged critic's loss sits at a noise floor (1e-5), and a
    #: jump from there back to ordinary levels is not divergence.
    divergence_floor: FractionOrZero = 0.01
    #: When explained variance is logged, the critic must also have got worse at explaining the
    #: returns: below 0, or this much below its level (moving average, held with the loss level).
    #: A value loss that rises while explained variance holds is the return scale changing
    #: (learning), not divergence.
    divergence_ev_drop: NonNegative = 0.2
    #: reward_collapse: mean episode return lost this fraction of its gain since the start ...
    reward_collapse_fraction: Fraction = 0.7
    #: ... in this many consecutive updates ...
    reward_collapse_updates: Count = 2
    #: ... within this many updates of its best.
    reward_collapse_window: Count = 50
    #: ... only once the gain is at least this large relative to the starting return's magnitude ...
    reward_collapse_min_gain: NonNegative = 0.2
    #: ... and this many times the run's own noise: how much the change of the mean return from one
    #: update to the next varies over the window (median absolute deviation). No magnitude is
    #: assumed: returns of 0.01 and of 10,000 are judged alike, and a start near 0 does not make
    #: every wobble a gain.
    gain_noise_multiple: Multiple = 8.0
    #: ... and the mean is over at least this many episodes (``episodes`` in the row, when logged):
    #: a mean of 3 early Hopper episodes swings by 70% without anything being wrong.
    reward_collapse_min_episodes: Count = 20
    #: entropy_collapse: std (Gaussian) or entropy (discrete) fell below this fraction of its first value ...
    entropy_collapse_fraction: Fraction = 0.1
    #: ... within this many updates from the start.
    entropy_collapse_updates: Count = 20
    #: no_progress: after this many updates, over at least ``reward_collapse_min_episodes`` episodes,
    #: the mean episode return never made a real gain (``reward_collapse_min_gain``, ``gain_noise_multiple``) ...
    no_progress_updates: Count = 30
    #: ... while exploration (std or entropy) fell below this fraction of its first value.
    no_progress_entropy_kept: Fraction = 0.5
    #: kl_spike: approx KL above this multiple of target_kl (or above kl_spike_absolute without one) ...
    kl_spike_factor: Multiple = 5.0
    kl_spike_absolute: Positive = 0.1
    #: ... with clip fraction above this.
    kl_spike_clip_fraction: FractionOrZero = 0.3

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _get(row: Row, key: str) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class HealthHistory:
    """
    What the detectors know of a run's past, in bounded memory: the most recent rows and
    running summaries of the rest (first values, start and best return, early loss level).

    Feeding it one row per update costs the same at the 1,000th and the 1,000,000th update,
    and it holds the same memory: the live monitor keeps one for the whole run, and
    :func:`scan` replays a log through one. Copies are cheap (a rollback keeps one with each
    snapshot) and :meth:`state_dict` / :meth:`load_state_dict` carry it across a resume.

    :param thresholds: The detector thresholds; their windows size the bounded parts
    """

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        t = thresholds or Thresholds()
        self.thresholds = t
        reference = t.divergence_window + t.divergence_updates
        self.window = max(
            t.reward_collapse_window, reference, t.frozen_updates, t.collapse_updates, t.reward_collapse_updates + 1, 3
        )
        #: The latest rows, oldest first (at most :attr:`window`)
        self.rows: deque[dict[str, float]] = deque(maxlen=self.window)
        #: Updates seen
        self.count = 0
        #: First finite value of the keys that are compared with their start (``std``, ``entropy_loss``)
        self.first: dict[str, float] = {}
        #: Mean episode returns over enough episodes (``reward_collapse_min_episodes``): how many, the first, the best
        self.n_returns = 0
        self.start_return: float | None = None
        self.best_return: float | None = None
        #: The latest finite value losses
        self.losses: deque[float] = deque(maxlen=reference)
        #: Reference levels of the value loss, raw and over the rollout's return variance (log of a
        #: geometric moving average), the largest loss of the first window (for the floor), and how
        #: many finite losses each has seen
        self.loss_level: dict[str, float] = {}
        #: Moving variance of the log loss around its level (held with the level)
        self.loss_log_var: dict[str, float] = {}
        self.early_loss_max = {"raw": -math.inf, "scaled": -math.inf}
        self.loss_count = {"raw": 0, "scaled": 0}
        #: Moving average of explained variance, held and released with the loss level
        self.ev_level: float | None = None
        #: Updates the levels have been held through a rise
        self.held_for = 0
        #: Step of the last update at which the value loss stood near its level (a rise's onset)
        self.calm_step: int | None = None
        self._step = 0
        #: The latest losses over their reference (raw and scaled; ``nan`` during the warm-up)
        self.loss_ratios: deque[dict[str, float]] = deque(maxlen=reference)
        #: Whether every row with a value loss also had a positive return spread
        self.spread_logged = True
        #: The largest return spread (``returns_std``) seen
        self.peak_returns_std = 0.0
        #: Values derived from the rows, computed once per update (cleared by :meth:`push`)
        self.cache: dict[tuple[Any, ...], Any] = {}

    def __len__(self) -> int:
        return self.count

    @classmethod
    def of(cls, rows: Iterable[Row], thresholds: Thresholds | None = None) -> HealthHistory:
        """:return: A history fed with ``rows`` in order"""
        history = cls(thresholds)
        for row in rows:
            history.push(row)
        return history

    def push(self, row: Row) -> None:
        """Add the latest update's row."""
        t = self.thresholds
        clean = {key: value for key in row if (value := _get(row, key)) is not None}
        self.rows.append(clean)
        self.cache = {}
        self.count += 1
        step = clean.get("timesteps")
        self._step = int(step) if step is not None and math.isfinite(step) else self.count
        for key in _FIRST_KEYS:
            if key not in self.first and _finite(clean.get(key)):
                self.first[key] = clean[key]
        ret = clean.get("ep_rew_mean")
        if _finite(ret) and _enough_episodes(clean, t):
            assert ret is not None
            self.n_returns += 1
            self.start_return = ret if self.start_return is None else self.start_return
            self.best_return = ret if self.best_return is None else max(self.best_return, ret)
        loss, spread = clean.get("value_loss"), clean.get("returns_std")
        if loss is not None and not (spread is not None and spread > 0):
            self.spread_logged = False
        if _finite(spread):
            assert spread is not None
            self.peak_returns_std = max(self.peak_returns_std, spread)
        if _finite(loss):
            assert loss is not None
            self.losses.append(loss)
            values = {"raw": loss}
            if spread is not None and spread > 0:
                values["scaled"] = loss / spread**2
            self._judge_and_follow(values, clean.get("explained_variance"))

    def _reference(self, kind: str) -> float | None:
        if kind not in self.loss_level or self.loss_count[kind] < self.thresholds.divergence_window:
            return None
        return max(math.exp(self.loss_level[kind]), self.thresholds.divergence_floor * self.early_loss_max[kind])

    def _judge_and_follow(self, values: dict[str, float], ev: float | None) -> None:
        """Measure the loss against the levels, then let the levels follow it unless a rise is under way."""
        t = self.thresholds
        ratios = {}
        for kind, value in values.items():
            reference = self._reference(kind)
            ratios[kind] = value / reference if reference is not None and reference > 0 else math.nan
        self.loss_ratios.append(ratios)
        critic_ok = (
            ev is None
            or not math.isfinite(ev)
            or self.ev_level is None
            or (ev >= 0 and ev > self.ev_level - t.divergence_ev_drop)
        )
        rising = ratios["raw"] >= t.divergence_rise  # nan (warm-up) compares False
        if not ratios["raw"] >= _CALM_RATIO:
            self.calm_step = self._step
        if rising and not critic_ok and self.held_for < t.divergence_max_rise_updates:
            self.held_for += 1
            return
        self.held_for = 0
        alpha = 2.0 / (t.divergence_horizon + 1)
        for kind, value in values.items():
            log_value = math.log(max(value, 1e-300))
            level = self.loss_level.get(kind)
            if level is None:
                self.loss_level[kind], self.loss_log_var[kind] = log_value, 0.0
            else:
                deviation = log_value - level
                self.loss_level[kind] = level + alpha * deviation
                self.loss_log_var[kind] += alpha * (deviation**2 - self.loss_log_var[kind])
            if self.loss_count[kind] < t.divergence_window:
                self.early_loss_max[kind] = max(self.early_loss_max[kind], value)
            self.loss_count[kind] += 1
        if _finite(ev):
            assert ev is not None
            self.ev_level = ev if self.ev_level is None else self.ev_level + alpha * (ev - self.ev_level)

    @property
    def last(self) -> dict[str, float]:
        return self.rows[-1]

    def tail(self, n: int) -> list[dict[str, float]] | None:
        """:return: The last ``n`` rows, or ``None`` while fewer than ``n`` updates were seen"""
        return list(self.rows)[-n:] if self.count >= n else None

    def copy(self) -> HealthHistory:
        """:return: An independent copy (rows are not shared)"""
        other = copy.copy(self)
        other.rows = deque((dict(row) for row in self.rows), maxlen=self.window)
        other.first, other.early_loss_max, other.loss_count, other.loss_level, other.loss_log_var = (
            dict(self.first),
            dict(self.early_loss_max),
            dict(self.loss_count),
            dict(self.loss_level),
            dict(self.loss_log_var),
        )
        other.losses = copy.copy(self.losses)
        other.cache = {}
        other.loss_ratios = deque((dict(r) for r in self.loss_ratios), maxlen=self.loss_ratios.maxlen)
        return other

    def state_dict(self) -> dict[str, Any]:
        """:return: Plain data (JSON-compatible) to save beside a checkpoint"""
        return {
            "rows": list(self.rows),
            "count": self.count,
            "first": self.first,
            "n_returns": self.n_returns,
            "start_return": self.start_return,
            "best_return": self.best_return,
            "losses": list(self.losses),
            "loss_level": self.loss_level,
            "loss_log_var": self.loss_log_var,
            "early_loss_max": self.early_loss_max,
            "loss_count": self.loss_count,
            "ev_level": self.ev_level,
            "held_for": self.held_for,
            "calm_step": self.calm_step,
            "step": self._step,
            "loss_ratios": list(self.loss_ratios),
            "spread_logged": self.spread_logged,
            "peak_returns_std": self.peak_returns_std,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the thresholds stay this history's own)."""
        self.cache = {}
        self.rows = deque((dict(row) for row in state["rows"]), maxlen=self.window)
        self.count = int(state["count"])
        self.first = dict(state["first"])
        self.n_returns = int(state["n_returns"])
        self.start_return, self.best_return = state["start_return"], state["best_return"]
        self.losses = deque(state["losses"], maxlen=self.losses.maxlen)
        self.loss_level = dict(state["loss_level"])
        self.loss_log_var = dict(state["loss_log_var"])
        self.early_loss_max = dict(state["early_loss_max"])
        self.loss_count = dict(state["loss_count"])
        self.ev_level = state["ev_level"]
        self.held_for = int(state["held_for"])
        self.calm_step = state.get("calm_step")  # absent in states saved before onsets were tracked
        self._step = int(state.get("step", self.count))
        self.loss_ratios = deque((dict(r) for r in state["loss_ratios"]), maxlen=self.loss_ratios.maxlen)
        self.spread_logged = bool(state["spread_logged"])
        self.peak_returns_std = float(state["peak_returns_std"])


_FIRST_KEYS = ("std", "entropy_loss")
# A value loss below this multiple of its level counts as calm (the onset of a later rise).
_CALM_RATIO = 1.5
History = HealthHistory | Sequence[Row]


def _as_history(history: History, thresholds: Thresholds) -> HealthHistory:
    return history if isinstance(history, HealthHistory) else HealthHistory.of(history, thresholds)


def _series(rows: Iterable[Row], key: str) -> list[float]:
    return [v for v in (_get(row, key) for row in rows) if v is not None and math.isfinite(v)]


def _timestep(history: HealthHistory) -> int:
    value = history.last.get("timesteps")
    return int(value) if value is not None and math.isfinite(value) else len(history)


def _finding(
    history: HealthHistory,
    code: str,
    severity: Severity,
    values: dict[str, float],
    message: str,
    advice: str,
    onset: int | None = None,
) -> Finding:
    rounded = {k: float(f"{v:.6g}") for k, v in values.items()}
    now = _timestep(history)
    return Finding(code, severity, now, rounded, message, advice, now if onset is None else min(onset, now))


def _non_finite(history: HealthHistory, t: Thresholds, target_kl: float | None) -> Finding | None:
    row = history.last
    bad = {
        key: value
        for key in (
            "loss",
            "value_loss",
            "policy_gradient_loss",
            "approx_kl",
            "actor_grad_norm",
            "critic_grad_norm",
            "ep_rew_mean",
        )
        if (value := _get(row, key)) is not None and not math.isfinite(value)
    }
    for flag in ("params_finite", "obs_finite", "rewards_finite"):
        if _get(row, flag) == 0.0:
            bad[flag] = 0.0
    skipped = _get(row, "skipped_updates") or 0.0
    if skipped > 0:
        bad["skipped_updates"] = skipped
    if not bad:
        return None
    return _finding(
        history,
        "non_finite",
        "critical",
        bad,
        f"Non-finite values in training ({', '.join(sorted(bad))}).",
        "Look for NaN/inf in observations and rewards (wrap the env in VecCheckNan), lower learning_rate, set "
        "max_grad_norm: 0.5 and value_loss: huber; resume from the last healthy checkpoint.",
        # The rollout that brought the NaN in began at the previous update.
        onset=_row_step(history.rows[-2]) if len(history.rows) > 1 else None,
    )


def _row_step(row: Row) -> int | None:
    step = _get(row, "timesteps")
    return int(step) if step is not None and math.isfinite(step) else None


def _frozen_policy(history: HealthHistory, t: Thresholds, target_kl: float | None) -> Finding | None:
    window = history.tail(t.frozen_updates)
    if window is None:
        return None
    kls, clips = _series(window, "approx_kl"), _series(window, "clip_fraction")
    if len(kls) < t.frozen_updates or len(clips) < t.frozen_updates:
        return None
    if max(kls) >= t.frozen_kl or max(clips) >= t.frozen_clip_fraction:
        return None
    values = {"approx_kl": statistics.fmean(kls), "clip_fraction": statistics.fmean(clips)}
    entropy_kept = _entropy_kept(history)
    if entropy_kept is not None:
        if entropy_kept < t.frozen_entropy_kept:
            return None  # a converged, near-deterministic policy is not frozen
        values["entropy_kept"] = entropy_kept
    return _finding(
        history,
        "frozen_policy",
        "warning",
        values,
        f"The policy has stopped moving: approx KL {values['approx_kl']:.1e} and clip fraction "
        f"{values['clip_fraction']:.1e} over {t.frozen_updates} updates while exploration is still high.",
        "Raise learning_rate (x3), check that normalize_advantage is on and adv_norm_min_std is not larger than the "
        "advantage std (train/advantages_std), and that rewards are not all equal.",
    )


def _no_progress(history: HealthHistory, t: Thresholds, target_kl: float | None) -> Finding | None:
    start, best, now = history.start_return, history.best_return, history.last.get("ep_rew_mean")
    if len(history) < t.no_progress_updates or history.n_returns < 2 or not _enough_episodes(history.last, t):
        return None
    if not _finite(now):
        return None
    assert start is not None and best is not None and now is not None
    if _gained(start, best, _return_noise(history, t), t):
        return None
    kept = _entropy_kept(history)
    if kept is None or kept >= t.no_progress_entropy_kept:
        return None
    what = "std" if history.first.get("std") else "entropy"
    return _finding(
        history,
        "no_progress",
        "warning",
        {"ep_rew_mean": now, "start_ep_rew_mean": start, "best_ep_rew_mean": best, "entropy_kept": kept},
        f"Little progress: the mean episode return is {now:.4g} (start {start:.4g}, best {best:.4g}) after "
        f"{len(history)} updates, while the policy's {what} fell to {100 * kept:.0f}% of its start: exploration is "
        "ending before the policy found what earns reward.",
        "Keep exploring longer: lower learning_rate (x0.3) or raise ent_coef (0.01). Check that the critic keeps up "
        "(explained variance; clip_range_vf limits how far it follows the returns per update), that the reward can be "
        "reached (a sparse reward wants use_sde: true or longer n_steps), and that rewards are normalized.",
    )


def _entropy_kept(history: HealthHistory) -> float | None:
    """Current over first: Gaussian std if logged, else entropy (``-entropy_loss``) when positive."""
    first_std, std = history.first.get("std"), history.last.get("std")
    if first_std is not None and first_std > 0 and std is not None and math.isfinite(std) and len(history) >= 2:
        return std / first_std
    first_loss, loss = history.first.get("entropy_loss"), history.last.get("entropy_loss")
    if first_loss is not None and first_loss < 0 and loss is not None and math.isfinite(loss) and len(history) >= 2:
        return loss / first_loss  # entropy_loss is -entropy
    return None


def _value_collapse(history: HealthHistory, t: Thresholds, target_kl: float | None) -> Finding | None:
    window = history.tail(t.collapse_updates)
    if window is None:
        return None
    evs = _series(window, "explained_variance")
    if len(evs) < t.collapse_updates or max(evs) >= t.collapse_explained_variance:
        return None
    spread = _series(window, "returns_std")
    if spread and statistics.fmean(spread) <= t.collapse_min_returns_std * history.peak_returns_std:
        return None  # returns barely vary: explained variance is meaningless
    return _finding(
        history,
        "value_collapse",
        "warning",
        {"explained_variance": statistics.fmean(evs), **({"returns_std": statistics.fmean(spread)} if spread else {})},
        f"The critic predicts worse than a constant: explained variance {statistics.fmean(evs):.3g} over "
        f"{t.collapse_updates} updates.",
        "Normalize rewards (normalize: {norm_reward: true}) and value targets (normalize_value: true), use value_loss: "
        "huber, give the critic its own critic_learning_rate, and check gamma against the episode length.",
    )


def _rise(history: HealthHistory, t: Thresholds) -> float | None:
    """
    How far the value loss stands above its reference level over the last ``divergence_updates``
    updates (geometric mean of the ratios), or ``None`` when it does not count as a rise: during the
    warm-up, when one of those updates is below half the factor (a lone spike that settles), or when
    the rise is under the factor or does not stand out from the loss's own spread in log space. With
    the return spread logged on every row, the raw loss and the loss relative to the spread must
    both rise; the smaller of the two is returned.
    """
    if len(history.loss_ratios) < t.divergence_updates:
        return None
    latest = list(history.loss_ratios)[-t.divergence_updates :]
    rises = []
    for kind in ("raw", "scaled") if history.spread_logged else ("raw",):
        ratios = [r.get(kind, math.nan) for r in latest]
        if any(math.isnan(r) for r in ratios) or min(ratios) < t.divergence_factor / 2:
            return None
        rise = statistics.geometric_mean(ratios)
        spread = math.sqrt(history.loss_log_var.get(kind, 0.0))
        if rise < t.divergence_factor or math.log(rise) < t.divergence_noise_multiple * spread:
            return None
        rises.append(rise)
    return min(rises)


def _value_divergence(history: HealthHistory, t: Thresholds, target_kl: float | None) -> Finding | None:
    # The reference is a long-horizon level that does not follow a rise while the critic explains
    # the returns worse (HealthHistory._judge_and_follow): a loss climbing 1.3-1.5x per update is
    # 30x its level within ~10 updates. With the return spread logged, a spike must show in the raw
    # loss and in the loss relative to the spread: raw alone misleads when the spread changes (rollouts
    # in which no episode ends have near-constant targets and a tiny loss, the next rollout with an
    # episode end reads as a 100x spike); relative alone misleads the other way (HalfCheetah's
    # rollouts alternate between 0.98 and 0.4 explained variance as their return spread swings).
    ratio = _rise(history, t)
    if ratio is None:
        return None
    recent = list(history.losses)[-(t.divergence_updates + 1) :]
    latest = min(history.loss_ratios[-1][kind] for kind in (("raw", "scaled") if history.spread_logged else ("raw",)))
    values = {"value_loss": float(history.last.get("value_loss") or 0.0), "ratio": latest, "rise": ratio}
    ev_now = history.last.get("explained_variance")
    if ev_now is not None and math.isfinite(ev_now) and history.ev_level is not None:
        if ev_now >= 0 and ev_now > history.ev_level - t.divergence_ev_drop:
            return None  # the critic explains the returns as well as before: their scale changed
        values.update(explained_variance=ev_now, reference_explained_variance=history.ev_level)
    growing = len(recent) > t.divergence_updates and recent[-1] > recent[0]
    # Critical (a rollback in the safe profile) only when the critic is now worse than a constant:
    # a breakthrough in learning can also cut explained variance for a while (measured on
    # LunarLander-v3: 0.99 -> 0.25 as landings began), but not below zero.
    worse_than_constant = ev_now is None or not math.isfinite(ev_now) or ev_now < 0
    severity: Severity = "critical" if worse_than_constant and (growing or ratio >= t.divergence_severe) else "warning"
    return _finding(
        history,
        "value_divergence",
        severity,
        values,
        f"Value loss is {latest:.0f}x its reference level ({recent[-1]:.3g})"
        f"{' and still growing' if growing else ''}: the critic is diverging.",
        "Lower critic_learning_rate (or learning_rate) by 3-10x, set max_grad_norm: 0.5, use value_loss: huber or "
        "blend with clip_range_vf: 0.2, and normalize rewards; roll back to a checkpoint from before the spike.",
        onset=history.calm_step,
    )


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


def _enough_episodes(row: Row, t: Thresholds) -> bool:
    episodes = _get(row, "episodes")
    return episodes is None or episodes >= t.reward_collapse_min_episodes


def _returns(rows: Iterable[Row], t: Thresholds) -> list[float]:
    """
    The mean episode returns over at least ``reward_collapse_min_episodes`` episodes: right after
    the start or a rollback (which empties the episode buffer) a mean over one 1,000-step Hopper
    episode is no level to measure a collapse from.
    """
    found = [_get(row, "ep_rew_mean") for row in rows if _enough_episodes(row, t)]
    values = [v for v in found if v is not None and math.isfinite(v)]
    # An update after which no episode ended repeats the previous mean exactly: no new measurement
    # (with 100-step episodes and 50-step rollouts every other one), and no change to count as calm.
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def _recent_returns(history: HealthHistory, t: Thresholds) -> list[float]:
    key = ("returns", t.reward_collapse_window, t.reward_collapse_min_episodes)
    if key not in history.cache:
        history.cache[key] = _returns(list(history.rows)[-t.reward_collapse_window :], t)
    return list(history.cache[key])


def _return_noise(history: HealthHistory, t: Thresholds) -> float:
    """
    The run's own noise in mean return: how much the change from one update to the next varies
    over the window (median absolute deviation of the changes; a steady climb has none).
    """
    key = ("noise", t.reward_collapse_window, t.reward_collapse_min_episodes)
    if key not in history.cache:
        changes = [b - a for a, b in itertools.pairwise(_recent_returns(history, t))]
        typical = statistics.median(changes) if changes else 0.0
        spread = statistics.median(abs(change - typical) for change in changes) if changes else 0.0
        # The standard error of each update's return, where the monitor logged it: a gain must stand out
        # from how precisely the return is measured, not only from how it moved.
        sems = [_get(row, "ep_rew_sem") for row in list(history.rows)[-t.reward_collapse_window :]]
        errors = [e for e in sems if e is not None and math.isfinite(e)]
        history.cache[key] = max(spread, statistics.median(errors) if errors else 0.0)
    return float(history.cache[key])


def _gained(start: float, best: float, noise: float, t: Thresholds) -> bool:
    """Whether ``best`` is a real gain over ``start``: large next to the start's magnitude and to the run's noise."""
    gain = best - start
    return gain > t.reward_collapse_min_gain * abs(start) and gain > t.gain_noise_multiple * noise


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
    history = _as_history(history, t)
    start = history.start_return
    if start is None or not _recent_returns(history, t):
        return None
    best = _held_best(history, t)
    if not _gained(start, best, _return_noise(history, t), t):
        return None
    return (best - value) / (best - start)


def _held_best(history: HealthHistory, t: Thresholds) -> float:
    """
    The best level the mean return held over ``reward_collapse_updates`` updates in a row, in
    the window: a collapse must last that long, and so must the level it falls from. A one-update
    spike (an outlier episode in a window that turns over every update, as with many agents'
    short episodes) is no level to collapse from.
    """
    key = ("held", t.reward_collapse_window, t.reward_collapse_min_episodes, t.reward_collapse_updates)
    if key not in history.cache:
        recent, n = _recent_returns(history, t), t.reward_collapse_updates
        history.cache[key] = (
            min(recent) if len(recent) < n else max(min(recent[i : i + n]) for i in range(len(recent) - n + 1))
        )
    return float(history.cache[key])


def _reward_collapse(history: HealthHistory, t: Thresholds, target_kl: float | None) -> Finding | None:
    recent = _recent_returns(history, t)
    if len(recent) < t.reward_collapse_updates + 1 or len(history) < 3 or not _enough_episodes(history.last, t):
        return None
    judged = [gain_lost(history, value, t) for value in recent[-t.reward_collapse_updates :]]
    lost = [fraction for fraction in judged if fraction is not None]
    if len(lost) < len(judged) or min(lost) < t.reward_collapse_fraction:
        return None
    current, best, start = recent[-1], _held_best(history, t), history.start_return
    assert start is not None
    return _finding(
        history,
        "reward_collapse",
        "critical",
        {"ep_rew_mean": current, "best_ep_rew_mean": best, "start_ep_rew_mean": start, "fraction_lost": lost[-1]},
        f"Mean episode return fell from {best:.4g} to {current:.4g}, losing {100 * lost[-1]:.0f}% of what training "
        "had gained.",
        "Roll back to the checkpoint at the best return, then lower learning_rate (x0.3), set target_kl: 0.015 with "
        "kl_stop: epoch, and max_grad_norm: 0.5.",
        onset=_best_step(history, t, best),
    )


def _best_step(history: HealthHistory, t: Thresholds, best: float) -> int | None:
    """The step of the update with the best mean return in the window (where a collapse began)."""
    for row in list(history.rows)[-t.reward_collapse_window :]:
        if _enough_episodes(row, t) and _get(row, "ep_rew_mean") == best:
            return _row_step(row)
    return None


def _entropy_collapse(history: HealthHistory, t: Thresholds, target_kl: float | None) -> Finding | None:
    if len(history) > t.entropy_collapse_updates:
        return None
    kept = _entropy_kept(history)
    if kept is None or kept >= t.entropy_collapse_fraction:
        return None
    return _finding(
        history,
        "entropy_collapse",
        "warning",
        {"entropy_kept": kept, "updates": float(len(history))},
        f"Exploration collapsed early: the policy's {'std' if history.first.get('std') else 'entropy'} fell to "
        f"{100 * kept:.0f}% of its initial value within {len(history)} updates.",
        "Add an entropy bonus (ent_coef: 0.001-0.01), lower learning_rate, or raise log_std_init; check the reward "
        "scale (normalize rewards).",
    )


def _kl_spike(history: HealthHistory, t: Thresholds, target_kl: float | None) -> Finding | None:
    kl = history.last.get("approx_kl")
    clip = history.last.get("clip_fraction")
    if kl is None or clip is None or not math.isfinite(kl):
        return None
    limit = t.kl_spike_factor * target_kl if target_kl else t.kl_spike_absolute
    if kl <= limit or clip <= t.kl_spike_clip_fraction:
        return None
    return _finding(
        history,
        "kl_spike",
        "warning",
        {"approx_kl": kl, "clip_fraction": clip, "limit": limit},
        f"One update moved the policy far: approx KL {kl:.3g} (limit {limit:.3g}) with {100 * clip:.0f}% of samples clipped.",
        "Lower learning_rate, set target_kl: 0.015 (kl_stop: epoch stops the remaining epochs), use fewer n_epochs or "
        "a larger batch_size.",
    )


Detector = Callable[[HealthHistory, Thresholds, "float | None"], "Finding | None"]

#: Every detector by its finding code, in the order they are reported for one update.
DETECTORS: dict[str, Detector] = {
    "non_finite": _non_finite,
    "value_divergence": _value_divergence,
    "reward_collapse": _reward_collapse,
    "value_collapse": _value_collapse,
    "frozen_policy": _frozen_policy,
    "entropy_collapse": _entropy_collapse,
    "kl_spike": _kl_spike,
    "no_progress": _no_progress,
}


def detect(history: History, thresholds: Thresholds | None = None, target_kl: float | None = None) -> list[Finding]:
    """
    Run every detector on the latest update of ``history``.

    :param history: A :class:`HealthHistory` (its own thresholds are used when ``thresholds`` is not
        given), or one row per update, oldest first
    :param thresholds: Detector thresholds (default: :class:`Thresholds`)
    :param target_kl: The run's ``target_kl``, if any (for ``kl_spike``)
    :return: The findings at the latest update, most severe first
    """
    if isinstance(history, HealthHistory):
        thresholds = thresholds or history.thresholds
    thresholds = thresholds or Thresholds()
    history = _as_history(history, thresholds)
    if not len(history):
        return []
    found = [finding for detector in DETECTORS.values() if (finding := detector(history, thresholds, target_kl)) is not None]
    return sorted(found, key=lambda f: -SEVERITY_RANK[f.severity])


#: evaluation_collapse: the final evaluation gave back more than this fraction of the periodic evaluations' gain.
EVALUATION_COLLAPSE_FRACTION = 0.5


def evaluation_noise_floor(standard_error: float, z: float = 2.0) -> float:
    """
    :param standard_error: The standard error of one evaluation's mean return
    :param z: How many standard errors a real difference exceeds
    :return: The smallest difference between two evaluations that their noise does not explain,
        ``z * sqrt(2) * standard_error``
    """
    return z * math.sqrt(2.0) * standard_error


def evaluation_collapse(
    steps: Sequence[int],
    means: Sequence[float],
    final: float,
    final_step: int,
    fraction: float = EVALUATION_COLLAPSE_FRACTION,
    noise: float = 0.0,
) -> Finding | None:
    """
    The benchmark suite's collapse rule, over a run's evaluations rather than its training log: the
    final evaluation gave back more than ``fraction`` of what the periodic evaluations gained from
    the first to the best. Deterministic evaluations see what a training return can hide (a run
    whose training return still climbs while its greedy policy has fallen apart).

    :param steps: The periodic evaluations' steps (``eval/evaluations.npz``)
    :param means: Their mean returns
    :param final: The final evaluation's mean return (``result.json``)
    :param final_step: The step of the final evaluation
    :param fraction: The share of the gain that counts as a collapse
    :param noise: The smallest gain, and the smallest loss, that count: differences the evaluations'
        own noise could make are none (``sb3-safe diagnose`` passes twice the standard error of a
        difference of two evaluations, :func:`evaluation_noise_floor`; the benchmark table's
        published rule, 0)
    :return: A critical finding whose onset is the best evaluation's step, or ``None`` (also when
        there was no gain, or ``final`` is not finite)
    """
    if not means or not math.isfinite(final):
        return None
    best_index = max(range(len(means)), key=lambda i: means[i])
    first, best = means[0], means[best_index]
    gain = best - first
    if not gain > max(noise, 0.0) or best - final <= max(fraction * gain, noise):
        return None
    lost = (best - final) / gain
    return Finding(
        "evaluation_collapse",
        "critical",
        final_step,
        {"final_eval_return": final, "best_eval_return": best, "fraction_lost": round(lost, 4)},
        f"The final evaluation returned {final:.4g}, {100 * lost:.0f}% of the way from the best periodic evaluation "
        f"({best:.4g}, step {steps[best_index]:,}) back to the first ({first:.4g}).",
        "Continue from the checkpoint at the best evaluation under the safe profile (sb3-safe recover), or lower "
        "learning_rate (x0.3) and set target_kl: 0.015 with kl_stop: epoch.",
        onset=int(steps[best_index]),
    )


def evaluation_peak_before(
    steps: Sequence[int], means: Sequence[float], onset: int, until: int, noise: float = 0.0
) -> int | None:
    """
    Where a collapse began in the greedy policy, when that was before the training return peaked:
    deterministic evaluations can start falling while the noisier training return still climbs
    (exploration noise hides a policy that is sharpening the wrong way).

    :param steps: The periodic evaluations' steps
    :param means: Their mean returns
    :param onset: The training log's onset (the step of the best mean return)
    :param until: The step at which the collapse became critical
    :param noise: The smallest difference that counts (:func:`evaluation_noise_floor`)
    :return: The step of the best evaluation before ``onset``, when it beats every evaluation from
        ``onset`` to ``until`` by more than ``noise``; ``None`` otherwise (no evaluation on either side,
        or a difference the evaluations' noise could make)
    """
    before = [(mean, step) for step, mean in zip(steps, means, strict=True) if step < onset]
    since = [mean for step, mean in zip(steps, means, strict=True) if onset <= step <= until]
    if not before or not since:
        return None
    best, step = max(before)
    return int(step) if best - max(since) > max(noise, 0.0) else None


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


#: Former names, kept importable: ``CODES`` holds the detectors, ``EpisodeTracker`` tracks
#: episodes of *trouble* (not environment episodes).
CODES = DETECTORS
EpisodeTracker = TroubleTracker
