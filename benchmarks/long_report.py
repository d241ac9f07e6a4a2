"""
The record of ``make bench-long``: each run's resume chain stitched into one history, with curves,
findings, rollbacks, wall time, steps/s, memory and the monitor's cost at 10% and at the end.

For every run folder of the suite (``<out>/runs/<env>/<config>-s<seed>``) the parts it resumed from
(``<run>.partN``, named in each part's ``config.yml``) are read oldest first; a part's rows past the
step the next part resumed at are dropped (they were trained again).

Usage: ``python benchmarks/long_report.py [bench-results/long]``; writes ``long.md`` and ``long.png`` there.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from sb3_safe.bench import resume_chain
from sb3_safe.runs import RunFolder

CURVES = {
    "team return (evaluation)": "eval",
    "training return (health/ep_return)": "health/ep_return",
    "value loss": "train/value_loss",
    "explained variance": "train/explained_variance",
    "actor grad norm": "train/actor_grad_norm",
    "critic grad norm": "train/critic_grad_norm",
    "approx KL": "train/approx_kl",
    "learning rate": "train/learning_rate",
}


def _rows(folder: Path, until: float) -> list[dict[str, float]]:
    rows = []
    with open(folder / "progress.csv", newline="") as f:
        for raw in csv.DictReader(f):
            row = {k: float(v) for k, v in raw.items() if v not in ("", None)}
            if row.get("time/total_timesteps", 0.0) <= until:
                rows.append(row)
    return rows


def stitched(run: Path) -> dict[str, Any]:
    """One run's history over its resume chain."""
    chain = resume_chain(run)
    rows: list[dict[str, float]] = []
    evaluations: list[tuple[int, float]] = []
    events: list[dict[str, Any]] = []
    wall = 0.0
    for i, part in enumerate(chain):
        until = math.inf
        if i + 1 < len(chain):
            until = float(RunFolder(chain[i + 1]).read_config()[2].get("resumed_at_timestep") or math.inf)
        part_rows = _rows(part, until)
        rows += part_rows
        steps, means = RunFolder(part).evaluations()
        evaluations += [(s, m) for s, m in zip(steps, means, strict=True) if s <= until]
        events += [e for e in RunFolder(part).health_events() if e.get("timestep", 0) <= until]
        wall += max((row.get("time/time_elapsed", 0.0) for row in part_rows), default=0.0)
    result = RunFolder(run).read_result() or {}
    return {"chain": chain, "rows": rows, "evaluations": evaluations, "events": events, "wall": wall, "result": result}


def _at(rows: list[dict[str, float]], key: str, fraction: float) -> float:
    values = [(row["time/total_timesteps"], row[key]) for row in rows if key in row and "time/total_timesteps" in row]
    if not values:
        return float("nan")
    target = fraction * values[-1][0]
    return min(values, key=lambda sv: abs(sv[0] - target))[1]


def _median_between(rows: list[dict[str, float]], key: str, low: float, high: float) -> float:
    last = max((row.get("time/total_timesteps", 0.0) for row in rows), default=0.0)
    values = [row[key] for row in rows if key in row and low * last <= row.get("time/total_timesteps", 0.0) <= high * last]
    return float(np.median(values)) if values else float("nan")


def main(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(
        p for p in (out / "runs").glob("*/*") if p.is_dir() and ".part" not in p.name and "superseded" not in p.parts
    )
    histories = {f"{run.parent.name} {run.name}": stitched(run) for run in runs}
    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    for ax, (title, key) in zip(axes.flat, CURVES.items(), strict=True):
        for label, history in histories.items():
            if key == "eval":
                xs, ys = zip(*history["evaluations"], strict=True) if history["evaluations"] else ((), ())
            else:
                pairs = [(r["time/total_timesteps"], r[key]) for r in history["rows"] if key in r]
                xs, ys = zip(*pairs, strict=True) if pairs else ((), ())
            ax.plot(np.asarray(xs) / 1e6, ys, label=label, lw=1)
            for event in history["events"]:
                if event.get("event") == "rollback":
                    ax.axvline(event["timestep"] / 1e6, color="red", lw=0.5, alpha=0.5)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("agent steps (millions)")
        if key in ("train/value_loss", "train/approx_kl", "train/critic_grad_norm", "train/actor_grad_norm"):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "long.png", dpi=100)

    lines = [
        "| run | parts | steps | wall time | agent steps/s | final eval | best eval | findings | rollbacks "
        "| RSS MiB at 10% / 100% | monitor ms at 10% / 90-100% |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    details = []
    for label, h in histories.items():
        steps = max((r.get("time/total_timesteps", 0.0) for r in h["rows"]), default=0.0)
        findings = [e for e in h["events"] if e.get("event") == "finding"]
        rollbacks = [e for e in h["events"] if e.get("event") == "rollback"]
        best = max((m for _, m in h["evaluations"]), default=float("nan"))
        lines.append(
            f"| {label} | {len(h['chain'])} | {steps:,.0f} | {h['wall'] / 60:.0f} min | {steps / max(h['wall'], 1e-9):,.0f} | "
            f"{h['result'].get('eval_mean_return', float('nan')):.2f} | {best:.2f} | {len(findings)} | {len(rollbacks)} | "
            f"{_at(h['rows'], 'time/rss_mb', 0.1):.0f} / {_at(h['rows'], 'time/rss_mb', 1.0):.0f} | "
            f"{_median_between(h['rows'], 'health/monitor_ms', 0.05, 0.15):.2f} / "
            f"{_median_between(h['rows'], 'health/monitor_ms', 0.9, 1.0):.2f} |"
        )
        for event in h["events"]:
            what = event.get("code") or event.get("reasons") or ""
            severity = event.get("severity", "")
            details.append(f"- {label}, step {event.get('timestep', 0):,}: {event.get('event')} {what} {severity}".rstrip())
    text = "\n".join(lines) + "\n\nEvents (health.jsonl over the chain):\n\n" + ("\n".join(details) or "- none") + "\n"
    (out / "long.md").write_text(text)
    (out / "long.json").write_text(
        json.dumps({k: {"chain": [str(p) for p in h["chain"]], "events": h["events"]} for k, h in histories.items()}, indent=1)
    )
    print(text)
    print(f"Curves: {out / 'long.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results/long"))
