"""
Which snapshot may a rollback go back to? A pure, model-free rule over updates and episodes.

A snapshot taken after an update is a *candidate*. It becomes the *healthy* one (the state a
rollback restores) once

- ``confirm_updates`` further updates passed without a critical finding (a divergence that
  takes two updates to show does not poison it; the caller discards all candidates on a
  critical finding), and
- the episodes that started after it vouch for it: at least ``confirm_episodes`` of them
  finished and ``judge(mean of their returns)`` says healthy. A candidate whose episodes
  collapsed is discarded.

The training-episode mean a health monitor watches lags the policy by up to 100 episodes;
the candidate's own episodes do not (on Hopper-v5 a policy that fell over at once was
"healthy" by the lagging mean). A candidate still short of episodes after
``confirm_max_updates`` updates is confirmed on updates alone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["SnapshotConfirmer"]

T = TypeVar("T")


class SnapshotConfirmer(Generic[T]):
    """
    Candidates in time order and the episodes that judge them.

    :param confirm_updates: Updates a candidate must survive before it can be confirmed
    :param confirm_episodes: Episodes started after a candidate that must vouch for it (0: updates alone)
    :param confirm_max_updates: Updates after which a candidate short of episodes is confirmed anyway
    """

    def __init__(self, confirm_updates: int, confirm_episodes: int, confirm_max_updates: int) -> None:
        self.confirm_updates = confirm_updates
        self.confirm_episodes = confirm_episodes
        self.confirm_max_updates = confirm_max_updates
        #: ``(timesteps, payload)`` of the candidates, oldest first
        self.candidates: deque[tuple[int, T]] = deque()
        #: ``(start timestep, return)`` of the episodes finished since the oldest candidate was taken
        self.episodes: list[tuple[int, float]] = []

    def episode_finished(self, start: int, episode_return: float) -> None:
        """Record an episode that started at global step ``start``."""
        self.episodes.append((start, episode_return))

    def add(self, timesteps: int, payload: T, judge: Callable[[float], bool]) -> T | None:
        """
        Add the candidate taken after a healthy update, and confirm what can be confirmed.

        :param timesteps: The step count when the candidate was taken
        :param payload: The candidate (a snapshot)
        :param judge: Whether a mean episode return is healthy
        :return: The newest candidate confirmed by this call, or ``None``
        """
        self.candidates.append((timesteps, payload))
        confirmed = None
        while len(self.candidates) > self.confirm_updates:
            verdict = self._verdict(self.candidates[0][0], len(self.candidates) - 1, judge)
            if verdict is None:
                break
            _, candidate = self.candidates.popleft()
            if verdict:
                confirmed = candidate
        oldest = self.candidates[0][0] if self.candidates else timesteps
        self.episodes = [episode for episode in self.episodes if episode[0] >= oldest]
        return confirmed

    def clear(self) -> None:
        """Forget every candidate and episode (after a rollback: they belong to the discarded policy)."""
        self.candidates.clear()
        self.episodes = []

    def _verdict(self, timesteps: int, age: int, judge: Callable[[float], bool]) -> bool | None:
        """:return: Whether the candidate is healthy, or ``None`` while too few of its episodes finished"""
        if self.confirm_episodes == 0:
            return True
        returns = [ret for start, ret in self.episodes if start >= timesteps]
        if len(returns) < self.confirm_episodes:
            return True if age >= self.confirm_max_updates else None
        return judge(sum(returns) / len(returns))
