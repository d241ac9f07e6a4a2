"""
``make bench-vmas``: does the safe profile learn VMAS tasks as well as BenchMARL's MAPPO, at 500 copies?

For each task (``balance``, ``navigation``, ``transport``: the profiles' blocks, which set the task's options) and
seed, at equal agent-step budgets:

- ``safe`` and ``baseline``: ``sb3-safe train`` with the profile, evaluations of ``--episodes`` deterministic
  episodes ``--evaluations`` times per run (team returns, divided by the number of agents here);
- ``benchmarl``: BenchMARL's MAPPO at sb3-safe's update shape with its fine-tuned VMAS rates, in the peer's
  virtual environment (``benchmarks/peer_benchmarl_learn.py``, recipe ``matched``);
- ``benchmarl-tuned``: BenchMARL's own fine-tuned VMAS configuration (recipe ``tuned``), for the seeds and tasks
  given by ``--tuned`` (about an hour per 10M agent steps on this machine's cores).

Each run is one process with one torch thread; ``--workers`` run side by side. A finished run is kept and not run
again; an interrupted sb3-safe run goes on from its newest checkpoint. Then, per task and method: the final
per-agent return's IQM over seeds with a 95% stratified-bootstrap interval (rliable), learning curves against agent
steps and against wall-clock seconds (mean over seeds, min-max band) with the random policy's and VMAS's heuristic
policy's levels as lines, and the seconds each run needed to reach the best peer's final IQM.

Writes ``OUT/vmas.json``, ``OUT/vmas.md`` and ``OUT/vmas-<task>.png`` and prints the table.

Usage: ``python benchmarks/learning_vmas.py --peer-python PEER_VENV/bin/python [--tasks balance navigation transport]
[--seeds 0 1 2] [--agent-steps 10000000] [--tuned balance:0 balance:1 navigation:0 transport:0]
[--workers 2] [--out bench-results/vmas]``
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sb3_safe.config import load_config
from sb3_safe.runs import RunFolder, chain_evaluations, resume_chain, set_aside_interrupted

SB3_SAFE = str(Path(sys.executable).with_name("sb3-safe"))
PEER_SCRIPT = Path(__file__).resolve().parent / "peer_benchmarl_learn.py"
TASKS = ("balance", "navigation", "transport")
METHODS = ("safe", "baseline", "benchmarl", "benchmarl-tuned")
LABELS = {
    "safe": "sb3-safe, safe",
    "baseline": "sb3-safe, baseline",
    "benchmarl": "BenchMARL MAPPO, sb3-safe's shape",
    "benchmarl-tuned": "BenchMARL MAPPO, its tuned recipe",
}


@dataclass(frozen=True)
class Run:
    """One learning run: a task, a method (a profile or a peer recipe) and a seed."""

    task: str
    method: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.task}/{self.method}-s{self.seed}"


def task_settings(task: str) -> dict[str, Any]:
    """The safe profile's block for ``vmas:<task>``: the task's options and the update's shape."""
    values = load_config("safe", f"vmas:{task}", {}).effective_values()
    return {"env_kwargs": dict(values["env_kwargs"]), "n_envs": values["n_envs"], "n_steps": values["n_steps"]}


def _train_command(run: Run, folder: Path, agent_steps: int, evaluations: int, episodes: int) -> list[str]:
    every = agent_steps // evaluations
    args = [SB3_SAFE, "train", "--env", f"vmas:{run.task}", "--profile", run.method, "--seed", str(run.seed)]
    args += ["--timesteps", str(agent_steps), "--eval-freq", str(every), "--save-freq", str(2 * every)]
    args += ["--eval-episodes", str(episodes), "--threads", "1", "--run-dir", str(folder)]
    checkpoint = set_aside_interrupted(folder)
    return args + ([] if checkpoint is None else ["--checkpoint", str(checkpoint)])


def _peer_command(run: Run, out: Path, peer_python: Path, agent_steps: int, evaluations: int, episodes: int) -> list[str]:
    settings = task_settings(run.task)
    recipe = "tuned" if run.method == "benchmarl-tuned" else "matched"
    args = [str(peer_python), str(PEER_SCRIPT), "--task", run.task, "--task-kwargs", json.dumps(settings["env_kwargs"])]
    args += ["--recipe", recipe, "--copies", str(settings["n_envs"]), "--steps", str(settings["n_steps"])]
    args += ["--seed", str(run.seed), "--agent-steps", str(agent_steps), "--evaluations", str(evaluations)]
    return [*args, "--episodes", str(episodes), "--out", str(out)]


def _is_peer(run: Run) -> bool:
    return run.method.startswith("benchmarl")


def _result_path(out: Path, run: Run) -> Path:
    return out / (run.name + (".json" if _is_peer(run) else ""))


def _finished(out: Path, run: Run) -> bool:
    path = _result_path(out, run)
    return path.is_file() if _is_peer(run) else RunFolder(path).read_result() is not None


def execute(runs: list[Run], out: Path, options: argparse.Namespace) -> None:
    """Run every unfinished run, ``options.workers`` at a time; a failed run is reported and left unfinished."""
    todo = [run for run in runs if not _finished(out, run)]

    def one(run: Run) -> None:
        path = _result_path(out, run)
        path.parent.mkdir(parents=True, exist_ok=True)
        if _is_peer(run):
            command = _peer_command(run, path, options.peer_python, options.agent_steps, options.evaluations, options.episodes)
        else:
            command = _train_command(run, path, options.agent_steps, options.evaluations, options.episodes)
        log = out / (run.name + ".log")
        with log.open("a") as stream:
            code = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT).returncode
        print(f"{run.name}: {'done' if code == 0 else f'failed (exit {code}), see {log}'}", flush=True)

    print(f"{len(runs) - len(todo)} of {len(runs)} runs already finished; running {len(todo)}", flush=True)
    with ThreadPoolExecutor(max_workers=options.workers) as pool:
        list(pool.map(one, todo))


def curve_of(out: Path, run: Run) -> dict[str, np.ndarray] | None:
    """The run's evaluations: agent steps, wall-clock seconds and per-agent returns (evaluations x episodes)."""
    path = _result_path(out, run)
    if not _finished(out, run):
        return None
    if _is_peer(run):
        rows = json.loads(path.read_text())["evaluations"]
        return {
            "steps": np.array([row["agent_steps"] for row in rows], dtype=float),
            "seconds": np.array([row["seconds"] for row in rows]),
            "returns": np.array([row["returns"] for row in rows]),
        }
    return _sb3_safe_curve(path)


def _sb3_safe_curve(folder: Path) -> dict[str, np.ndarray]:
    n_agents = int(RunFolder(folder).read_config()[1]["env_kwargs"]["n_agents"])
    steps: list[float] = []
    seconds: list[float] = []
    for part in resume_chain(folder):
        offset = seconds[-1] if seconds else 0.0  # a continued part's clock starts again: add the parts' times
        with (part / "progress.csv").open(newline="") as stream:
            for row in csv.DictReader(stream):
                if row.get("time/total_timesteps") and row.get("time/time_elapsed"):
                    steps.append(float(row["time/total_timesteps"]))
                    seconds.append(float(row["time/time_elapsed"]) + offset)
    eval_steps, eval_means = chain_evaluations(folder)
    return {
        "steps": np.array(eval_steps, dtype=float),
        "seconds": np.interp(eval_steps, steps, seconds),
        "returns": np.array(eval_means)[:, None] / n_agents,  # evaluations x 1: the mean over the episodes
    }


def _toward(offset: Any) -> Any:
    """Full force along ``offset`` (rows of 2-D vectors), zero where it is zero."""
    return offset / (offset.norm(dim=-1, keepdim=True) + 1e-6)


# Two hand-written transport policies that show where exploration gets stuck. A transport agent observes its
# position, its velocity, the package minus the goal, the package minus itself, the package's velocity and whether
# it is on the goal. "to the package": every agent heads straight for the package, which is what undirected
# exploration does whenever it reaches it; "from the far side": only agents that have the package between
# themselves and the goal head for it, the first half of the heuristic's skill (it first walks round).
SCRIPTED: dict[str, dict[str, Callable[[Any], Any]]] = {
    "transport": {
        "to the package": lambda obs: _toward(obs[:, 6:8]),
        "from the far side": lambda obs: _toward(obs[:, 6:8]) * ((obs[:, 6:8] * -obs[:, 4:6]).sum(-1, keepdim=True) > 0),
    }
}


def _scripted_action(scripted: Callable[[Any], Any], _env: Any, agent: Any, obs: Any) -> Any:
    return scripted(obs) * agent.u_range


def reference_levels(task: str, episodes: int = 200, env_kwargs: dict[str, Any] | None = None) -> dict[str, float]:
    """
    Mean per-agent returns of the random policy, VMAS's heuristic policy and the task's ``SCRIPTED`` policies
    (seed 0).

    :param task: The VMAS scenario, with the options of its profile block
    :param episodes: Episodes per policy (copies stepped together)
    :param env_kwargs: Scenario options that replace the block's (``{"max_steps": 500}``: another horizon)
    """
    import importlib

    import torch
    import vmas

    options = task_settings(task)["env_kwargs"] | (env_kwargs or {})
    levels = {}
    heuristic = getattr(importlib.import_module(f"vmas.scenarios.{task}"), "HeuristicPolicy", None)
    policies: dict[str, Callable[[Any, Any, Any], Any]] = {
        "random": lambda env, agent, _obs: torch.rand(env.num_envs, agent.action_size) * 2 * agent.u_range - agent.u_range
    }
    if heuristic is not None and task != "navigation":  # navigation's heuristic needs cvxpy, not a dependency here
        policy = heuristic(continuous_action=True)
        policies["heuristic"] = lambda _env, agent, obs: policy.compute_action(obs, u_range=agent.u_range)
    for name, scripted in SCRIPTED.get(task, {}).items():
        policies[name] = functools.partial(_scripted_action, scripted)
    for name, act in policies.items():
        torch.manual_seed(0)
        env = vmas.make_env(task, num_envs=episodes, device="cpu", continuous_actions=True, seed=0, **options)
        observations = env.reset()
        total = torch.zeros(episodes)
        ended = torch.zeros(episodes, dtype=torch.bool)
        for _ in range(int(options["max_steps"])):
            actions = [act(env, agent, obs) for agent, obs in zip(env.agents, observations, strict=True)]
            observations, rewards, dones, _ = env.step(actions)
            total += torch.stack([r.reshape(-1) for r in rewards], 1).mean(1) * ~ended  # wheel's are (n, 1)
            ended |= dones
        levels[name] = float(total.mean())
    return levels


def iqm_interval(finals: dict[str, np.ndarray], reps: int = 2000) -> dict[str, tuple[float, float, float]]:
    """IQM of each method's final per-agent returns over seeds, with rliable's 95% stratified bootstrap interval."""
    from rliable import library, metrics

    scores = {method: values.reshape(-1, 1) for method, values in finals.items() if len(values)}
    points, intervals = library.get_interval_estimates(
        scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps, confidence_interval_size=0.95
    )
    return {m: (float(points[m][0]), float(intervals[m][0, 0]), float(intervals[m][1, 0])) for m in scores}


def seconds_to_reach(curve: dict[str, np.ndarray], level: float) -> float:
    """Wall-clock seconds until an evaluation's mean per-agent return first reached ``level`` (nan: never)."""
    means = curve["returns"].mean(axis=1)
    reached = np.nonzero(means >= level)[0]
    return float(curve["seconds"][reached[0]]) if len(reached) else float("nan")


def analyse(runs: list[Run], out: Path) -> dict[str, Any]:
    """Per task and method: final IQM with its interval, time to the best peer's final IQM, and the curves."""
    summary: dict[str, Any] = {}
    for task in sorted({run.task for run in runs}, key=TASKS.index):
        curves = {
            method: [c for run in runs if run.task == task and run.method == method if (c := curve_of(out, run))]
            for method in METHODS
        }
        curves = {method: found for method, found in curves.items() if found}
        finals = {method: np.array([c["returns"][-1].mean() for c in found]) for method, found in curves.items()}
        estimates = iqm_interval(finals)
        peers = [estimates[m][0] for m in estimates if m.startswith("benchmarl")]
        peer_level = max(peers) if peers else float("nan")
        peer_runs = [c for method, found in curves.items() if method.startswith("benchmarl") for c in found]
        peer_seconds = max((c["seconds"][-1] for c in peer_runs), default=float("nan"))
        summary[task] = {
            "levels": reference_levels(task),
            "peer_final_iqm": peer_level,
            "methods": {
                method: {
                    "seeds": len(found),
                    "final_iqm": estimates[method][0],
                    "ci95": estimates[method][1:],
                    "finals": finals[method].tolist(),
                    "agent_steps": float(found[0]["steps"][-1]),
                    "seconds": float(np.median([c["seconds"][-1] for c in found])),
                    "seconds_to_peer_final": [seconds_to_reach(c, peer_level) for c in found],
                }
                for method, found in curves.items()
            },
            "peer_seconds": peer_seconds,
        }
        _plot(task, curves, summary[task]["levels"], out / f"vmas-{task}.png")
    return summary


def _plot(task: str, curves: dict[str, list[dict[str, np.ndarray]]], levels: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for method, found in curves.items():
        length = min(len(c["steps"]) for c in found)
        means = np.array([c["returns"][:length].mean(axis=1) for c in found])
        label = f"{LABELS[method]} ({len(found)} seed{'s' if len(found) > 1 else ''})"
        for axis, key in zip(axes, ("steps", "seconds"), strict=True):
            x = np.mean([c[key][:length] for c in found], axis=0)
            (line,) = axis.plot(x, means.mean(axis=0), label=label)
            axis.fill_between(x, means.min(axis=0), means.max(axis=0), color=line.get_color(), alpha=0.2)
    for axis in axes:
        for name, level in levels.items():
            axis.axhline(level, color="grey", linestyle=":" if name == "random" else "--", linewidth=1)
            axis.annotate(f"{name} policy", (0, level), xycoords=("axes fraction", "data"), fontsize=8, va="bottom")
        axis.grid(alpha=0.3)
    axes[0].xaxis.set_major_formatter(EngFormatter())
    axes[0].set_xlabel("agent steps")
    axes[1].set_xlabel("wall-clock seconds (one core per run)")
    axes[0].set_ylabel("evaluation return per agent")
    axes[0].set_title(f"vmas:{task}: deterministic evaluations, mean over seeds (band: min-max)", loc="left", fontsize=10)
    axes[1].legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| task | method | seeds | final return per agent, IQM [95% CI] | s to best peer's final (median) | s per run |",
        "|---|---|---|---|---|---|",
    ]
    for task, entry in summary.items():
        for method, row in entry["methods"].items():
            times = [t for t in row["seconds_to_peer_final"] if np.isfinite(t)]
            reached = f"{np.median(times):,.0f} ({len(times)}/{row['seeds']} reached)" if times else "not reached"
            low, high = row["ci95"]
            lines.append(
                f"| {task} | {LABELS[method]} | {row['seeds']} | {row['final_iqm']:.1f} [{low:.1f}, {high:.1f}] | {reached} "
                f"| {row['seconds']:,.0f} |"
            )
        levels = ", ".join(f"{name} {value:.1f}" for name, value in entry["levels"].items())
        lines.append(f"| {task} | *reference: {levels}* | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--peer-python", type=Path, required=True, help="the peer's virtual environment's python")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=METHODS[:3], default=list(METHODS[:3]))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--tuned",
        nargs="*",
        default=["balance:0", "balance:1", "navigation:0", "transport:0"],
        help="TASK:SEED runs of the peer's tuned recipe",
    )
    parser.add_argument("--agent-steps", type=int, default=10_000_000)
    parser.add_argument("--evaluations", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--analyse-only", action="store_true", help="summarize the finished runs; run nothing")
    parser.add_argument("--out", type=Path, default=Path("bench-results/vmas"))
    options = parser.parse_args()
    # the peer's tuned runs first (the longest: started last, they would hold the bench up alone), then seed by
    # seed, so that a bench stopped midway has every task at its first seeds
    tuned = [item.partition(":") for item in options.tuned]
    runs = [Run(task, "benchmarl-tuned", int(seed or 0)) for task, _, seed in tuned if task in options.tasks]
    runs += [Run(task, method, seed) for seed in options.seeds for task in options.tasks for method in options.methods]
    options.out.mkdir(parents=True, exist_ok=True)
    if not options.analyse_only:
        execute(runs, options.out, options)
    summary = analyse(runs, options.out)
    (options.out / "vmas.json").write_text(json.dumps(summary, indent=1))
    table = markdown(summary)
    (options.out / "vmas.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
