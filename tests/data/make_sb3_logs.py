"""
Make the plain-SB3 logs the detector tests read: SB3's PPO with its own defaults on CartPole-v1
(1 environment, n_steps 2048, no reward normalization), 200,000 steps, CSV logger.

    python tests/data/make_sb3_logs.py 0 1 2

Nothing of sb3-safe is involved in making them: they stand for the runs users bring to
``sb3-safe diagnose``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure


def make(seed: int, steps: int = 200_000) -> Path:
    th.set_num_threads(1)
    out = Path(__file__).parent / f"sb3-ppo-default-CartPole-v1-s{seed}"
    model = PPO("MlpPolicy", "CartPole-v1", seed=seed, device="cpu")
    model.set_logger(configure(str(out), ["csv"]))
    model.learn(steps)
    return out / "progress.csv"


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(make(int(arg)))
