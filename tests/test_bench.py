"""Benchmark suites: parsing, IQM, a tiny suite end to end, resume."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sb3_safe.bench import iqm, load_suite, run_suite, summarize, write_outputs
from sb3_safe.errors import ConfigError

TINY_SUITE = """
name: tiny
seeds: [0]
n_evaluations: 2
eval_episodes: 1
configs: {safe: safe, sb3-zoo: zoo-ppo}
envs:
  Pendulum-v1: {timesteps: 2048, threshold: -2000}
stresses:
  nan-obs: {fault: non_finite, at_step: 600, target: obs}
"""


def test_iqm_is_the_mean_of_the_middle_half():
    # 8 values: the 25th-75th percentile range [2.75, 6.25] keeps 3, 4, 5, 6
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)
    assert iqm([10.0]) == 10.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "seeds: [0]\nconfigs: {a: safe}\nenvs: {Pendulum-v1: {timesteps: 10}}\nstresess: {}",
            "unknown key `stresess`. Did you mean 'stresses'?",
        ),
        ("seeds: [0]\nconfigs: {a: safe}\nenvs: {Pendulum-v1: {}}", "give at least {timesteps: N}"),
        ("seeds: []\nconfigs: {a: safe}\nenvs: {Pendulum-v1: {timesteps: 10}}", "`seeds` is missing or empty"),
        (
            "seeds: [0]\nconfigs: {a: safe}\nenvs: {Pendulum-v1: {timesteps: 10}}\nstresses: {x: {fault: reward_scal}}",
            "fault 'reward_scal' is not known. Did you mean 'reward_scale'?",
        ),
    ],
)
def test_bad_suite_is_a_one_line_error(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "suite.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        load_suite(path)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_tiny_suite_end_to_end_and_resume(tmp_path: Path):
    path = tmp_path / "suite.yml"
    path.write_text(TINY_SUITE)
    suite = load_suite(path)
    assert len(suite.jobs()) == 4  # (clean, nan-obs) x (safe, sb3-zoo) x 1 seed
    rows = run_suite(suite, tmp_path / "out", workers=1)
    by_key = {(r["env"], r["config"]): r for r in rows}
    assert not by_key[("Pendulum-v1", "safe")]["crashed"]
    assert not by_key[("Pendulum-v1+nan-obs", "safe")]["crashed"]
    assert by_key[("Pendulum-v1+nan-obs", "safe")]["rollbacks"] >= 1
    assert by_key[("Pendulum-v1+nan-obs", "sb3-zoo")]["crashed"]  # plain PPO: NaN observation, torch raises
    write_outputs(rows, tmp_path / "out", suite)
    for name in ("results.csv", "summary.csv", "summary.md", "curves-Pendulum-v1.png", "curves-Pendulum-v1_nan-obs.png"):
        assert (tmp_path / "out" / name).is_file(), name
    with open(tmp_path / "out" / "summary.csv") as f:
        summary = {(r["env"], r["config"]): r for r in csv.DictReader(f)}
    assert summary[("Pendulum-v1+nan-obs", "sb3-zoo")]["crashes"] == "1"
    assert summary[("Pendulum-v1+nan-obs", "safe")]["crashes"] == "0"
    assert len(summarize(rows)) == 4
    # run again: every run is found finished and skipped, results identical
    again = run_suite(suite, tmp_path / "out", workers=1)
    assert [r["final_return"] for r in again] == pytest.approx([r["final_return"] for r in rows], nan_ok=True)


def test_a_finished_run_of_an_edited_profile_is_run_again_and_kept(tmp_path: Path):
    """Resuming a suite after a profile's block changed: the old run moves to superseded/, nothing is lost."""
    profile = tmp_path / "mine.yml"
    block = "{n_envs: 1, n_timesteps: 512, n_steps: 256, batch_size: 64, n_epochs: 1, learning_rate: %s}"
    profile.write_text("default: {algo: ppo, health: false, rollback: false}\nPendulum-v1: " + block % "0.001" + "\n")
    path = tmp_path / "suite.yml"
    path.write_text(f"name: edit\nseeds: [0]\nn_evaluations: 1\neval_episodes: 1\nconfigs: {{mine: {profile}}}\n")
    path.write_text(path.read_text() + "envs:\n  Pendulum-v1: {timesteps: 512}\n")
    suite, out = load_suite(path), tmp_path / "out"
    run = suite.jobs()[0].run_dir(out)
    run_suite(suite, out)
    first = (run / "result.json").read_text()
    run_suite(suite, out)  # unchanged: skipped
    assert (run / "result.json").read_text() == first and not (out / "superseded").exists()
    profile.write_text(profile.read_text().replace("0.001", "0.0005"))
    run_suite(suite, out)
    moved = out / "superseded" / "Pendulum-v1" / "mine-s0"
    assert (moved / "result.json").read_text() == first
    assert "learning_rate: 0.001" in (moved / "config.yml").read_text()
    assert "learning_rate: 0.0005" in (run / "config.yml").read_text()
    profile.write_text(profile.read_text().replace("0.0005", "0.001"))
    run_suite(suite, out)  # edited back: the newer run moves beside the first, under a free name
    assert (out / "superseded" / "Pendulum-v1" / "mine-s0-2" / "result.json").is_file()
    assert "learning_rate: 0.001" in (run / "config.yml").read_text()


def test_the_summary_links_each_runs_report(tmp_path: Path):
    """A run with logged updates gets its report.html, linked from summary.md; one that crashed before any does not."""
    from sb3_safe.bench import _report_links, _write_reports
    from tests.test_recover import write_run

    write_run(tmp_path / "runs" / "Pendulum-v1" / "safe-s0", [-1200.0 + 30 * i for i in range(10)], [0.004] * 10)
    (tmp_path / "runs" / "Pendulum-v1" / "baseline-s0").mkdir()
    rows = [{"env": "Pendulum-v1", "config": config, "seed": 0} for config in ("safe", "baseline")]
    reports = _write_reports(rows, tmp_path)
    assert list(reports) == ["Pendulum-v1 safe seed 0"] and reports["Pendulum-v1 safe seed 0"].is_file()
    assert "- [Pendulum-v1 safe seed 0](runs/Pendulum-v1/safe-s0/report.html)" in _report_links(reports, tmp_path)
