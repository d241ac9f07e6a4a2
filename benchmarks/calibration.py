"""
``make bench-calibration ARGS=DIR``: do the detectors cry wolf on runs that were fine?

For every run folder under ``DIR`` (a benchmark suite's output, ``bench-results/full``, or any
folder of sb3-safe run folders), compare three verdicts:

- the **evaluation rule** of the benchmark (crash; collapse: the final evaluation lost more than
  half of the best gain over the periodic evaluations), independent of the detectors;
- the **live** monitor's critical findings (``health.jsonl``; sb3-safe profiles only);
- the detectors **replayed** over the run's ``progress.csv`` (``sb3-safe diagnose``, with the run's
  own thresholds), which also covers plain SB3 PPO runs (the ``sb3-zoo`` configuration).

It prints one row per run and, at the end, the runs that were healthy by the evaluation rule
but got a critical finding (false alarms, or real trouble the evaluation did not see), and the
collapsed runs with no critical finding (misses).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sb3_safe.diagnose import diagnose
from sb3_safe.errors import UserError
from sb3_safe.health import evaluation_collapse
from sb3_safe.recover import run_thresholds
from sb3_safe.runs import RunFolder


def _verdict(folder: RunFolder) -> str:
    result = folder.read_result()
    if not result or result.get("crashed"):
        return "crashed"
    steps, means = folder.evaluations()
    final = float(result.get("eval_mean_return", math.nan))
    if not means or not math.isfinite(final):
        return "unknown"
    return "collapsed" if evaluation_collapse(steps, means, final, int(result.get("num_timesteps", 0))) else "healthy"


def _codes(findings: list[tuple[str, int]]) -> str:
    return ", ".join(f"{code}@{step:,}" for code, step in findings) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path, help="a folder holding run folders (at any depth)")
    args = parser.parse_args()
    runs = sorted(path.parent for path in args.root.rglob("progress.csv") if (path.parent / "config.yml").is_file())
    print("| run | evaluation rule | live critical | replayed critical |")
    print("|---|---|---|---|")
    alarms, misses = [], []
    for run in runs:
        folder = RunFolder(run)
        verdict = _verdict(folder)
        live = [
            (str(e["code"]), int(e["timestep"])) for e in folder.health_events(("finding",)) if e.get("severity") == "critical"
        ]
        try:
            # The training log's detectors only: the evaluations are what the rule above judges.
            diagnosis = diagnose(run, run_thresholds(folder), evaluations=False)
            replay = [(f.code, f.timestep) for f in diagnosis.findings if f.severity == "critical"]
        except UserError as error:
            replay = [(f"unreadable: {error}", 0)]
        name = str(run.relative_to(args.root))
        print(f"| {name} | {verdict} | {_codes(live)} | {_codes(replay)} |")
        if verdict == "healthy" and (live or replay):
            alarms.append(name)
        if verdict == "collapsed" and not (live or replay):
            misses.append(name)
    print(f"\n{len(runs)} runs. Healthy by the evaluation rule but with a critical finding: {len(alarms)}")
    for name in alarms:
        print(f"  {name}")
    print(f"Collapsed by the evaluation rule with no critical finding: {len(misses)}")
    for name in misses:
        print(f"  {name}")


if __name__ == "__main__":
    main()
