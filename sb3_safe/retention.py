"""
Which checkpoints a run folder keeps as it grows: pure rules over step counts and file sizes.

A run keeps every checkpoint while they fit its size budget (``checkpoint_budget_mb``); past it, older
ones are thinned to doubling distances back from the newest (:func:`checkpoints_to_keep`). Never
deleted while anything else can go: the newest checkpoint, the newest one before the onset of any
finding, the one before the best evaluation and the last confirmed-healthy one (``protect``):
those are the checkpoints ``sb3-safe recover`` resumes from.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["RetentionPlan", "checkpoints_to_keep", "newest_at_or_before", "plan_retention", "protected_steps"]


def checkpoints_to_keep(steps: Iterable[int], keep: int, protect: Iterable[int] = ()) -> set[int]:
    """
    Which checkpoints a bounded run folder keeps.

    - the ``keep`` newest, the oldest, and every step in ``protect``;
    - older ones spaced out over the run: numbering the checkpoints ``i = 0, 1, ..., n`` in save
      intervals from the oldest, checkpoint ``i`` at age ``a = n - i`` stays while ``i`` is a
      multiple of ``2 ** floor(log2(a))``. Every doubling of the distance back from the newest
      (``[2^k, 2^(k+1))`` intervals) keeps at least one, so "resume from well before the crash"
      always has a candidate, and a run of ``n`` saves keeps about ``keep + 2 log2(n)`` files.
      The rule is stable: applied after every save, it never needs a file it deleted before.

    :param steps: The checkpoints' step counts (saved every fixed number of steps)
    :param keep: How many of the newest to keep (at least 1)
    :param protect: Step counts never to delete
    :return: The step counts to keep
    """
    ordered = sorted(set(steps))
    if not ordered:
        return set()
    oldest, newest = ordered[0], ordered[-1]
    interval = min((b - a for a, b in itertools.pairwise(ordered[-keep - 1 :])), default=1) or 1
    kept = set(ordered[-keep:]) | {oldest} | (set(protect) & set(ordered))
    n = (newest - oldest) // interval
    for step in ordered:
        i = (step - oldest) // interval
        age = n - i
        if age > 0 and i % (1 << (age.bit_length() - 1)) == 0:
            kept.add(step)
    return kept


def newest_at_or_before(steps: Iterable[int], limit: int) -> int | None:
    """:return: The largest of ``steps`` that is at most ``limit``, or ``None``"""
    return max((s for s in steps if s <= limit), default=None)


@dataclass(frozen=True)
class RetentionPlan:
    """What :func:`plan_retention` decided: the steps kept, and each deleted step with its reason."""

    kept: frozenset[int]
    deleted: dict[int, str]


def _size(steps: Iterable[int], sizes: Mapping[int, int]) -> int:
    return sum(sizes[s] for s in steps)


def plan_retention(
    sizes: Mapping[int, int],
    budget_bytes: int | None = None,
    keep: int | None = None,
    protect: Mapping[int, str] | None = None,
) -> RetentionPlan:
    """
    Decide which checkpoints stay.

    1. With ``keep``, :func:`checkpoints_to_keep` bounds the count (protected steps stay).
    2. With a budget, while the checkpoints' bytes exceed it, fewer of the newest are kept in full
       and the older ones thinned by the same rule: the largest ``keep`` that fits. Protected steps
       stay unless they alone exceed the budget; then the oldest protected ones go first. The
       newest checkpoint always stays.

    :param sizes: Bytes on disk of each checkpoint (model, statistics and monitor state), by step
    :param budget_bytes: The most bytes the checkpoints may take (``None``: no budget)
    :param keep: The count bound of :func:`checkpoints_to_keep` (``None``: no count bound)
    :param protect: Steps to keep while anything else can go, with why (shown in the log of deletions)
    :return: The plan
    """
    steps = sorted(sizes)
    if not steps:
        return RetentionPlan(frozenset(), {})
    protected = {s: why for s, why in (protect or {}).items() if s in sizes}
    deleted: dict[int, str] = {}
    kept = set(steps)
    if keep is not None:
        kept = checkpoints_to_keep(steps, keep, protected)
        deleted.update({s: f"keep_checkpoints: {keep} (older ones spaced out)" for s in steps if s not in kept})
    if budget_bytes is None or _size(kept, sizes) <= budget_bytes:
        return RetentionPlan(frozenset(kept), deleted)
    budget_mb = f"{budget_bytes / 2**20:,.1f} MB"
    candidates = sorted(kept)
    low, high = 1, len(candidates)  # the largest count of newest ones kept in full that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if _size(checkpoints_to_keep(candidates, middle, protected), sizes) <= budget_bytes:
            low = middle
        else:
            high = middle - 1
    thinned = checkpoints_to_keep(candidates, low, protected)
    reason = f"over the checkpoint budget of {budget_mb}: older checkpoints thinned to doubling distances back"
    deleted.update({s: reason for s in candidates if s not in thinned})
    newest = steps[-1]
    # Still over: only protected ones and the newest remain beyond the thinning's minimum; drop unprotected,
    # then the oldest protected, never the newest.
    order = [s for s in sorted(thinned) if s not in protected and s != newest]
    order += [s for s in sorted(thinned) if s in protected and s != newest]
    for step in order:
        if _size(thinned, sizes) <= budget_bytes:
            break
        thinned.discard(step)
        what = f"protected as {protected[step]}, " if step in protected else ""
        deleted[step] = f"{what}over the checkpoint budget of {budget_mb} even after thinning: the oldest goes first"
    return RetentionPlan(frozenset(thinned), deleted)


def protected_steps(steps: Sequence[int], reasons: Mapping[int, str]) -> dict[int, str]:
    """
    :param steps: The checkpoints present, any order
    :param reasons: Steps of events (a finding's onset, the best evaluation) with why they matter
    :return: For each event, the newest checkpoint at or before it, with the event's reason
    """
    protected: dict[int, str] = {}
    for event, why in sorted(reasons.items()):
        step = newest_at_or_before(steps, event)
        if step is not None:
            protected[step] = why
    return protected
