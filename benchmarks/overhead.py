"""
Throughput of SafePPO as a ratio of SB3's PPO, measured interleaved in one process.

Setting (SB3's reference figure in shared/REFERENCES.md): Pendulum-v1, 4 envs, n_steps 512,
batch 64, 10 epochs, one torch thread, CPU. Each round trains PPO, SafePPO with defaults and
SafePPO with every feature on, in a rotating order, for the same number of steps; each
ratio is the median over rounds of that round's ratio to PPO. Speed is steps per CPU-second of this process.

Usage: ``python benchmarks/overhead.py [--rounds N] [--steps N]`` (``make bench-overhead``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_safe import SafePPO

COMMON: dict[str, Any] = dict(n_steps=512, batch_size=64, n_epochs=10, device="cpu", seed=0)
ALL_ON: dict[str, Any] = dict(
    value_loss="blend",
    clip_range_vf=0.2,
    critic_learning_rate=1e-3,
    kl_stop="epoch",
    target_kl=10.0,  # checked every epoch but never stops early: the work per update stays comparable
    adv_norm_min_std=0.01,
    normalize_value=True,
)
CONFIGS: dict[str, tuple[type[PPO], dict[str, Any]]] = {
    "PPO": (PPO, {}),
    "SafePPO defaults": (SafePPO, {}),
    "SafePPO all features": (SafePPO, ALL_ON),
}


def steps_per_second(cls: type[PPO], kwargs: dict[str, Any], steps: int) -> float:
    env = make_vec_env("Pendulum-v1", n_envs=4, seed=0)
    model = cls("MlpPolicy", env, **COMMON, **kwargs)
    # CPU time of this process (single-threaded: torch has 1 thread, DummyVecEnv steps in-process):
    # steadier than wall time when anything else runs on the machine.
    start = time.process_time()
    model.learn(steps)
    elapsed = time.process_time() - start
    env.close()
    return model.num_timesteps / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=4 * 2048)
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    names = list(CONFIGS)
    results: dict[str, list[float]] = {name: [] for name in names}
    steps_per_second(PPO, {}, 2048)  # warm-up: imports, allocator, env registration
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            cls, kwargs = CONFIGS[name]
            results[name].append(steps_per_second(cls, kwargs, args.steps))
        print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(f"{n} {results[n][-1]:.0f}" for n in names), flush=True)
    base = statistics.median(results["PPO"])
    print(
        f"\nPendulum-v1, 4 envs, n_steps 512, batch 64, 10 epochs, 1 torch thread, {args.rounds} rounds x {args.steps} steps"
    )
    print(f"{'config':<22} {'median steps/s':>15} {'ratio to PPO':>13}")
    for name in names:
        median = statistics.median(results[name])
        print(f"{name:<22} {median:>15.0f} {median / base:>13.3f}")


if __name__ == "__main__":
    main()
