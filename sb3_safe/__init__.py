"""sb3-safe: PPO training that does not collapse, built on Stable-Baselines3."""

from sb3_safe.ppo import SafePPO

__all__ = ["SafePPO", "__version__"]

__version__ = "0.1.0"
