"""The detectors on real 100M-step MAPPO runs (tests/data/long-transport): what they call critical, and when."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from sb3_safe.diagnose import diagnose, iter_history
from sb3_safe.health import HealthHistory, Thresholds, detect
from sb3_safe.runs import RunFolder

RECORDS = Path(__file__).parent / "data" / "long-transport"


def record(name: str, tmp_path: Path) -> Path:
    """The record as a run folder (its progress.csv unpacked)."""
    source, folder = RECORDS / name, tmp_path / name
    folder.mkdir()
    for file in source.iterdir():
        if file.name == "progress.csv.gz":
            with gzip.open(file, "rb") as packed, open(folder / "progress.csv", "wb") as out:
                shutil.copyfileobj(packed, out)
        elif file.is_dir():
            shutil.copytree(file, folder / file.name)
        else:
            shutil.copy(file, folder / file.name)
    return folder


def live_replay(folder: Path) -> list[tuple[str, str, int]]:
    """The rows fed one by one to a HealthHistory, as the live monitor does after every update: every finding seen."""
    history = HealthHistory(Thresholds())
    seen: list[tuple[str, str, int]] = []
    rows, _ = iter_history(folder)
    for row in rows:
        history.push(row)
        seen += [(f.code, f.severity, f.timestep) for f in detect(history)]
    return seen


def test_a_noisy_healthy_baseline_raises_nothing_critical(tmp_path: Path):
    folder = record("baseline-s0-76M", tmp_path)
    # what the monitor of the code that made it said: four critical reward collapses on two-update dips
    said = [(e["code"], e["severity"], e["timestep"]) for e in RunFolder(folder).health_events(("finding",))]
    assert said == [("reward_collapse", "critical", s) for s in (15_900_000, 34_100_000, 37_500_000, 61_900_000)]
    diagnosis = diagnose(folder)
    assert diagnosis.updates == 764 and [f for f in diagnosis.findings if f.severity == "critical"] == []
    assert [s for s in live_replay(folder) if s[1] == "critical"] == []


def test_the_safe_profiles_100m_step_run_raises_nothing(tmp_path: Path):
    """
    Its greedy evaluations (10 episodes) swing between -4 and 9.6 team return, most of them 0: the final one, -0.3,
    is within that noise (pooled over the evaluations; their median standard error, 1.1, called it a collapse).
    """
    folder = record("safe-s0", tmp_path)
    assert RunFolder(folder).evaluation_noise() > 3.0
    diagnosis = diagnose(folder)
    assert diagnosis.updates == 999 and diagnosis.findings == []
    assert live_replay(folder) == []


def test_the_blowup_is_critical_within_2m_steps_of_its_onset(tmp_path: Path):
    """
    The baseline with the first published long run's code, seed 0: approx KL ~0.027 per update until 78.7M, then
    100, 793, 253, ... with 88-99% of samples clipped. Its own monitor raised two kl_spike warnings, nothing critical.
    """
    folder = record("baseline-5cb0a88-s0-80M", tmp_path)
    said = [(e["code"], e["severity"]) for e in RunFolder(folder).health_events(("finding",))]
    assert ("kl_spike", "warning") in said and all(severity != "critical" for _, severity in said)
    diagnosis = diagnose(folder)
    critical = [f for f in diagnosis.findings if f.severity == "critical"]
    assert [(f.code, f.timestep, f.onset) for f in critical] == [("policy_blowup", 79_000_000, 78_700_000)]
    assert critical[0].timestep - (critical[0].onset or 0) <= 2_000_000 and "sb3-safe recover" in critical[0].advice
    # the live monitor's history sees the same, and nothing critical before it
    live = [s for s in live_replay(folder) if s[1] == "critical"]
    assert live[0] == ("policy_blowup", "critical", 79_000_000)
    # recover picks the newest checkpoint before the onset (the run saved one every 2M steps)
    from sb3_safe.recover import find_trouble

    trouble = find_trouble(folder)
    assert trouble is not None and trouble.code == "policy_blowup" and trouble.onset == 78_700_000


def test_the_recovered_run_is_healthy_in_both_parts_of_its_resume_chain(tmp_path: Path):
    """recover went back to 78M (the newest checkpoint before the onset); killed after 88M, continued to 100M."""
    import json

    story = json.loads((RECORDS / "story.json").read_text())
    assert (story["finding"], story["onset"], story["critical_at"], story["checkpoint_step"]) == (
        "policy_blowup",
        78_700_000,
        79_000_000,
        78_000_000,
    )
    steps = []
    for part in ("recovered-s0-part1", "recovered-s0-part2"):
        diagnosis = diagnose(record(part, tmp_path))
        assert diagnosis.findings == []
        steps.append((int(diagnosis.history[0]["timesteps"]), int(diagnosis.history[-1]["timesteps"])))
    assert steps[0][0] <= 78_200_000 and steps[0][1] == 88_000_000 and steps[1][1] == 100_000_000
    # the paired evaluation: the recovered end within noise of the best pre-onset checkpoint, the collapsed end below
    evaluation = story["evaluation"]
    gained, gained_sem = evaluation["recovered_minus_best_pre_onset"]
    lost, lost_sem = evaluation["collapsed_minus_best_pre_onset"]
    assert gained > -2 * gained_sem and lost < -2 * lost_sem
