"""
Tuner throughput: trials per minute with 1 and 2 workers, environment steps saved by pruning,
and the wall time of a 6-trial, 20k-step CartPole-v1 study.

rl-baselines3-zoo's PPO search space took 1,326 s for that 6-trial CartPole study on this kind
of machine (two trials with batch size 4-8 and 20 epochs took 809 s and 445 s); its best trial
scored 500. sb3-safe's space bounds the gradient work per environment step instead.

Scaling (the first section) runs the *same* configurations with 1 and 2 workers: they are drawn
once from the shipped space and enqueued in both studies, with no pruning, so both studies do the
same work and the ratio of trials per minute is the scaling alone. (Sampling each study on its
own compares different configurations: with 2 workers the samplers are seeded per process, and a
few long trials decide the figure.) It also says where each worker's time went: start-up before
its first trial, training, and idle time at the end.

Usage: ``python benchmarks/tune.py [--out DIR] [--scaling-only]`` (``make bench-tune``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from sb3_safe.config import load_config
from sb3_safe.tuning import ObjectiveSettings, TuneSettings, load_space, open_study, run_tuning
from sb3_safe.tuning.objective import TrialObjective

ZOO_SECONDS = 1326.0
SCALING_TRIALS = 16


def run(
    out: Path,
    name: str,
    trials: int,
    workers: int,
    timesteps: int,
    seeds: int,
    sampler: str,
    pruner: str = "median",
    enqueue: list[dict[str, Any]] | None = None,
) -> tuple[optuna.Study, float]:
    settings = TuneSettings(
        env_id="CartPole-v1",
        profile="safe",
        out=out / name,
        trials=trials,
        objective=ObjectiveSettings(timesteps=timesteps, seeds_per_trial=seeds, n_evaluations=4, eval_episodes=5),
        sampler=sampler,
        pruner=pruner,
        workers=workers,
        study_name=name,
        n_startup_trials=3,
    )
    if enqueue:
        settings.out.mkdir(parents=True, exist_ok=True)
        study = open_study(settings)
        for params in enqueue:
            study.enqueue_trial(params)
    start = time.perf_counter()
    study = run_tuning(settings)
    return study, time.perf_counter() - start


def valid_configurations(count: int, timesteps: int) -> list[dict[str, Any]]:
    """``count`` parameter sets of the shipped space that the objective accepts (drawn with a fixed seed)."""
    space = load_space()
    objective = TrialObjective(load_config("safe", "CartPole-v1"), space, ObjectiveSettings(timesteps=timesteps))
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    found: list[dict[str, Any]] = []
    while len(found) < count:
        trial = study.ask()
        try:
            objective.config_for(trial)
        except Exception:  # rejected before training (too many gradient steps, rollout too long)
            study.tell(trial, state=TrialState.PRUNED)
            continue
        found.append(dict(trial.params))
        study.tell(trial, 0.0)
    return found


def where_the_time_went(study: optuna.Study, seconds: float) -> str:
    """Per worker process: seconds before its first trial, training, and idle after its last one."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    begin = min(t.datetime_start for t in trials if t.datetime_start)
    parts = []
    for number, pid in enumerate(sorted({str(t.user_attrs.get("worker", "")) for t in trials})):
        own = [t for t in trials if str(t.user_attrs.get("worker", "")) == pid]
        first = min((t.datetime_start - begin).total_seconds() for t in own if t.datetime_start)
        busy = sum(t.duration.total_seconds() for t in own if t.duration)
        last = max((t.datetime_complete - begin).total_seconds() for t in own if t.datetime_complete)
        parts.append(
            f"worker {number + 1}: {len(own)} trials, first at {first:.1f} s, training {busy:.0f} s, "
            f"idle at the end {max(seconds - last, 0.0):.1f} s"
        )
    return "; ".join(parts)


def summary(study: optuna.Study, seconds: float, budget: int) -> str:
    trials = study.get_trials(deepcopy=False)
    rejected = [t for t in trials if t.user_attrs.get("invalid")]
    counted = [t for t in trials if not t.user_attrs.get("invalid")]
    pruned = [t for t in counted if t.state == TrialState.PRUNED]
    run_steps = sum(int(t.user_attrs.get("timesteps_run", 0)) for t in counted)
    # what the pruned trials would have run to completion, less what they ran before being stopped
    saved = sum(budget - int(t.user_attrs.get("timesteps_run", 0)) for t in pruned)
    durations = [t.duration.total_seconds() for t in counted if t.duration is not None]
    best = f"{study.best_value:.1f}" if any(t.state == TrialState.COMPLETE for t in counted) else "n/a"
    return (
        f"{len(counted)} trials ({len(pruned)} pruned while training; {len(rejected)} more configurations rejected before "
        f"training) in {seconds:.0f} s = {60 * len(counted) / seconds:.1f} trials/min; median trial "
        f"{statistics.median(durations):.0f} s, max {max(durations):.0f} s; steps run {run_steps:,}, saved by pruning "
        f"{saved:,} ({100 * saved / (budget * len(counted)):.0f}% of {budget * len(counted):,}); best value {best}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--out", type=Path, help="keep the studies here (default: a temporary folder)")
    parser.add_argument("--scaling-only", action="store_true", help="measure the 1- and 2-worker scaling only")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="sb3-safe-bench-tune-"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    configurations = valid_configurations(SCALING_TRIALS, 8_000)
    print(
        f"Scaling: CartPole-v1, the same {SCALING_TRIALS} configurations of the shipped space (enqueued) x 1 seed x "
        "8,000 steps, no pruning"
    )
    rates = {}
    for workers in (1, 2):
        study, seconds = run(
            out, f"scaling-w{workers}", SCALING_TRIALS, workers, 8_000, 1, "random", pruner="none", enqueue=configurations
        )
        rates[workers] = 60 * len(study.trials) / seconds
        print(f"  {workers} worker(s): {summary(study, seconds, 8_000)}", flush=True)
        print(f"    {where_the_time_went(study, seconds)}", flush=True)
    print(f"  2 workers / 1 worker: {rates[2] / rates[1]:.2f}x trials/min (goal: >= 1.7 on 2 cores)", flush=True)
    if args.scaling_only:
        return
    print("6-trial CartPole-v1 study, 20,000 steps per trial, 1 seed, TPE, 2 workers (as rl-zoo's 1,326 s measurement)")
    study, seconds = run(out, "cartpole-6x20k", trials=6, workers=2, timesteps=20_000, seeds=1, sampler="tpe")
    print(f"  {summary(study, seconds, 20_000)}")
    print(f"  wall time {seconds:.0f} s = {seconds / ZOO_SECONDS:.2f} of rl-zoo's {ZOO_SECONDS:.0f} s (goal: under 0.20)")
    final = study.best_trial.user_attrs.get("final_returns")
    print(f"  best trial #{study.best_trial.number}: final evaluation returns {final} (rl-zoo's best trial: 500)")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
