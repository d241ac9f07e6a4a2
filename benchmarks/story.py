"""
``make bench-story``: the product's story on a real long run, end to end.

1. **The baseline**: MAPPO with the baseline profile on ``vmas:transport``, seed 0, 100M agent steps (the
   long-run suite's shape: 500 copies x 4 agents x 50 steps per update, an evaluation of 10 episodes and a
   checkpoint every 2M steps). Started again, an interrupted run goes on from its newest checkpoint (the part it
   came from is kept as ``<run>.partN``).
2. **The finding**: ``sb3-safe diagnose`` over its logs (onset, the step it became critical).
3. **The recovery**: ``sb3-safe recover RUN`` with no other argument (it picks the checkpoint), trained under the
   safe profile to 100M. The recovery process is killed with SIGKILL once, ``--kill-at`` of the way, and
   continued from its newest checkpoint, so its resume chain has two parts at this scale.
4. **The paired evaluation**: the baseline's best policy from before the onset (the best of its newest
   pre-onset checkpoints), its collapsed end and the recovered end, each on the same ``--episodes`` episodes
   (one seed), with paired differences.

Writes ``OUT/story.json`` and ``OUT/story.png`` and prints a Markdown table. Hours on 2 cores: run it in the
background; started again, it goes on from where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sb3_safe.diagnose import diagnose, load_history
from sb3_safe.recover import find_trouble, plan_recovery, run_thresholds
from sb3_safe.runs import RunFolder, resume_chain, set_aside_interrupted
from sb3_safe.training import evaluate

ENV = "vmas:transport"
EVERY = 2_000_000
BUDGET = 100_000_000
SB3_SAFE = str(Path(sys.executable).with_name("sb3-safe"))


def _train_args(run: Path, profile: str, checkpoint: Path | None) -> list[str]:
    args = [SB3_SAFE, "train", "--env", ENV, "--profile", profile, "--seed", "0", "--timesteps", str(BUDGET)]
    args += ["--eval-freq", str(EVERY), "--save-freq", str(EVERY), "--eval-episodes", "10", "--run-dir", str(run)]
    return args + ([] if checkpoint is None else ["--checkpoint", str(checkpoint)])


def _finished(run: Path) -> bool:
    return RunFolder(run).read_result() is not None


def baseline(out: Path) -> Path:
    """Train the baseline run to its budget, going on from its newest checkpoint when it was interrupted."""
    run = out / "baseline-s0"
    if not _finished(run):
        checkpoint = set_aside_interrupted(run)
        subprocess.run(_train_args(run, _profile_of(checkpoint, "baseline"), checkpoint), check=True)
    return run


def _newest_step(run: Path) -> int:
    """The step of the run's newest checkpoint (0 before the first)."""
    checkpoints = RunFolder(run).checkpoints()
    return checkpoints[-1][0] if checkpoints else 0


def recovered(base: Path, kill_at: float) -> Path:
    """``sb3-safe recover BASE``, killed once with SIGKILL part of the way and continued from its newest checkpoint."""
    run = base.with_name(f"{base.name}.recover-safe")
    if _finished(run):
        return run
    if not run.exists() and not run.with_name(f"{run.name}.part1").exists():
        plan = plan_recovery(base)
        start = plan.checkpoint[0] if plan.checkpoint else 0
        kill_step = start + kill_at * (BUDGET - start)
        every = ["--eval-freq", str(EVERY), "--save-freq", str(EVERY), "--eval-episodes", "10"]
        process = subprocess.Popen([SB3_SAFE, "recover", str(base), "--compare-episodes", "0", *every])
        while process.poll() is None:
            time.sleep(10)
            if run.exists() and _newest_step(run) >= kill_step:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                print(f"story: killed the recovery with SIGKILL at step {_newest_step(run):,}", flush=True)
        if process.returncode not in (0, -signal.SIGKILL):
            raise SystemExit(f"story: sb3-safe recover exited with {process.returncode}")
    if not _finished(run):
        checkpoint = set_aside_interrupted(run)
        subprocess.run(_train_args(run, _profile_of(checkpoint, "safe"), checkpoint), check=True)
    return run


def _profile_of(checkpoint: Path | None, fallback: str) -> str:
    """
    The resolved profile of the part a checkpoint comes from (its ``config.yml``): a continued part trains as the part
    it continues, whatever the profile files say now. (Not the resume chain's first part: a recovery's first part is
    the run it recovered, under another profile.)
    """
    folder = RunFolder.containing(checkpoint) if checkpoint is not None else None
    return str(folder.config_file) if folder is not None else fallback


def _paired(a: list[float], b: list[float]) -> tuple[float, float]:
    diff = np.asarray(a) - np.asarray(b)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def paired_evaluation(base: Path, recovered_run: Path, onset: int, episodes: int, seed: int) -> dict[str, Any]:
    """The baseline's best pre-onset checkpoint, its end and the recovered end, on the same episodes."""
    before = [(step, path) for step, path in RunFolder(base).checkpoints() if step <= onset][-5:]
    candidates = {step: evaluate(path, episodes=episodes, seed=seed, run=base) for step, path in before}
    best_step = max(candidates, key=lambda s: candidates[s].mean)
    best = candidates[best_step]
    final = RunFolder(base).final_model
    end_model = final if final.is_file() else RunFolder(base).checkpoints()[-1][1]  # a baseline stopped after its blow-up
    end = evaluate(end_model, episodes=episodes, seed=seed, run=base)
    rec = evaluate(recovered_run, episodes=episodes, seed=seed)
    sem = {name: float(np.std(r.returns, ddof=1) / np.sqrt(episodes)) for name, r in (("b", best), ("e", end), ("r", rec))}
    return {
        "episodes": episodes,
        "seed": seed,
        "pre_onset_candidates": {str(s): r.mean for s, r in candidates.items()},
        "best_pre_onset": {"step": best_step, "mean": best.mean, "sem": sem["b"]},
        "collapsed_end": {"model": end_model.name, "mean": end.mean, "sem": sem["e"]},
        "recovered_end": {"mean": rec.mean, "sem": sem["r"]},
        "recovered_minus_best_pre_onset": _paired(rec.returns, best.returns),
        "collapsed_minus_best_pre_onset": _paired(end.returns, best.returns),
    }


def plot(base: Path, recovered_run: Path, record: dict[str, Any], out: Path) -> None:
    """Training return, approx KL and the policy's std of both runs against agent steps, onset and finding marked."""
    from sb3_safe.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    runs = [
        ("baseline", [base]),
        ("recovered (safe profile)", [p for p in resume_chain(recovered_run) if p.resolve() != base.resolve()]),
    ]
    for label, parts in runs:
        rows = [row for part in parts for row in load_history(part)[0]]
        steps = np.array([row.get("timesteps", np.nan) for row in rows]) / 1e6
        for ax, key in zip(axes, ("ep_rew_mean", "approx_kl", "std"), strict=True):
            ax.plot(steps, [row.get(key, np.nan) for row in rows], label=label, lw=0.8)
    for ax, title in zip(
        axes, ("training return (per agent, trimmed mean)", "approx KL per update", "policy std"), strict=True
    ):
        ax.set_ylabel(title, fontsize=8)
        ax.axvline(record["onset"] / 1e6, color="tab:orange", ls="--", lw=1, label="onset")
        ax.axvline(record["critical_at"] / 1e6, color="tab:red", ls=":", lw=1, label=f"{record['finding']} (critical)")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    axes[-1].set_xlabel("agent steps (millions)")
    fig.suptitle(f"{ENV}, seed 0: the baseline blows up; recover continues from {record['checkpoint_step'] / 1e6:g}M")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-results/story"))
    parser.add_argument("--kill-at", type=float, default=0.5, help="kill the recovery this far into its steps")
    parser.add_argument("--episodes", type=int, default=100, help="episodes of the paired evaluation")
    parser.add_argument("--seed", type=int, default=2000, help="seed of the paired evaluation's episodes")
    parser.add_argument("--baseline", type=Path, help="a baseline run folder that exists already (trained to its blow-up)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.baseline if args.baseline is not None else baseline(args.out)
    trouble = find_trouble(base)
    if trouble is None:
        raise SystemExit(f"story: {base} has no finding: nothing to recover (the run did not blow up)")
    diagnosis = diagnose(base, run_thresholds(RunFolder(base)))
    plan = plan_recovery(base)
    record: dict[str, Any] = {
        "finding": trouble.code,
        "onset": trouble.onset,
        "critical_at": trouble.timestep,
        "findings": [(f.code, f.severity, f.timestep, f.onset) for f in diagnosis.findings],
        "checkpoint_step": plan.checkpoint[0] if plan.checkpoint else None,
        "reason": plan.reason,
    }
    print(f"story: {plan.reason}", flush=True)
    rec = recovered(base, args.kill_at)
    record["recovered_chain"] = [str(p) for p in resume_chain(rec) if p.resolve() != base.resolve()]
    record["recovered_findings"] = [(f.code, f.severity, f.timestep) for f in diagnose(rec).findings]
    record["evaluation"] = paired_evaluation(base, rec, trouble.onset, args.episodes, args.seed)
    (args.out / "story.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(base, rec, record, args.out / "story.png")
    ev = record["evaluation"]
    print(json.dumps(record, indent=2))
    print("| policy | mean team return over the same episodes | +- SEM |\n|---|---|---|")
    print(
        f"| baseline, best before the onset (step {ev['best_pre_onset']['step']:,}) | {ev['best_pre_onset']['mean']:.2f} | "
        f"{ev['best_pre_onset']['sem']:.2f} |"
    )
    print(f"| baseline, end | {ev['collapsed_end']['mean']:.2f} | {ev['collapsed_end']['sem']:.2f} |")
    print(f"| recovered, end | {ev['recovered_end']['mean']:.2f} | {ev['recovered_end']['sem']:.2f} |")


if __name__ == "__main__":
    main()
