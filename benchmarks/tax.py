"""
``make bench-tax``: what the safe profile costs in speed, against plain SB3 PPO with the same shape, in one process.

The safe side is ``sb3_safe.training.train`` with the safe profile's CartPole-v1 block, as ``sb3-safe train`` runs it:
SafePPO, VecNormalize, the guard, the health monitor after every update, the rollback's snapshot of the last healthy
state, the run folder's CSV and TensorBoard logs (evaluations and checkpoints off: they cost the same to both). The
plain side is SB3's ``PPO`` with the same rollout and minibatch sizes, epochs, network, rates and discounting, no
logger output. Two shapes:

- ``small``: 1 copy, 8-step updates, minibatches of 8: the safety machinery's cost per update at its largest share;
- ``zoo``: the block as rl-baselines3-zoo tunes it (8 copies, 32 steps, minibatches of 256, 20 epochs).

Rounds alternate the two sides; each figure is the median over rounds of steps per CPU-second of this process, one
torch thread. The safe profile stops epochs early on KL (``kl_stop: epoch``): the epochs it ran are printed beside.

Usage: ``python benchmarks/tax.py [--steps N] [--rounds N]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_safe.config import load_config
from sb3_safe.training import train

SHAPES: dict[str, dict[str, Any]] = {
    "small": {"n_envs": 1, "n_steps": 8, "batch_size": 8},
    "zoo": {},
}
#: The keys plain PPO takes from the block as they are
SHARED = ("n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "ent_coef", "vf_coef", "clip_range")


def plain(block: dict[str, Any], steps: int) -> float:
    """:return: CPU seconds SB3's PPO takes for ``steps`` with the block's shape"""
    kwargs = {key: block[key] for key in SHARED if key in block}
    rate = block.get("learning_rate", 3e-4)
    if isinstance(rate, str) and rate.startswith("lin_"):
        initial = float(rate.removeprefix("lin_"))
        kwargs["learning_rate"] = lambda progress: progress * initial
    elif isinstance(rate, (int, float)):
        kwargs["learning_rate"] = rate
    net = block.get("policy_kwargs", {}).get("net_arch")
    env = make_vec_env("CartPole-v1", n_envs=block.get("n_envs", 1), seed=0)
    model = PPO("MlpPolicy", env, seed=0, device="cpu", policy_kwargs={"net_arch": net} if net else None, **kwargs)
    start = time.process_time()
    model.learn(steps)
    return time.process_time() - start


def safe(overrides: dict[str, Any], steps: int, root: Path) -> tuple[float, float]:
    """:return: CPU seconds the safe profile takes for ``steps``, and the epochs it ran per update (mean)"""
    config = load_config("safe", "CartPole-v1", {**overrides, "n_timesteps": steps})
    start = time.process_time()
    result = train(config, runs_root=root, eval_freq=10**12, save_freq=10**12, n_eval_episodes=1, progress_bar=False)
    seconds = time.process_time() - start
    monitor = result.monitor
    epochs = [row.get("epochs_run", np.nan) for row in monitor.history.rows] if monitor is not None else [np.nan]
    return seconds, float(np.nanmean(epochs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    th.set_num_threads(1)
    print("| shape | plain PPO steps/s | safe profile steps/s | ratio | safe epochs per update (of n_epochs) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for name, overrides in SHAPES.items():
            block = dict(load_config("safe", "CartPole-v1", overrides).values)
            plains, safes, epochs = [], [], []
            for _ in range(args.rounds):
                plains.append(args.steps / plain(block, args.steps))
                seconds, ran = safe(overrides, args.steps, Path(scratch))
                safes.append(args.steps / seconds)
                epochs.append(ran)
            p, s = statistics.median(plains), statistics.median(safes)
            print(
                f"| {name} (n_envs {block.get('n_envs', 1)}, n_steps {block['n_steps']}, batch {block['batch_size']}) "
                f"| {p:,.0f} | {s:,.0f} | {s / p:.2f}x | {statistics.median(epochs):.1f} of {block.get('n_epochs', 10)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
