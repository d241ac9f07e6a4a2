"""
``make bench-recover``: the recovery demonstration of docs/benchmarks.md, end to end.

1. Run the benchmark suite's baseline Pendulum-v1 runs (``benchmarks/suites/recover.yml``: the
   entries of ``full.yml``, seeds 0-2, the same budget, evaluations and checkpoints), resumable.
2. ``sb3-safe recover`` each of them (a run already recovered, ``<run>.recover-safe`` with a result,
   is read, not trained again).
3. Compare the baseline run's best against the recovered run's end **on the same episodes**: the
   baseline's ``best_model.zip`` (the model of its best periodic evaluation) and the recovered
   ``model.zip``, each evaluated on ``--episodes`` episodes from the same seed. A periodic
   evaluation is 5 episodes and the best of the suite's 10 is the luckiest draw; evaluated on the same
   episodes, the two models meet on equal terms; their difference is paired, episode by episode
   (Pendulum's return depends mostly on the start, which both models share). The recorded figures
   are printed too.

Prints a Markdown table (also written to ``OUT/recover.md``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from sb3_safe.bench import load_suite, run_suite
from sb3_safe.diagnose import diagnose
from sb3_safe.recover import Recovery, find_trouble, recover, run_thresholds
from sb3_safe.runs import RunFolder
from sb3_safe.training import evaluate

SUITE = Path(__file__).parent / "suites" / "recover.yml"


def _recovered(run: Path) -> Path | None:
    """The run's first recovery under the safe profile, if it finished."""
    child = run.with_name(f"{run.name}.recover-safe")
    return child if RunFolder(child).read_result() is not None else None


def _best_periodic(folder: RunFolder) -> tuple[float, int]:
    steps, means = folder.evaluations()
    if not means:
        return math.nan, 0
    best = max(range(len(means)), key=lambda i: means[i])
    return means[best], steps[best]


def _paired(a: list[float], b: list[float]) -> str:
    """Mean difference of two models' returns on the same episodes, with its standard error."""
    diff = np.asarray(a) - np.asarray(b)
    return f"{diff.mean():+,.1f} ± {diff.std(ddof=1) / np.sqrt(len(diff)):,.1f}"


def _fmt(value: float) -> str:
    return f"{value:,.1f}" if math.isfinite(value) else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-results/recover"), help="output folder")
    parser.add_argument("--episodes", type=int, default=100, help="episodes of the side-by-side evaluation")
    parser.add_argument("--eval-seed", type=int, default=1000, help="seed of the side-by-side evaluation")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the baseline runs")
    args = parser.parse_args()

    suite = load_suite(SUITE)
    rows = run_suite(suite, args.out, args.workers)
    header = (
        "| seed | baseline: suite verdict | trouble found | checkpoint used | baseline: best periodic eval (step) "
        "| baseline: final eval | recovered: final eval | critical after recovery "
        f"| baseline best model, {args.episodes} ep. | recovered model, {args.episodes} ep. "
        "| recovered - baseline best, paired (± standard error) |"
    )
    columns = header.count("|") - 1
    lines = [header, "|" + "---|" * columns]
    for row in sorted(rows, key=lambda r: r["seed"]):
        run = next(job.run_dir(args.out) for job in suite.jobs() if job.seed == row["seed"])
        folder = RunFolder(run)
        verdict = "crashed" if row["crashed"] else "collapsed" if row["collapsed"] else "healthy"
        best, best_step = _best_periodic(folder)
        child = _recovered(run)
        trouble = find_trouble(run)
        if child is None and trouble is not None:
            recovery: Recovery = recover(run, progress_bar=False, argv=["sb3-safe", "recover", str(run)])
            child = recovery.result.run_dir if recovery.result is not None else None
        base = [str(row["seed"]), verdict]
        if trouble is None or child is None:
            cells = [*base, "none: nothing to recover", "-", f"{_fmt(best)} ({best_step:,})", _fmt(row["final_return"])]
            lines.append("| " + " | ".join(cells + ["-"] * (columns - len(cells))) + " |")
            continue
        chain = RunFolder(child).read_config()[2].get("recovered_from", {})
        checkpoint = Path(chain["checkpoint"]).name if chain.get("checkpoint") else "none (afresh)"
        after = diagnose(child, run_thresholds(RunFolder(child))).unhandled
        parent_best = evaluate(folder.best_model, episodes=args.episodes, seed=args.eval_seed)
        recovered = evaluate(child, episodes=args.episodes, seed=args.eval_seed)
        cells = [
            *base,
            f"{trouble.code}, {trouble.onset:,} -> {trouble.timestep:,}",
            checkpoint,
            f"{_fmt(best)} ({best_step:,})",
            _fmt(row["final_return"]),
            _fmt(float((RunFolder(child).read_result() or {}).get("eval_mean_return", math.nan))),
            ", ".join(f"{f.code}@{f.timestep:,}" for f in after) or "0",
            f"{parent_best.mean:,.1f} ± {parent_best.std:,.1f}",
            f"{recovered.mean:,.1f} ± {recovered.std:,.1f}",
            _paired(recovered.returns, parent_best.returns),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    (args.out / "recover.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
