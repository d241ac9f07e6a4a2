"""
The evaluation rule: when periodic evaluations of the greedy policy show a collapse, and where
the best policy before one was. Shared by the benchmarks, ``diagnose`` and ``recover``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sb3_safe.health.findings import Finding

__all__ = ["EVALUATION_COLLAPSE_FRACTION", "evaluation_collapse", "evaluation_noise_floor", "evaluation_peak_before"]

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
