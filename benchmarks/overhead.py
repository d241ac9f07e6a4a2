"""
Throughput of the safe classes as a ratio of the classes they extend, measured interleaved in one process.

Families (``--family``, default all):

- ``ppo``: SafePPO against SB3's PPO (SB3's reference figure in shared/REFERENCES.md): Pendulum-v1,
  4 envs, n_steps 512, batch 64, 10 epochs;
- ``recurrent``: SafeRecurrentPPO against sb3-contrib's RecurrentPPO: PendulumNoVel-v1, MlpLstmPolicy,
  4 envs, n_steps 128, batch 128, 4 epochs;
- ``maskable``: SafeMaskablePPO against sb3-contrib's MaskablePPO: MaskedMaze-v0, 4 envs, n_steps 512,
  batch 64, 10 epochs;
- ``marl``: SafePPO with parameter sharing on sb3-safe's PettingZoo adapter, and MAPPO (centralized
  critic, agent index, every feature on), against SB3's PPO on SuperSuit's VecEnv: mpe2
  simple_spread_v3, 4 copies of 3 agents, n_steps 128, batch 512, 10 epochs.

One torch thread, CPU. Each round trains the base class, the safe class with defaults and with
every feature on, in a rotating order, for the same number of steps; each figure is the median
over rounds. Speed is steps per CPU-second of this process.

Usage: ``python benchmarks/overhead.py [--family ppo|recurrent|maskable|marl] [--rounds N] [--steps N]``
(``make bench-overhead``).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch as th
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

import sb3_safe.tasks  # noqa: F401 - registers PendulumNoVel-v1 and MaskedMaze-v0
from sb3_safe import SafeMaskablePPO, SafePPO, SafeRecurrentPPO
from sb3_safe.multiagent import CentralizedCriticPolicy, PettingZooVecEnv, make_parallel_env
from sb3_safe.multiagent.supersuit import make_supersuit_env

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


@dataclass(frozen=True)
class Config:
    """One class to time: its name in the table, the class, its extra arguments, and what it trains on."""

    name: str
    cls: type[OnPolicyAlgorithm]
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: The policy (default: the family's)
    policy: Any = None
    #: The environments (default: the family's)
    env: Callable[[], VecEnv] | None = None


@dataclass(frozen=True)
class Family:
    """Configurations timed against the first one, on the same task with the same settings."""

    label: str
    env: Callable[[], VecEnv]
    policy: Any
    common: dict[str, Any]
    configs: list[Config]
    steps: int


def _gym(env_id: str) -> Callable[[], VecEnv]:
    return lambda: make_vec_env(env_id, n_envs=4, seed=0)


def _spread(adapter: str, **kwargs: Any) -> Callable[[], VecEnv]:
    make = functools.partial(make_parallel_env, "pettingzoo:mpe2.simple_spread_v3")
    if adapter == "supersuit":
        return lambda: make_supersuit_env(make, 4)
    return lambda: PettingZooVecEnv([make] * 4, **kwargs)


FAMILIES: dict[str, Family] = {
    "ppo": Family(
        "Pendulum-v1, MlpPolicy, 4 envs",
        _gym("Pendulum-v1"),
        "MlpPolicy",
        COMMON,
        [Config("PPO", PPO), Config("SafePPO defaults", SafePPO), Config("SafePPO all features", SafePPO, ALL_ON)],
        4 * 2048,
    ),
    "recurrent": Family(
        "PendulumNoVel-v1, MlpLstmPolicy, 4 envs",
        _gym("PendulumNoVel-v1"),
        "MlpLstmPolicy",
        dict(n_steps=128, batch_size=128, n_epochs=4, device="cpu", seed=0),
        [
            Config("RecurrentPPO", RecurrentPPO),
            Config("SafeRecurrentPPO defaults", SafeRecurrentPPO),
            Config("SafeRecurrentPPO all features", SafeRecurrentPPO, ALL_ON),
        ],
        4 * 512,
    ),
    "maskable": Family(
        "MaskedMaze-v0, MlpPolicy, 4 envs",
        _gym("MaskedMaze-v0"),
        "MlpPolicy",
        COMMON,
        [
            Config("MaskablePPO", MaskablePPO),
            Config("SafeMaskablePPO defaults", SafeMaskablePPO),
            Config("SafeMaskablePPO all features", SafeMaskablePPO, ALL_ON),
        ],
        4 * 2048,
    ),
    "marl": Family(
        "mpe2.simple_spread_v3, 4 copies x 3 agents",
        _spread("sb3_safe"),
        "MlpPolicy",
        dict(n_steps=128, batch_size=512, n_epochs=10, device="cpu", seed=0),
        [
            Config("PPO + SuperSuit", PPO, env=_spread("supersuit")),
            Config("SafePPO defaults", SafePPO),
            Config(
                "SafePPO MAPPO all features",
                SafePPO,
                ALL_ON,
                policy=CentralizedCriticPolicy,
                env=_spread("sb3_safe", centralized_critic=True, agent_id=True),
            ),
        ],
        12 * 1024,
    ),
}


def steps_per_second(family: Family, config: Config, steps: int) -> float:
    env = (config.env or family.env)()
    model = config.cls(config.policy or family.policy, env, **family.common, **config.kwargs)
    # CPU time of this process (single-threaded: torch has 1 thread, the VecEnvs step in-process):
    # steadier than wall time when anything else runs on the machine.
    start = time.process_time()
    model.learn(steps)
    elapsed = time.process_time() - start
    env.close()
    return model.num_timesteps / elapsed


def measure(family: Family, rounds: int, steps: int | None) -> None:
    steps = steps or family.steps
    configs = family.configs
    names = [config.name for config in configs]
    results: dict[str, list[float]] = {name: [] for name in names}
    steps_per_second(family, configs[0], steps // 4)  # warm-up: imports, allocator, env registration
    for round_ in range(rounds):
        shift = round_ % len(configs)
        for config in configs[shift:] + configs[:shift]:
            results[config.name].append(steps_per_second(family, config, steps))
        print(f"round {round_ + 1}/{rounds}: " + ", ".join(f"{n} {results[n][-1]:.0f}" for n in names), flush=True)
    base = statistics.median(results[names[0]])
    settings = ", ".join(f"{k} {v}" for k, v in family.common.items() if k not in ("device", "seed"))
    print(f"\n{family.label}, {settings}, 1 torch thread, {rounds} rounds x {steps} steps")
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
        measure(FAMILIES[family], args.rounds, args.steps)


if __name__ == "__main__":
    main()
