"""
``sb3-safe bench SUITE.yml``: several profiles, environments, seeds and fault injections, compared.

A suite file::

    name: quick
    seeds: [0, 1, 2]
    configs: {safe: safe, baseline: baseline, sb3-zoo: zoo-ppo}   # label: profile
    envs:
      Pendulum-v1: {timesteps: 30000, threshold: -400}
    stresses:                                                     # optional
      nan-reward: {fault: non_finite, at_step: 3000, target: reward, envs: [Pendulum-v1]}

Every (environment, stress, config, seed) is one run, trained with :func:`sb3_safe.training.train`
into ``<out>/runs/<env>[+stress]/<config>-s<seed>/``; runs go to ``--workers`` processes, and a
suite that is run again skips the runs that finished (``result.json`` present) with the block their profile
resolves to now. A finished run whose recorded block differs (the profile was edited since) is moved to
``<out>/superseded/`` and run again.

Definitions used in the table:

- **crash**: training raised (for example torch rejecting a NaN action distribution).
- **collapse**: the final evaluation return lost more than half of the best gain, i.e.
  ``best - final > 0.5 * (best - first)`` over the run's periodic evaluations
  (:func:`sb3_safe.health.evaluation_collapse`, which ``sb3-safe diagnose`` also applies); a crashed run counts
  as a crash, not a collapse.
- **IQM**: interquartile mean over seeds (the mean of the middle 50%, as rliable recommends),
  interpolated for fewer than 4 seeds as the mean of the values within the 25th-75th percentile range.
- **time to threshold**: wall-clock seconds until an evaluation first reached the environment's
  threshold, estimated from the run's steps per second.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import statistics
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sb3_safe.env_ids import is_multiagent
from sb3_safe.errors import ConfigError, RunFolderError, did_you_mean
from sb3_safe.faults import FAULTS, make_fault_wrapper
from sb3_safe.health import evaluation_collapse
from sb3_safe.runs import RunFolder, chain_evaluations, free_path, resume_chain, set_aside_interrupted

__all__ = ["Job", "RaySettings", "Suite", "iqm", "load_suite", "resume_chain", "run_suite"]


@dataclass(frozen=True)
class Job:
    env_id: str
    config: str
    profile: str
    seed: int
    timesteps: int
    stress: str | None = None
    fault: dict[str, Any] | None = None

    @property
    def env_label(self) -> str:
        return self.env_id if self.stress is None else f"{self.env_id}+{self.stress}"

    def run_dir(self, out: Path) -> Path:
        return out / "runs" / self.env_label / f"{self.config}-s{self.seed}"


@dataclass(frozen=True)
class Suite:
    name: str
    seeds: list[int]
    configs: dict[str, str]
    envs: dict[str, dict[str, Any]]
    stresses: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_evaluations: int = 10
    eval_episodes: int = 5

    def jobs(self) -> list[Job]:
        jobs = []
        for env_id, spec in self.envs.items():
            variants: list[tuple[str | None, dict[str, Any] | None]] = [(None, None)]
            variants += [
                (name, {k: v for k, v in stress.items() if k != "envs"})
                for name, stress in self.stresses.items()
                if env_id in stress.get("envs", list(self.envs))
            ]
            for stress_name, fault in variants:
                for config, profile in self.configs.items():
                    for seed in self.seeds:
                        jobs.append(Job(env_id, config, profile, seed, int(spec["timesteps"]), stress_name, fault))
        return jobs


def load_suite(path: Path) -> Suite:
    """Read and check a suite file."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"suite {str(path)!r} cannot be read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"suite {str(path)!r} is not valid YAML: {str(error).splitlines()[0]}") from None
    allowed = ("name", "seeds", "configs", "envs", "stresses", "n_evaluations", "eval_episodes")
    if not isinstance(data, Mapping):
        raise ConfigError(f"suite {str(path)!r} must be a mapping with keys {', '.join(allowed)}")
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{path}: unknown key `{key}`.{did_you_mean(str(key), allowed)} Allowed: {', '.join(allowed)}")
    for key in ("seeds", "configs", "envs"):
        if not data.get(key):
            raise ConfigError(f"{path}: `{key}` is missing or empty")
    envs = {}
    for env_id, spec in data["envs"].items():
        if not isinstance(spec, Mapping) or "timesteps" not in spec:
            raise ConfigError(
                f"{path} [envs.{env_id}]: give at least {{timesteps: N}} (and threshold: R for time to threshold)"
            )
        envs[str(env_id)] = dict(spec)
    stresses = dict(data.get("stresses") or {})
    for name, stress in stresses.items():
        if not isinstance(stress, Mapping) or stress.get("fault") not in FAULTS:
            fault = stress.get("fault") if isinstance(stress, Mapping) else stress
            raise ConfigError(
                f"{path} [stresses.{name}]: fault {fault!r} is not known.{did_you_mean(str(fault), FAULTS)} "
                f"Use one of {', '.join(FAULTS)}"
            )
    return Suite(
        name=str(data.get("name", path.stem)),
        seeds=[int(s) for s in data["seeds"]],
        configs={str(k): str(v) for k, v in data["configs"].items()},
        envs=envs,
        stresses=stresses,
        n_evaluations=int(data.get("n_evaluations", 10)),
        eval_episodes=int(data.get("eval_episodes", 5)),
    )


def _run_job(job: Job, out: Path, n_evaluations: int, eval_episodes: int, device: str = "cpu") -> dict[str, Any]:
    """One run, in a worker process (``device``: where it trains). Never raises: a crash is a result."""
    import torch as th

    from sb3_safe.config import load_config
    from sb3_safe.training import train

    th.set_num_threads(1)
    run_dir = job.run_dir(out)
    folder = RunFolder(run_dir)
    record: dict[str, Any] = {"env": job.env_label, "config": job.config, "seed": job.seed, "crashed": False, "error": ""}
    if folder.read_result() is not None:
        return record
    checkpoint = set_aside_interrupted(run_dir)
    if checkpoint is not None:
        record["resumed_from"] = str(checkpoint)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    wrapper = None
    if job.fault is not None:
        fault = dict(job.fault)
        wrapper = make_fault_wrapper(fault.pop("fault"), **fault)
    try:
        config = load_config(job.profile, job.env_id, {"n_timesteps": job.timesteps})
        result = train(
            config,
            seed=job.seed,
            run_dir=run_dir,
            eval_freq=max(job.timesteps // n_evaluations, 1),
            # a checkpoint with every evaluation (pruned by the profile's keep_checkpoints), so that
            # `sb3-safe recover` has one from before a collapse
            save_freq=max(job.timesteps // n_evaluations, 1),
            n_eval_episodes=eval_episodes,
            progress_bar=False,
            env_wrapper=wrapper,
            checkpoint=checkpoint,
            device=device,
            argv=["sb3-safe", "bench", job.env_label, job.config, str(job.seed)],
        )
        record["stopped_early"] = result.stopped_early
        record["device"] = str(result.model.device)
    except Exception as error:  # the point of the benchmark: record the crash, go on
        record.update(crashed=True, error=f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        run_dir.mkdir(parents=True, exist_ok=True)
        folder.crash_file.write_text(traceback.format_exc())
        folder.write_result({"crashed": True, "error": record["error"]})
    return record


def _stale(job: Job, out: Path) -> bool:
    """
    Whether a finished run was trained with another block than its profile resolves to now (``False`` when
    either cannot be read: a run that crashed before writing its config, a profile that no longer loads).
    """
    from sb3_safe.config import load_config

    folder = RunFolder(job.run_dir(out))
    if folder.read_result() is None or not folder.config_file.is_file():
        return False
    try:
        _, recorded, _ = folder.read_config()
        config = load_config(job.profile, job.env_id, {"n_timesteps": job.timesteps})
    except (RunFolderError, ConfigError):
        return False
    # the block as training writes it, through YAML (tuples become lists, as in the file)
    current = yaml.safe_load(yaml.safe_dump({**config.effective_values(), "n_timesteps": config.n_timesteps}))
    return bool(current != recorded)


def _job_entry(args: tuple[Job, Path, int, int]) -> dict[str, Any]:
    return _run_job(*args)


def iqm(values: list[float]) -> float:
    """Interquartile mean: the mean of the values between the 25th and 75th percentiles (inclusive)."""
    if not values:
        return float("nan")
    low, high = np.percentile(values, [25, 75])
    middle = [v for v in values if low <= v <= high]
    return float(np.mean(middle))


def _collect(job: Job, out: Path, threshold: float | None) -> dict[str, Any]:
    folder = RunFolder(job.run_dir(out))
    row: dict[str, Any] = {"env": job.env_label, "config": job.config, "seed": job.seed}
    result = folder.read_result() or {}
    row["crashed"] = bool(result.get("crashed", False)) or not result
    row["error"] = result.get("error", "" if result else "no result.json")
    steps, means = chain_evaluations(folder.path)  # a run continued after an interruption: all its parts
    row["final_return"] = result.get("eval_mean_return", float("nan"))
    row["best_return"] = max(means) if means else float("nan")
    row["first_return"] = means[0] if means else float("nan")
    final = row["final_return"]
    row["collapsed"] = not row["crashed"] and evaluation_collapse(steps, means, final, 0) is not None
    row["steps_per_s"] = result.get("steps_per_s", float("nan"))
    reached = next((s for s, m in zip(steps, means, strict=True) if threshold is not None and m >= threshold), None)
    speed = row["steps_per_s"]
    row["seconds_to_threshold"] = reached / speed if reached is not None and speed and math.isfinite(speed) else float("nan")
    events = folder.health_events()
    row["rollbacks"] = sum(event.get("event") == "rollback" for event in events)
    row["critical_findings"] = sum(event.get("event") == "finding" and event.get("severity") == "critical" for event in events)
    row["curve_steps"] = steps
    row["curve_means"] = means
    return row


@dataclass(frozen=True)
class RaySettings:
    """
    Where a suite's runs go on a Ray cluster (``--ray``).

    :param address: ``local`` (start Ray here), ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``
    :param shared_out: ``--out`` is on a filesystem every node sees: runs write there directly
    :param gpus: GPUs per run
    """

    address: str = "local"
    shared_out: bool = False
    gpus: float = 0.0


def run_suite(suite: Suite, out: Path, workers: int = 1, ray: RaySettings | None = None) -> list[dict[str, Any]]:
    """
    Run every job not yet finished (in ``workers`` local processes, or as Ray tasks), then collect all of them.

    :return: One row per run (see :func:`_collect`), with ``retried``: its Ray task ran more than once
    """
    if ray is not None:  # before anything is created: a missing Ray or an unreachable cluster is one line
        from sb3_safe.cluster import connect

        connect(ray.address)
    out.mkdir(parents=True, exist_ok=True)
    jobs = suite.jobs()
    for job in jobs:
        if _stale(job, out):
            moved = free_path(out / "superseded" / job.env_label / job.run_dir(out).name)
            moved.parent.mkdir(parents=True, exist_ok=True)
            job.run_dir(out).rename(moved)
            print(f"{job.run_dir(out)}: profile {job.profile!r} has changed since it ran; moved to {moved}", flush=True)
    todo = [job for job in jobs if RunFolder(job.run_dir(out)).read_result() is None]
    where = f"Ray at {ray.address}" if ray is not None else f"{workers} worker(s)"
    print(f"Suite {suite.name!r}: {len(jobs)} runs, {len(jobs) - len(todo)} already done, {where}", flush=True)
    records: list[dict[str, Any]] = []
    if ray is not None:
        from sb3_safe.cluster import run_jobs_on_ray

        records = run_jobs_on_ray(
            _run_job,
            todo,
            out,
            suite.n_evaluations,
            suite.eval_episodes,
            shared_out=ray.shared_out,
            gpus=ray.gpus,
            report=_report,
        )
    else:
        args = [(job, out, suite.n_evaluations, suite.eval_episodes) for job in todo]
        if workers <= 1:
            for i, arg in enumerate(args):
                _report(i, len(args), _job_entry(arg))
        else:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for i, record in enumerate(pool.imap_unordered(_job_entry, args)):
                    _report(i, len(args), record)
    by_run = {(r["env"], r["config"], r["seed"]): r for r in records}
    rows = [_collect(job, out, suite.envs[job.env_id].get("threshold")) for job in jobs]
    for row in rows:
        record = by_run.get((row["env"], row["config"], row["seed"]), {})
        row["retried"] = bool(record.get("retried"))
        row["device"] = record.get("device", "")
        if record.get("failed"):  # a Ray task that failed after its retries, or a run folder that could not land
            row.update(crashed=True, error=record["error"])
    return rows


def _report(index: int, total: int, record: dict[str, Any]) -> None:
    status = f"crashed ({record['error']})" if record["crashed"] else "done"
    print(f"[{index + 1}/{total}] {record['env']} {record['config']} seed {record['seed']}: {status}", flush=True)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:return: One row per (environment, config): crashes, collapses, returns over seeds, speed, rollbacks"""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["env"], row["config"]), []).append(row)
    table = []
    for (env, config), runs in groups.items():
        finals = [r["final_return"] for r in runs if not r["crashed"] and math.isfinite(r["final_return"])]
        bests = [r["best_return"] for r in runs if math.isfinite(r["best_return"])]
        times = [r["seconds_to_threshold"] for r in runs if math.isfinite(r["seconds_to_threshold"])]
        speeds = [
            r["steps_per_s"] for r in runs if isinstance(r["steps_per_s"], (int, float)) and math.isfinite(r["steps_per_s"])
        ]
        table.append(
            {
                "env": env,
                "config": config,
                "runs": len(runs),
                "crashes": sum(r["crashed"] for r in runs),
                "collapses": sum(r["collapsed"] for r in runs),
                "final_mean": statistics.fmean(finals) if finals else float("nan"),
                "final_std": statistics.pstdev(finals) if len(finals) > 1 else 0.0 if finals else float("nan"),
                "final_iqm": iqm(finals),
                "best_mean": statistics.fmean(bests) if bests else float("nan"),
                "reached_threshold": f"{len(times)}/{len(runs)}",
                "seconds_to_threshold": statistics.median(times) if times else float("nan"),
                "steps_per_s": statistics.fmean(speeds) if speeds else float("nan"),
                "rollbacks": sum(r["rollbacks"] for r in runs),
                "critical_findings": sum(r["critical_findings"] for r in runs),
            }
        )
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:,.1f}"
    return str(value)


def markdown_table(table: list[dict[str, Any]]) -> str:
    columns = [
        ("env", "environment"),
        ("config", "config"),
        ("crashes", "crashes"),
        ("collapses", "collapses"),
        ("final_mean", "final return (mean)"),
        ("final_std", "std"),
        ("final_iqm", "IQM"),
        ("best_mean", "best (mean)"),
        ("reached_threshold", "reached threshold"),
        ("seconds_to_threshold", "s to threshold (median)"),
        ("steps_per_s", "steps/s"),
        ("rollbacks", "rollbacks"),
        ("critical_findings", "critical findings"),
    ]
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row[key]) for key, _ in columns) + " |" for row in table]
    return "\n".join(lines) + "\n"


def write_outputs(rows: list[dict[str, Any]], out: Path, suite: Suite) -> list[Path]:
    """
    Write ``results.csv``, ``summary.csv``, ``summary.md`` (linking each run's ``report.html``) and one learning-curve
    PNG per environment.
    """
    plain = [{k: v for k, v in row.items() if not k.startswith("curve_")} for row in rows]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(plain[0]))
        writer.writeheader()
        writer.writerows(plain)
    table = summarize(rows)
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    reports = _write_reports(rows, out)
    (out / "summary.md").write_text(markdown_table(table) + _report_links(reports, out))
    return _plot_curves(rows, out)


def _write_reports(rows: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    """Each run's ``report.html`` (``sb3-safe report``), by run label; a run without a log has none."""
    from sb3_safe.report import write_report

    reports = {}
    for row in rows:
        run = out / "runs" / str(row["env"]) / f"{row['config']}-s{row['seed']}"
        try:
            reports[f"{row['env']} {row['config']} seed {row['seed']}"] = write_report(run)
        except (RunFolderError, ConfigError):
            continue  # crashed before its first update: nothing to draw
    return reports


def _report_links(reports: dict[str, Path], out: Path) -> str:
    if not reports:
        return ""
    links = "\n".join(f"- [{label}]({path.relative_to(out)})" for label, path in reports.items())
    return f"\n\nEach run's health report (`sb3-safe report`):\n\n{links}\n"


def _plot_curves(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    from sb3_safe.plots import pyplot

    plt = pyplot()
    paths = []
    for env in dict.fromkeys(row["env"] for row in rows):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for config in dict.fromkeys(row["config"] for row in rows):
            curves = [r for r in rows if r["env"] == env and r["config"] == config and r["curve_means"] and not r["crashed"]]
            if not curves:
                continue
            length = min(len(r["curve_means"]) for r in curves)
            steps = curves[0]["curve_steps"][:length]
            values = np.array([r["curve_means"][:length] for r in curves])
            mean = values.mean(axis=0)
            line = ax.plot(steps, mean, label=f"{config} ({len(curves)} seeds)")[0]
            ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)
        multiagent = is_multiagent(env.split("+")[0])
        ax.set_title(f"{env}: evaluation return\n(mean over seeds, band: min-max; crashed runs left out)", fontsize=10)
        ax.set_xlabel("agent steps (every agent's step counts)" if multiagent else "environment steps")
        ax.set_ylabel("mean evaluation return (team return)" if multiagent else "mean evaluation return")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / f"curves-{env.replace('+', '_')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
