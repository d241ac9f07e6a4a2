"""
SB3 callbacks that watch training health and roll back to the last healthy state instead of crashing.

Use them in any SB3 script::

    from sb3_safe.callbacks import HealthMonitorCallback, RollbackCallback

    monitor = HealthMonitorCallback()
    model.learn(100_000, callback=[monitor, RollbackCallback(monitor=monitor)])

- :class:`HealthMonitorCallback` runs the detectors of :mod:`sb3_safe.health` after every update.
- :class:`NonFiniteGuardCallback` zeroes NaN/inf observations and rewards before the policy
  sees them; use it alone when you want no rollback.
- :class:`RollbackCallback` restores the last healthy snapshot on a critical finding (it runs
  a guard of its own).

With :class:`sb3_safe.SafePPO` they read its per-update record (``model.last_update``). With
plain ``PPO`` they read the ``train/*`` values SB3's logger holds between ``train()`` and the
next dump; SB3 records no gradient norms, skipped updates, return spread or parameter check,
so ``non_finite`` then sees only losses, KL, returns, observations and rewards, and
``value_collapse`` cannot tell a solved task (returns that barely vary) from a broken critic.

This package does not import the profile machinery: the callbacks a profile asks for are
built by :func:`sb3_safe.build.safety_callbacks`.
"""

from sb3_safe.callbacks.guard import NonFiniteGuardCallback
from sb3_safe.callbacks.monitor import HealthMonitorCallback, MonitorOptions
from sb3_safe.callbacks.rollback import RollbackCallback, RollbackOptions, ScaledSchedule

__all__ = [
    "HealthMonitorCallback",
    "MonitorOptions",
    "NonFiniteGuardCallback",
    "RollbackCallback",
    "RollbackOptions",
    "ScaledSchedule",
]
