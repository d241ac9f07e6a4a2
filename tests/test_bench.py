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
