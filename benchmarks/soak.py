"""
``make bench-soak``: the safe profile for 20,000+ small updates, beside plain SB3 PPO.

Two presets (``--preset``):

- ``tiny`` (default): CartPole-v1, 1 environment, 8-step rollouts, batch 8, 1 epoch, for both:
  one update every 8 steps, so whatever sb3-safe adds per update (monitor, snapshots, guard,
  the update itself) shows as plainly as it can.
- ``zoo``: the profiles as users run them: the safe profile's CartPole-v1 block against plain
  SB3 PPO with rl-baselines3-zoo's CartPole-v1 settings (``hyperparams/zoo-ppo.yml``: 8
  environments x 32 steps = 256 steps per update, 20 epochs). The safe profile's KL stop may run
  fewer epochs; the mean epochs run is printed beside the speed.

Plain SB3 PPO logs CSV and TensorBoard like an sb3-safe run. Both run at once, one process (and
one torch thread) each. Every 1% of the run each records its steps/s and resident memory; the
table gives steps/s over the second and the last tenth, their ratio, the memory growth from 10%
to 100%, and safe's speed as a share of plain PPO's. The curves go to ``--plot``.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

SETTINGS: dict[str, Any] = {"n_envs": 1, "n_steps": 8, "batch_size": 8, "n_epochs": 1}
STEPS_PER_UPDATE = {"tiny": 8, "zoo": 256}


class Probe(BaseCallback):
    """Record (steps, seconds, resident bytes) every ``every`` steps, and the epochs each update ran."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every
        self.points: list[tuple[int, float, int]] = []
        self.epochs: list[int] = []

    def _on_rollout_start(self) -> None:
        record = getattr(self.model, "last_update", None)
        if record is not None:
            self.epochs.append(int(record.epochs_run))

    def _on_training_start(self) -> None:
        self.points.append((self.num_timesteps, time.perf_counter(), _rss()))

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self.points.append((self.num_timesteps, time.perf_counter(), _rss()))
        return True


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _run(args: tuple[str, str, int]) -> tuple[str, list[tuple[int, float, int]], list[int]]:
    import torch as th

    from sb3_safe.config import load_config

    th.set_num_threads(1)
    which, preset, steps = args
    probe = Probe(max(steps // 100, STEPS_PER_UPDATE[preset]))
    settings = SETTINGS if preset == "tiny" else {}
    with tempfile.TemporaryDirectory() as out:
        if which == "safe":
            from sb3_safe.training import train

            config = load_config("safe", "CartPole-v1", {**settings, "n_timesteps": steps})
            # one evaluation and one checkpoint, at 60% of the run, away from the tenths that are compared
            once = steps * 3 // 5
            train(config, run_dir=Path(out) / "run", eval_freq=once, save_freq=once, progress_bar=False, callbacks=[probe])
        else:
            from stable_baselines3 import PPO
            from stable_baselines3.common.env_util import make_vec_env
            from stable_baselines3.common.logger import configure

            zoo = load_config("zoo-ppo", "CartPole-v1", {**settings, "n_timesteps": steps})
            venv = make_vec_env("CartPole-v1", n_envs=zoo.n_envs, seed=0)
            model = PPO(zoo.policy, venv, seed=0, device="cpu", **zoo.algorithm_kwargs())
            model.set_logger(configure(out, ["csv", "tensorboard"]))
            model.learn(steps, callback=probe)
    return which, probe.points, probe.epochs


def _speed(points: list[tuple[int, float, int]], start: float, end: float) -> float:
    n = len(points) - 1
    a, b = points[int(start * n)], points[int(end * n)]
    return (b[0] - a[0]) / (b[1] - a[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", choices=sorted(STEPS_PER_UPDATE), default="tiny", help="settings (default: %(default)s)")
    parser.add_argument("--steps", type=int, help="environment steps (default: 20,500 updates: 164,000 tiny, 5,248,000 zoo)")
    parser.add_argument("--plot", type=Path, default=Path("bench-results/soak.png"))
    args = parser.parse_args()
    per_update = STEPS_PER_UPDATE[args.preset]
    steps = args.steps or 20_500 * per_update
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        runs = pool.map(_run, [("safe", args.preset, steps), ("sb3-ppo", args.preset, steps)])
    results = {which: points for which, points, _ in runs}
    what = "n_envs 1, batch 8, 1 epoch" if args.preset == "tiny" else "the profiles' blocks: 8 envs x 32 steps, 20 epochs"
    print(f"CartPole-v1, {steps:,} steps, {steps // per_update:,} updates of {per_update} steps ({what})")
    for which, _, epochs in runs:
        if epochs:
            print(f"{which}: mean epochs run per update {sum(epochs) / len(epochs):.2f}")
    print()
    print("| run | steps/s, 2nd tenth | steps/s, last tenth | last / 2nd | memory at 10% (MiB) | at 100% | growth |")
    print("|---|---|---|---|---|---|---|")
    speeds = {}
    for which, points in results.items():
        early, late = _speed(points, 0.1, 0.2), _speed(points, 0.9, 1.0)
        speeds[which] = (early, late)
        m10, m100 = points[len(points) // 10][2], points[-1][2]
        print(
            f"| {which} | {early:,.0f} | {late:,.0f} | {late / early:.2f} | {m10 / 2**20:,.1f} | {m100 / 2**20:,.1f} | "
            f"{100 * (m100 - m10) / m10:+.1f}% |"
        )
    ratio_start = speeds["safe"][0] / speeds["sb3-ppo"][0]
    ratio_end = speeds["safe"][1] / speeds["sb3-ppo"][1]
    print(
        f"\nsafe / plain SB3 PPO steps/s: {ratio_start:.2f} at the start (2nd tenth), {ratio_end:.2f} at the end (last tenth)"
    )
    _plot(results, args.plot)
    print(f"Plot: {args.plot}")


def _plot(results: dict[str, Any], out: Path) -> None:
    from sb3_safe.plots import pyplot

    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for which, points in results.items():
        steps = [p[0] for p in points[1:]]
        speed = [(b[0] - a[0]) / (b[1] - a[1]) for a, b in itertools.pairwise(points)]
        top.plot(steps, speed, label=which)
        bottom.plot([p[0] for p in points], [p[2] / 2**20 for p in points], label=which)
    top.set_ylabel("steps/s (per 1% of the run)")
    bottom.set_ylabel("resident memory (MiB)")
    bottom.set_xlabel("environment steps")
    top.set_title("bench-soak: CartPole-v1, an update every 8 steps", fontsize=10)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
