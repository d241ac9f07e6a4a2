"""`sb3-safe diagnose` on progress.csv and TensorBoard fixtures made here."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure

from sb3_safe.cli import main
from sb3_safe.diagnose import diagnose, load_history


@pytest.fixture(scope="module")
def plain_sb3_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A healthy plain-SB3 PPO run that wrote progress.csv and TensorBoard events."""
    folder = tmp_path_factory.mktemp("sb3-run")
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=128, batch_size=64, n_epochs=4, seed=0, device="cpu")
    model.set_logger(configure(str(folder), ["csv", "tensorboard"]))
    model.learn(128 * 12)
    return folder


def write_collapse_csv(path: Path) -> Path:
    """A run whose return climbs, then loses most of it while the value loss explodes and EV goes negative."""
    keys = ["time/total_timesteps", "rollout/ep_rew_mean", "train/value_loss", "train/explained_variance", "train/approx_kl"]
    keys += ["train/clip_fraction", "train/entropy_loss"]
    rows = []
    for i in range(40):
        collapsing = i >= 30
        rows.append(
            {
                "time/total_timesteps": 2048 * (i + 1),
                "rollout/ep_rew_mean": -1200 + 30 * i if not collapsing else -330 - 120 * (i - 29),
                "train/value_loss": 0.004 if not collapsing else 0.004 * 4 ** (i - 28),
                "train/explained_variance": 0.8 if not collapsing else -3.0,
                "train/approx_kl": 0.01,
                "train/clip_fraction": 0.1,
                "train/entropy_loss": -1.4,
            }
        )
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_healthy_plain_sb3_csv_raises_nothing_critical(plain_sb3_run: Path):
    result = diagnose(plain_sb3_run / "progress.csv")
    assert len(result.history) == 11  # 12 rollouts, the first dump precedes any update
    assert not [f for f in result.findings if f.severity == "critical"]


def test_tensorboard_events_read_like_the_csv(plain_sb3_run: Path):
    from_csv, _ = load_history(plain_sb3_run / "progress.csv")
    from_tb, _ = load_history(plain_sb3_run)
    assert len(from_tb) == len(from_csv)
    assert [row["timesteps"] for row in from_tb] == [row["timesteps"] for row in from_csv]
    assert [row["approx_kl"] for row in from_tb] == pytest.approx([row["approx_kl"] for row in from_csv], rel=1e-6)


def test_collapse_is_found_with_advice(tmp_path: Path):
    result = diagnose(write_collapse_csv(tmp_path / "progress.csv"))
    codes = {f.code: f for f in result.findings}
    assert codes["value_divergence"].severity == "critical"
    assert codes["reward_collapse"].severity == "critical"
    assert "learning_rate" in codes["reward_collapse"].advice
    assert result.worst_first[0].severity == "critical"
    assert result.verdict.startswith("unhealthy")


def test_cli_report_json_and_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    csv_path = write_collapse_csv(tmp_path / "progress.csv")
    assert main(["diagnose", str(csv_path), "--plot", str(tmp_path / "health.png")]) == 0
    report = capsys.readouterr().out
    assert report.splitlines()[-2].startswith("Verdict: unhealthy")
    assert report.splitlines()[-1].endswith(f"sb3-safe recover {tmp_path}")
    assert "advice:" in report
    assert (tmp_path / "health.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["diagnose", str(csv_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"code", "severity", "timestep", "values", "message", "advice"} <= set(data["findings"][0])


@pytest.mark.parametrize("content", [None, "", "a,b\n1,2\n"])
def test_unreadable_input_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None):
    path = tmp_path / "progress.csv"
    if content is not None:
        path.write_text(content)
    assert main(["diagnose", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sb3-safe: error: ") and err.count("\n") == 1
