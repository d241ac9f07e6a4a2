"""
The detectors: pure functions of a :class:`~sb3_safe.health.HealthHistory` that return a
:class:`~sb3_safe.health.Finding` or ``None``, and :func:`detect`, which runs them all.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence

from sb3_safe.health.findings import SEVERITY_RANK, Finding, Row, Severity, finite, metric, row_step
from sb3_safe.health.history import HealthHistory, History, as_history, enough_episodes
from sb3_safe.health.returns import (
    best_step,
    gain_lost,
    gained,
    held_best,
    measured_returns,
    recent_returns,
    return_noise,
)
from sb3_safe.health.thresholds import Thresholds

__all__ = ["DETECTORS", "Detector", "detect"]


def _series(rows: Iterable[Row], key: str) -> list[float]:
    return [v for v in (metric(row, key) for row in rows) if v is not None and math.isfinite(v)]


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
        if (value := metric(row, key)) is not None and not math.isfinite(value)
    }
    for flag in ("params_finite", "obs_finite", "rewards_finite"):
        if metric(row, flag) == 0.0:
            bad[flag] = 0.0
    skipped = metric(row, "skipped_updates") or 0.0
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
        onset=row_step(history.rows[-2]) if len(history.rows) > 1 else None,
    )


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
    if len(history) < t.no_progress_updates or history.n_returns < 2 or not enough_episodes(history.last, t):
        return None
    if not finite(now):
        return None
    assert start is not None and best is not None and now is not None
    if gained(start, best, return_noise(history, t), t, t.no_progress_noise_multiple):
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
        "reached (a sparse reward wants use_sde: true or longer n_steps), and that rewards are normalized. If the "
        "return sits near a random policy's, measure what the first thing exploration reaches earns: when it costs "
        "reward on average (a pushed object moving the wrong way), more noise only adds cost and the task needs "
        "a reward for the sub-goal or a better start.",
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


def _reward_collapse(history: HealthHistory, t: Thresholds, target_kl: float | None) -> Finding | None:
    recent = recent_returns(history, t)
    if len(recent) < t.reward_collapse_updates + 1 or len(history) < 3 or not enough_episodes(history.last, t):
        return None
    judged = [gain_lost(history, value, t) for value in recent[-t.reward_collapse_updates :]]
    lost = [fraction for fraction in judged if fraction is not None]
    if len(lost) < len(judged) or min(lost) < t.reward_collapse_fraction:
        return None
    current, best, start = recent[-1], held_best(history, t), history.start_return
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
        onset=best_step(history, t, best),
    )


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


def _policy_blowup(history: HealthHistory, t: Thresholds, target_kl: float | None) -> Finding | None:
    """
    The policy blown up: approx KL ``blowup_factor`` times the run's own level in ``blowup_updates`` of the latest
    ``blowup_window`` updates, confirmed by a high clip fraction, a std that grows back or a falling return.
    Seen on a 100M-step MAPPO run (VMAS transport, baseline profile): approx KL from ~0.02 to 0.1-1,100 per
    update, the std from 0.13 back to 0.33, the return from 0.1 to -0.15, for the rest of the run.
    """
    marks = list(history.kl_marks)
    window = marks[-t.blowup_window :]
    high = [step for step, is_high in window if is_high]
    level = history.kl_level()
    if level is None or len(window) < t.blowup_window:
        return None
    rows = list(history.rows)
    recent = _series(rows[-t.blowup_window :], "approx_kl")
    sustained = len(recent) == t.blowup_window and statistics.median(recent) >= t.blowup_sustained_factor * level
    if len(high) < t.blowup_updates and not sustained:
        return None
    if len(high) >= t.blowup_updates:
        # the onset: the update before the window's first marked one (the deque holds one more than the window)
        first = len(marks) - len(window) + next(i for i, (_, is_high) in enumerate(window) if is_high)
        onset = marks[first - 1][0] if first > 0 else high[0]
        spiked_steps = set(high)
        spiked = [row for row in rows if (row_step(row) or 0) in spiked_steps]
    else:  # sustained: the update before the window
        onset = marks[-t.blowup_window - 1][0] if len(marks) > t.blowup_window else window[0][0]
        spiked = rows[-t.blowup_window :]
    before = [row for row in rows if (row_step(row) or 0) <= onset]
    values = {"approx_kl": float(history.last.get("approx_kl") or math.nan), "kl_level": level, "spikes": len(high)}
    signs = []
    clips = _series(spiked, "clip_fraction")
    if clips and statistics.fmean(clips) > t.kl_spike_clip_fraction:
        values["clip_fraction"] = statistics.fmean(clips)
        signs.append(f"{100 * values['clip_fraction']:.0f}% of samples clipped")
    stds, std = _series(before, "std"), history.last.get("std")
    if stds and finite(std) and std is not None and std >= t.blowup_std_regrowth * min(stds):
        values.update(std=std, std_before=min(stds))
        signs.append(f"the policy's std grew back from {min(stds):.3g} to {std:.3g}")
    fall = _return_fall(history, t, before) if len(high) >= t.blowup_updates else None  # sparse: not on the return alone
    if fall is not None:
        values.update(fall)
        signs.append(f"the training return fell from {fall['ep_rew_mean_before']:.4g} to {fall['ep_rew_mean']:.4g}")
    if not signs:
        return None
    return _finding(
        history,
        "policy_blowup",
        "critical",
        values,
        f"The policy is blowing up: approx KL reached {max(_series(spiked, 'approx_kl') or [math.nan]):.3g} against the "
        f"run's level of {level:.3g} ({len(high)} of the latest {len(window)} updates at {t.blowup_factor:g}x it; the "
        f"median of those {len(window)}: {statistics.median(recent) if recent else math.nan:.3g}), and {', '.join(signs)}.",
        "Run `sb3-safe recover RUN`: it continues from the newest checkpoint before the onset under the safe profile "
        "(lower learning_rate, target_kl: 0.015 with kl_stop: epoch, max_grad_norm: 0.5); with rollback on, the run "
        "goes back to its last healthy state itself.",
        onset=onset,
    )


def _return_fall(history: HealthHistory, t: Thresholds, before: Sequence[Row]) -> dict[str, float] | None:
    """The training return now against its median before the onset, when it fell by more than the run's noise."""
    earlier = measured_returns(before, t)
    now = history.last.get("ep_rew_mean")
    if len(earlier) < 3 or not finite(now) or now is None or not enough_episodes(history.last, t):
        return None
    reference = statistics.median(earlier)
    noise = return_noise(history, t)
    if reference - now <= t.no_progress_noise_multiple * noise or reference <= now:
        return None
    return {"ep_rew_mean": now, "ep_rew_mean_before": reference}


Detector = Callable[[HealthHistory, Thresholds, "float | None"], "Finding | None"]

#: Every detector by its finding code, in the order they are reported for one update.
DETECTORS: dict[str, Detector] = {
    "non_finite": _non_finite,
    "value_divergence": _value_divergence,
    "reward_collapse": _reward_collapse,
    "policy_blowup": _policy_blowup,
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
    history = as_history(history, thresholds)
    if not len(history):
        return []
    found = [finding for detector in DETECTORS.values() if (finding := detector(history, thresholds, target_kl)) is not None]
    return sorted(found, key=lambda f: -SEVERITY_RANK[f.severity])
