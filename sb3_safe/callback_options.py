"""
The options of the health monitor and of rollback, as a profile's ``health:`` and ``rollback:``
blocks set them. Kept apart from the callbacks so that reading a profile imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from sb3_safe.options import CountOrZero, Factor, OptionError, check_fields

__all__ = ["MonitorOptions", "RollbackOptions"]


@dataclass(frozen=True)
class MonitorOptions:
    """The monitor's own options (a profile's ``health:`` block holds these and every :class:`Thresholds` field)."""

    #: A finding code is reported again after this many updates without it.
    quiet_updates: CountOrZero = 5

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class RollbackOptions:
    """What :class:`RollbackCallback` does; a profile's ``rollback:`` block sets these."""

    #: Multiply the learning rates (actor and critic) by this at each rollback.
    lr_factor: Factor = 0.5
    #: Rollbacks allowed before training stops (0: stop at the first trouble).
    max_rollbacks: CountOrZero = 3
    #: Healthy updates a snapshot must survive before it can be restored.
    confirm_updates: CountOrZero = 2
    #: Episodes started after a snapshot that must vouch for it (0: updates alone).
    confirm_episodes: CountOrZero = 5
    #: Updates after which a snapshot short of episodes is confirmed anyway.
    confirm_max_updates: CountOrZero = 10

    def __post_init__(self) -> None:
        check_fields(self)
        if self.confirm_max_updates < self.confirm_updates:
            raise OptionError(
                f"`confirm_max_updates` = {self.confirm_max_updates}: must be >= `confirm_updates` ({self.confirm_updates})"
            )
