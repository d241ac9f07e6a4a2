"""
Throughput of the safe classes as a ratio of the classes they extend, measured interleaved in one process.

Families (``--family``, default all):

- ``ppo``: SafePPO against SB3's PPO (SB3's reference figure in shared/REFERENCES.md): Pendulum-v1,
  4 envs, n_steps 512, batch 64, 10 epochs;
- ``recurrent``: SafeRecurrentPPO against sb3-contrib's RecurrentPPO: PendulumNoVel-v1, MlpLstmPolicy,
  4 envs, n_steps 128, batch 128, 4 epochs;
- ``maskable``: SafeMaskablePPO against sb3-contrib's MaskablePPO: MaskedMaze-v0, 4 envs, n_steps 512,
  batch 64, 10 epochs.

One torch thread, CPU. Each round trains the base class, the safe class with defaults and with
every feature on, in a rotating order, for the same number of steps; each figure is the median
over rounds. Speed is steps per CPU-second of this process.

Usage: ``python benchmarks/overhead.py [--family ppo|recurrent|maskable] [--rounds N] [--steps N]``
(``make bench-overhead``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch as th
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

import sb3_safe.tasks  # noqa: F401 - registers PendulumNoVel-v1 and MaskedMaze-v0
from sb3_safe import SafeMaskablePPO, SafePPO, SafeRecurrentPPO

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
# family -> (env id, policy, settings, [(name, class, extra kwargs)], steps per run)
FAMILIES: dict[str, tuple[str, str, dict[str, Any], list[tuple[str, type[OnPolicyAlgorithm], dict[str, Any]]], int]] = {
    "ppo": (
        "Pendulum-v1",
        "MlpPolicy",
        COMMON,
        [("PPO", PPO, {}), ("SafePPO defaults", SafePPO, {}), ("SafePPO all features", SafePPO, ALL_ON)],
        4 * 2048,
    ),
    "recurrent": (
        "PendulumNoVel-v1",
        "MlpLstmPolicy",
        dict(n_steps=128, batch_size=128, n_epochs=4, device="cpu", seed=0),
        [
            ("RecurrentPPO", RecurrentPPO, {}),
            ("SafeRecurrentPPO defaults", SafeRecurrentPPO, {}),
            ("SafeRecurrentPPO all features", SafeRecurrentPPO, ALL_ON),
        ],
        4 * 512,
    ),
    "maskable": (
        "MaskedMaze-v0",
        "MlpPolicy",
        COMMON,
        [
            ("MaskablePPO", MaskablePPO, {}),
            ("SafeMaskablePPO defaults", SafeMaskablePPO, {}),
            ("SafeMaskablePPO all features", SafeMaskablePPO, ALL_ON),
        ],
        4 * 2048,
    ),
}


def steps_per_second(family: str, cls: type[OnPolicyAlgorithm], kwargs: dict[str, Any], steps: int) -> float:
    env_id, policy, common, _, _ = FAMILIES[family]
    env = make_vec_env(env_id, n_envs=4, seed=0)
    model = cls(policy, env, **common, **kwargs)
    # CPU time of this process (single-threaded: torch has 1 thread, DummyVecEnv steps in-process):
    # steadier than wall time when anything else runs on the machine.
    start = time.process_time()
    model.learn(steps)
    elapsed = time.process_time() - start
    env.close()
    return model.num_timesteps / elapsed


def measure(family: str, rounds: int, steps: int | None) -> None:
    env_id, policy, common, configs, default_steps = FAMILIES[family]
    steps = steps or default_steps
    names = [name for name, _, _ in configs]
    results: dict[str, list[float]] = {name: [] for name in names}
    steps_per_second(family, configs[0][1], {}, steps // 4)  # warm-up: imports, allocator, env registration
    for round_ in range(rounds):
        shift = round_ % len(configs)
        for name, cls, kwargs in configs[shift:] + configs[:shift]:
            results[name].append(steps_per_second(family, cls, kwargs, steps))
        print(f"round {round_ + 1}/{rounds}: " + ", ".join(f"{n} {results[n][-1]:.0f}" for n in names), flush=True)
    base = statistics.median(results[names[0]])
    settings = ", ".join(f"{k} {v}" for k, v in common.items() if k not in ("device", "seed"))
    print(f"\n{env_id}, {policy}, 4 envs, {settings}, 1 torch thread, {rounds} rounds x {steps} steps")
    print(f"{'config':<30} {'median steps/s':>15} {'ratio to ' + names[0]:>24}")
    for name in names:
        median = statistics.median(results[name])
        print(f"{name:<30} {median:>15.0f} {median / base:>24.3f}")
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--family", choices=sorted(FAMILIES), action="append", help="default: all")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, help="steps per run (default: per family)")
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    for family in args.family or list(FAMILIES):
        measure(family, args.rounds, args.steps)


if __name__ == "__main__":
    main()
