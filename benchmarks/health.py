"""
``make bench-health``: what the live health monitor costs per update, and what it holds, as a run grows.

Feeds a :class:`~sb3_safe.health.HealthHistory` synthetic per-update rows with every metric
SafePPO logs (noisy, healthy), running the detectors after each one as
:class:`~sb3_safe.callbacks.HealthMonitorCallback` does, up to 1,000,000 updates. At 1k, 10k,
100k and 1M updates it prints the mean cost per update over the last 1,000 updates (CPU time)
and the size of the history (its pickled state, and the memory tracemalloc attributes to it).
"""

from __future__ import annotations

import argparse
import pickle
import time
import tracemalloc

import numpy as np

from sb3_safe.health import HealthHistory, Thresholds, TroubleTracker, detect
from sb3_safe.stats import UpdateStats


def rows(n: int, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    keys = [name for name in UpdateStats.__dataclass_fields__ if name not in ("clip_range_vf",)]
    for i in range(n):
        noise = rng.normal(size=6)
        progress = min(i / 2000, 1.0)
        row = dict.fromkeys(keys, 0.0)
        row.update(
            timesteps=2048.0 * (i + 1),
            approx_kl=0.01 * (1 + 0.2 * noise[0]),
            clip_fraction=0.1 * (1 + 0.2 * noise[1]),
            entropy_loss=-1.4 + 0.5 * progress,
            std=1.0 - 0.4 * progress,
            value_loss=0.5 * (1 + 0.3 * abs(noise[2])),
            explained_variance=0.8 + 0.05 * noise[3],
            returns_std=30.0 * (1 + 0.1 * abs(noise[4])),
            ep_rew_mean=-1200.0 + 1000.0 * progress + 20.0 * noise[5],
            episodes=100.0,
            params_finite=1.0,
        )
        yield row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=1_000_000)
    args = parser.parse_args()
    marks = [m for m in (1_000, 10_000, 100_000, 1_000_000) if m <= args.updates]
    thresholds = Thresholds()
    tracemalloc.start()
    history = HealthHistory(thresholds)
    tracker = TroubleTracker()
    findings = 0
    cpu_window = 0.0
    print(
        f"{'updates':>10} | {'ms per update (last 1,000)':>26} | {'history state (bytes)':>21} | {'traced memory (KiB)':>19}"
    )
    print(f"{'---':>10} | {'---':>26} | {'---':>21} | {'---':>19}")
    for i, row in enumerate(rows(args.updates), start=1):
        start = time.process_time()
        history.push(row)
        findings += len(tracker.new(detect(history, thresholds, 0.015)))
        if marks and i > marks[0] - 1000:
            cpu_window += time.process_time() - start
        if marks and i == marks[0]:
            current, _ = tracemalloc.get_traced_memory()
            size = len(pickle.dumps(history.state_dict()))
            print(f"{i:>10,} | {1000 * cpu_window / 1000:>26.3f} | {size:>21,} | {current / 1024:>19,.0f}", flush=True)
            marks.pop(0)
            cpu_window = 0.0
    print(f"findings on the healthy stream: {findings}")


if __name__ == "__main__":
    main()
