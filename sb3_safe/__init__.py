"""sb3-safe: PPO training that does not collapse, built on Stable-Baselines3."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Registers rl-zoo's partially observed variants (CartPoleNoVel-v1, PendulumNoVel-v1, ...) and MaskedMaze-v0
# with Gymnasium (gymnasium only, no torch).
from sb3_safe import tasks as _tasks  # noqa: F401

if TYPE_CHECKING:
    from sb3_safe.contrib import SafeMaskablePPO, SafeRecurrentPPO
    from sb3_safe.ppo import SafePPO

__all__ = ["SafeMaskablePPO", "SafePPO", "SafeRecurrentPPO", "__version__"]

__version__ = "0.3.0"

# The algorithm classes load on first use (PEP 562), so that `import sb3_safe.config` and reading
# a profile do not import torch; `from sb3_safe import SafePPO` works as before.
_LAZY = {"SafePPO": "sb3_safe.ppo", "SafeRecurrentPPO": "sb3_safe.contrib", "SafeMaskablePPO": "sb3_safe.contrib"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sb3_safe' has no attribute {name!r}")
