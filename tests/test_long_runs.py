"""
Detectors at the scale of the long run this project was built from, and on logs it did not make.

The seeds' run: 500 environments x 200 steps = 100k steps per update, returns of a few
hundredths climbing to +0.022, then from the onset the value loss climbing ~1.35x per update
(0.004 -> 0.4 over ~15 updates) while the critic explains less and less, returns falling to
-0.017 within 5 updates of the turn, NaN later. Its twin is healthy with real noise.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sb3_safe.diagnose import PLOT_ROWS, diagnose
from sb3_safe.health import HealthHistory, Thresholds, detect, scan

STEPS_PER_UPDATE = 100_000
ONSET = 120
DATA = Path(__file__).parent / "data"


def seeds_row(i: int, rng: np.random.Generator, *, spread: bool = True, **changes: float) -> dict[str, float]:
    climb = min(i / 100, 1.0)
    row: dict[str, Any] = {
        "timesteps": float(STEPS_PER_UPDATE * (i + 1)),
        "approx_kl": 0.008 * math.exp(0.3 * rng.normal()),
        "clip_fraction": 0.08 * math.exp(0.3 * rng.normal()),
        "entropy_loss": -1.6 + 0.3 * climb,
        "value_loss": 0.004 * math.exp(0.35 * rng.normal()),
        "explained_variance": float(np.clip(0.6 + 0.12 * rng.normal(), -0.2, 0.95)),
        "ep_rew_mean": -0.02 + 0.042 * climb + 0.002 * rng.normal(),
        "episodes": 100.0,
        "loss": 0.01,
        "policy_gradient_loss": -0.005,
        "params_finite": 1.0,
    }
    if spread:
        row["returns_std"] = 0.05 * math.exp(0.1 * rng.normal())
    row.update(changes)
    return row


def seeds_divergence(spread: bool = True, seed: int = 0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    rows = [seeds_row(i, rng, spread=spread) for i in range(ONSET)]
    for k in range(1, 26):  # from the onset: the loss climbs 1.35x per update, the critic falls apart
        i = ONSET + k
        turn = max(k - 8, 0)  # the returns turn 8 updates into the rise and fall within 5
        ret = 0.022 - 0.039 * min(turn / 5, 1.0) + 0.002 * rng.normal()
        loss = 0.004 * 1.35**k * math.exp(0.15 * rng.normal())
        ev = 0.6 - 0.08 * k + 0.05 * rng.normal()
        rows.append(seeds_row(i, rng, spread=spread, value_loss=loss, explained_variance=ev, ep_rew_mean=ret))
    rows.append(seeds_row(ONSET + 26, rng, spread=spread, value_loss=float("nan"), ep_rew_mean=float("nan")))
    return rows


def seeds_healthy(seed: int = 1, n: int = 400) -> list[dict[str, float]]:
    """The same scale, healthy: loss blips of 3-6x that settle, plateaus, explained variance wandering."""
    rng = np.random.default_rng(seed)
    rows = []
    blip = 1.0
    for i in range(n):
        # a blip of 3-6x now and then, that settles within a few updates
        blip = float(rng.uniform(3, 6)) if rng.random() < 0.04 else 1.0 + (blip - 1.0) * 0.4
        plateau = 0.0 if (i // 60) % 2 else 0.004 * math.sin(i / 15)  # plateaus and slow wandering
        ev = float(np.clip(0.55 + 0.3 * math.sin(i / 23) + 0.1 * rng.normal(), -0.3, 0.95))
        rows.append(
            seeds_row(i, rng, value_loss=0.004 * blip * math.exp(0.35 * rng.normal()), explained_variance=ev)
            | {"ep_rew_mean": -0.02 + 0.042 * min(i / 100, 1.0) + plateau + 0.002 * rng.normal()}
        )
    return rows


def critical(found: list[Any]) -> list[tuple[str, int]]:
    return [(f.code, f.timestep // STEPS_PER_UPDATE - 1) for f in found if f.severity == "critical"]


@pytest.mark.parametrize("spread", [True, False], ids=["with-return-spread", "plain-sb3-keys"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seeds_scale_divergence_is_critical_within_10_updates_of_its_onset(spread: bool, seed: int):
    found = critical(scan(seeds_divergence(spread, seed)))
    before_nan = [(code, update) for code, update in found if code != "non_finite"]
    assert before_nan, found
    update = before_nan[0][1]
    assert ONSET < update <= ONSET + 10, found
    assert all(update > ONSET for _, update in found)  # nothing critical before the onset


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_seeds_scale_healthy_twin_raises_nothing_critical(seed: int):
    assert critical(scan(seeds_healthy(seed))) == []


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_the_judgement_does_not_depend_on_the_reward_scale(scale: float):
    def scaled(rows: list[dict[str, float]]) -> list[dict[str, float]]:
        out = []
        for row in rows:
            row = dict(row)
            for key in ("ep_rew_mean", "returns_std"):
                if key in row:
                    row[key] *= scale
            row["value_loss"] *= scale**2
            out.append(row)
        return out

    reference = [(f.code, f.timestep, f.severity) for f in scan(seeds_divergence())]
    assert [(f.code, f.timestep, f.severity) for f in scan(scaled(seeds_divergence()))] == reference
    assert critical(scan(scaled(seeds_healthy(2)))) == []


def test_the_level_does_not_follow_a_slow_rise():
    history = HealthHistory.of(seeds_divergence()[: ONSET + 12])
    level = math.exp(history.loss_level["raw"])
    assert level < 0.02  # held near the pre-onset 0.004, while the loss is near 0.004 * 1.35**12 = 0.146
    assert history.held_for > 0


def test_a_million_row_log_streams_in_bounded_memory():
    rng = np.random.default_rng(0)
    history = HealthHistory(Thresholds())
    for i in range(20_000):
        history.push(seeds_row(i, rng))
        detect(history)
    assert len(history.rows) == history.window and len(history) == 20_000


def _write_progress_csv(rows: list[dict[str, float]], path: Path) -> None:
    keys = {"ep_rew_mean": "rollout/ep_rew_mean", "timesteps": "time/total_timesteps"}
    names = sorted({keys.get(k, f"train/{k}") for row in rows for k in row if k != "episodes"})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, names)
        writer.writeheader()
        for row in rows:
            writer.writerow({keys.get(k, f"train/{k}"): v for k, v in row.items() if k != "episodes"})


def test_diagnose_sees_the_seeds_divergence_in_a_progress_csv(tmp_path: Path):
    _write_progress_csv(seeds_divergence(spread=False), tmp_path / "progress.csv")
    found = critical(diagnose(tmp_path / "progress.csv").findings)
    assert found[0][0] != "non_finite" and ONSET < found[0][1] <= ONSET + 10, found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plain_sb3_cartpole_with_its_default_settings_is_not_critical(seed: int):
    # Real logs (tests/data/make_sb3_logs.py): SB3's PPO defaults, 1 environment, no reward
    # normalization; solving the task swings the value loss between ~5 and ~200 between rollouts.
    diagnosis = diagnose(DATA / f"sb3-ppo-default-CartPole-v1-s{seed}" / "progress.csv")
    assert [f.code for f in diagnosis.findings if f.severity == "critical"] == []
    assert max(row["ep_rew_mean"] for row in diagnosis.history) > 400  # it did solve the task


def test_diagnose_streams_a_long_log_and_keeps_a_bounded_plot_sample(tmp_path: Path):
    rng = np.random.default_rng(0)
    _write_progress_csv([seeds_row(i, rng, spread=False) for i in range(12_000)], tmp_path / "progress.csv")
    diagnosis = diagnose(tmp_path / "progress.csv")
    assert diagnosis.updates == 12_000 and "12000 updates" in diagnosis.verdict
    assert len(diagnosis.history) <= 2 * PLOT_ROWS
    assert diagnosis.history[-1]["timesteps"] == 12_000 * STEPS_PER_UPDATE  # the last update is always kept
    assert [f for f in diagnosis.findings if f.severity == "critical"] == []
