"""
:class:`HealthHistory`: what the detectors know of a run's past, in bounded memory.

Its state is declared once, as the dataclass fields below; copying, saving and loading are
derived from them, so a field added here is carried across a rollback and a resume without
being listed anywhere else.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from sb3_safe.health.findings import Row, finite, metric
from sb3_safe.health.thresholds import Thresholds

__all__ = ["HealthHistory", "History", "as_history", "enough_episodes"]

_FIRST_KEYS = ("std", "entropy_loss")
# A value loss below this multiple of its level counts as calm (the onset of a later rise).
_CALM_RATIO = 1.5


@dataclass(init=False, eq=False)
class HealthHistory:
    """
    What the detectors know of a run's past, in bounded memory: the most recent rows and
    running summaries of the rest (first values, start and best return, early loss level).

    Feeding it one row per update costs the same at the 1,000th and the 1,000,000th update,
    and it holds the same memory: the live monitor keeps one for the whole run, and
    :func:`~sb3_safe.health.scan` replays a log through one. Copies are cheap (a rollback keeps
    one with each snapshot) and :meth:`state_dict` / :meth:`load_state_dict` carry it across a resume.

    Every dataclass field is state (saved, loaded, copied); ``thresholds``, ``window`` and
    ``cache`` are not. A field holds a number, or a deque or dict of values never changed in place
    (numbers, tuples, rows once pushed): :meth:`copy` copies the containers, not what they hold.

    :param thresholds: The detector thresholds; their windows size the bounded parts
    """

    #: The latest rows, oldest first (at most :attr:`window`)
    rows: deque[dict[str, float]] = field(default_factory=deque)
    #: Updates seen
    count: int = 0
    #: Step of the latest update (its ``timesteps``, else :attr:`count`)
    step: int = 0
    #: First finite value of the keys that are compared with their start (``std``, ``entropy_loss``)
    first: dict[str, float] = field(default_factory=dict)
    #: Mean episode returns over enough episodes (``reward_collapse_min_episodes``): how many, the first, the best
    n_returns: int = 0
    start_return: float | None = None
    best_return: float | None = None
    #: The latest finite value losses
    losses: deque[float] = field(default_factory=deque)
    #: Reference levels of the value loss, raw and over the rollout's return variance (log of a
    #: geometric moving average), the largest loss of the first window (for the floor), and how
    #: many finite losses each has seen
    loss_level: dict[str, float] = field(default_factory=dict)
    #: Moving variance of the log loss around its level (held with the level)
    loss_log_var: dict[str, float] = field(default_factory=dict)
    early_loss_max: dict[str, float] = field(default_factory=lambda: {"raw": -math.inf, "scaled": -math.inf})
    loss_count: dict[str, int] = field(default_factory=lambda: {"raw": 0, "scaled": 0})
    #: Moving average of explained variance, held and released with the loss level
    ev_level: float | None = None
    #: Updates the levels have been held through a rise
    held_for: int = 0
    #: Step of the last update at which the value loss stood near its level (a rise's onset)
    calm_step: int | None = None
    #: The latest losses over their reference (raw and scaled; ``nan`` during the warm-up)
    loss_ratios: deque[dict[str, float]] = field(default_factory=deque)
    #: Whether every row with a value loss also had a positive return spread
    spread_logged: bool = True
    #: The largest return spread (``returns_std``) seen
    peak_returns_std: float = 0.0
    #: log approx KL of the latest calm updates (those not at ``blowup_factor`` times the level): the KL level
    kl_calm: deque[float] = field(default_factory=deque)
    #: The latest updates' steps, and whether their approx KL was at ``blowup_factor`` times the level
    kl_marks: deque[tuple[int, bool]] = field(default_factory=deque)

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        t = thresholds or Thresholds()
        self.thresholds = t
        reference = t.divergence_window + t.divergence_updates
        self.window = max(
            t.reward_collapse_window, reference, t.frozen_updates, t.collapse_updates, t.reward_collapse_updates + 1, 3
        )
        #: Values derived from the rows, computed once per update (cleared by :meth:`push`)
        self.cache: dict[tuple[Any, ...], Any] = {}
        for f in fields(self):
            setattr(self, f.name, f.default_factory() if f.default_factory is not MISSING else f.default)
        self.rows = deque(maxlen=self.window)
        self.losses = deque(maxlen=reference)
        self.loss_ratios = deque(maxlen=reference)
        self.kl_calm = deque(maxlen=t.blowup_reference_updates)
        self.kl_marks = deque(maxlen=t.blowup_window + 1)  # one more: the calm update before the first mark

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
        clean = {key: value for key in row if (value := metric(row, key)) is not None}
        self.rows.append(clean)
        self.cache = {}
        self.count += 1
        step = clean.get("timesteps")
        self.step = int(step) if step is not None and math.isfinite(step) else self.count
        for key in _FIRST_KEYS:
            if key not in self.first and finite(clean.get(key)):
                self.first[key] = clean[key]
        ret = clean.get("ep_rew_mean")
        if finite(ret) and enough_episodes(clean, t):
            assert ret is not None
            self.n_returns += 1
            self.start_return = ret if self.start_return is None else self.start_return
            self.best_return = ret if self.best_return is None else max(self.best_return, ret)
        self._mark_kl(clean.get("approx_kl"))
        loss, spread = clean.get("value_loss"), clean.get("returns_std")
        if loss is not None and not (spread is not None and spread > 0):
            self.spread_logged = False
        if finite(spread):
            assert spread is not None
            self.peak_returns_std = max(self.peak_returns_std, spread)
        if finite(loss):
            assert loss is not None
            self.losses.append(loss)
            values = {"raw": loss}
            if spread is not None and spread > 0:
                values["scaled"] = loss / spread**2
            self._judge_and_follow(values, clean.get("explained_variance"))

    def kl_level(self) -> float | None:
        """:return: The run's own approx KL level (median of its latest calm updates), ``None`` during the warm-up"""
        if len(self.kl_calm) < self.thresholds.blowup_warmup:
            return None
        return math.exp(statistics.median(self.kl_calm))

    def _mark_kl(self, kl: float | None) -> None:
        """Mark an update whose approx KL stands ``blowup_factor`` times above the level; calm ones feed the level."""
        if kl is None or not math.isfinite(kl) or kl <= 0:
            return
        level = self.kl_level()
        high = level is not None and kl >= self.thresholds.blowup_factor * level
        self.kl_marks.append((self.step, high))
        if not high:
            self.kl_calm.append(math.log(kl))

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
            self.calm_step = self.step
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
        if finite(ev):
            assert ev is not None
            self.ev_level = ev if self.ev_level is None else self.ev_level + alpha * (ev - self.ev_level)

    @property
    def last(self) -> dict[str, float]:
        return self.rows[-1]

    def tail(self, n: int) -> list[dict[str, float]] | None:
        """:return: The last ``n`` rows, or ``None`` while fewer than ``n`` updates were seen"""
        return list(self.rows)[-n:] if self.count >= n else None

    def copy(self) -> HealthHistory:
        """
        :return: An independent copy. The rows and loss ratios are shared with this history: they are never
            changed once pushed, so copying the containers that hold them is enough (a rollback keeps a
            copy with every snapshot: this costs microseconds, a deep copy of the window did not)
        """
        other = HealthHistory(self.thresholds)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, deque):
                value = deque(value, maxlen=value.maxlen)
            elif isinstance(value, dict):
                value = dict(value)
            setattr(other, f.name, value)
        return other

    def state_dict(self) -> dict[str, Any]:
        """:return: Every field as plain data (JSON-compatible) to save beside a checkpoint"""
        return {f.name: copy.deepcopy(_plain(getattr(self, f.name))) for f in fields(self)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """
        Continue from :meth:`state_dict` (the thresholds stay this history's own). A field missing
        from ``state`` (saved by an earlier version) keeps its starting value.
        """
        self.cache = {}
        for f in fields(self):
            if f.name not in state:
                continue
            value, current = copy.deepcopy(state[f.name]), getattr(self, f.name)
            if isinstance(current, deque):  # JSON gave back lists where tuples were saved
                value = deque((tuple(v) if isinstance(v, list) else v for v in value), maxlen=current.maxlen)
            setattr(self, f.name, value)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, deque) else value


History = HealthHistory | Sequence[Row]


def as_history(history: History, thresholds: Thresholds) -> HealthHistory:
    """:return: ``history``, or a :class:`HealthHistory` fed with its rows"""
    return history if isinstance(history, HealthHistory) else HealthHistory.of(history, thresholds)


def enough_episodes(row: Row, t: Thresholds) -> bool:
    """Whether the row's mean return is over ``reward_collapse_min_episodes`` episodes (an unknown count is enough)."""
    episodes = metric(row, "episodes")
    return episodes is None or episodes >= t.reward_collapse_min_episodes
