"""sb3-safe: PPO training that does not collapse, built on Stable-Baselines3."""

from sb3_safe.contrib import SafeMaskablePPO, SafeRecurrentPPO
from sb3_safe.ppo import SafePPO

__all__ = ["SafeMaskablePPO", "SafePPO", "SafeRecurrentPPO", "__version__"]

__version__ = "0.1.0"
