"""What a study leaves in ``--out``: the best trial as a profile, ``trials.csv``, and PNG plots."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from sb3_safe.config import load_config
from sb3_safe.plots import pyplot
from sb3_safe.tuning.objective import curve_key
from sb3_safe.tuning.space import SearchSpace
from sb3_safe.tuning.study import TuneSettings, storage_url

__all__ = ["best_profile", "write_report"]


def best_profile(study: optuna.Study, settings: TuneSettings, space: SearchSpace) -> dict[str, Any]:
    """
    :return: ``{env_id: block}``: the base profile block with the best trial's values, loadable
        by ``sb3-safe train --profile PATH`` unchanged
    """
    base = load_config(settings.profile, settings.env_id, settings.overrides)
    tuned = base.with_overrides(space.overrides_of(study.best_trial.params))
    return {settings.env_id: {**tuned.values, "n_timesteps": base.n_timesteps}}


def _write_trials_csv(study: optuna.Study, path: Path) -> None:
    # score_clean, score_<stress>: each condition's score when the study trains under stresses
    trials = study.get_trials(deepcopy=False)
    params = sorted({name for trial in trials for name in trial.params})
    scores = sorted({name for trial in trials for name in trial.user_attrs if name.startswith("score_")})
    attrs = ["pruned_reason", "seconds", "final_returns", *scores]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", "value", "duration_s", *params, *attrs])
        for trial in trials:
            duration = trial.duration.total_seconds() if trial.duration is not None else ""
            writer.writerow(
                [trial.number, trial.state.name, "" if trial.value is None else trial.value, duration]
                + [trial.params.get(name, "") for name in params]
                + [trial.user_attrs.get(name, "") for name in attrs]
            )


def _plot_history(study: optuna.Study, path: Path) -> None:
    plt = pyplot()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE and t.value is not None]
    pruned = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.PRUNED]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if complete:
        ax.scatter([t.number for t in complete], [t.value for t in complete], label="complete", color="tab:blue", zorder=3)
        best, xs, ys = -math.inf, [], []
        for trial in sorted(complete, key=lambda t: t.number):
            best = max(best, float(trial.value))  # type: ignore[arg-type]
            xs.append(trial.number)
            ys.append(best)
        ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    for trial in pruned:
        ax.axvline(trial.number, color="tab:gray", alpha=0.25, lw=3)
    if pruned:
        ax.plot([], [], color="tab:gray", alpha=0.4, lw=3, label="pruned")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective (mean - std of final returns)")
    ax.set_title(f"{study.study_name}: optimization history")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_importances(study: optuna.Study, path: Path) -> str | None:
    try:
        importances = optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError) as error:
        return f"parameter importances not drawn: {error}"
    plt = pyplot()
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * len(names) + 1)))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (PED-ANOVA, normalized)")
    ax.set_title(f"{study.study_name}: parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _plot_best_curve(trial: FrozenTrial, settings: TuneSettings, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    every = settings.objective.timesteps / settings.objective.n_evaluations
    for position, stress in enumerate(settings.objective.conditions):
        for index in range(settings.objective.seeds_per_trial):
            curve = trial.user_attrs.get(curve_key(stress, index), [])
            label = f"seed {settings.objective.seed + index}" + ("" if stress is None else f", {stress}")
            ax.plot(
                [every * (k + 1) for k in range(len(curve))],
                curve,
                marker="o",
                linestyle="-" if stress is None else "--",
                color=f"C{position}",
                alpha=1.0 if index == 0 else 0.6,
                label=label,
            )
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean evaluation return")
    ax.set_title(f"best trial #{trial.number}: value {trial.value:.4g}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(study: optuna.Study, settings: TuneSettings, space: SearchSpace) -> list[str]:
    """
    Write ``best.yml``, ``trials.csv``, ``history.png``, ``importances.png`` and ``best_curve.png``.

    :return: Lines to print: the best trial, where things are, the dashboard command
    """
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    _write_trials_csv(study, out / "trials.csv")
    counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines = [f"Study {study.study_name!r}: {summary}."]
    try:
        pyplot()
    except Exception as error:  # matplotlib missing: still write the profile and the CSV
        lines.append(str(error))
        plots = False
    else:
        plots = True
        _plot_history(study, out / "history.png")
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        lines.append("No trial completed: no best profile. See trials.csv (pruned_reason) for why.")
        return lines
    best = study.best_trial
    profile = best_profile(study, settings, space)
    header = (
        f"# Best trial #{best.number} of study {study.study_name!r} (value {best.value:.6g}).\n"
        f"# Train with: sb3-safe train --env {settings.env_id} --profile {out / 'best.yml'}\n"
    )
    (out / "best.yml").write_text(header + yaml.safe_dump(profile, sort_keys=False, default_flow_style=None))
    if plots:
        note = _plot_importances(study, out / "importances.png")
        if note:
            lines.append(note)
        _plot_best_curve(best, settings, out / "best_curve.png")
    finals = best.user_attrs.get("final_returns")
    if settings.objective.stresses:
        conditions = ", ".join(
            f"{name} {best.user_attrs[f'score_{name}']:.4g}"
            for name in ("clean", *settings.objective.stresses)
            if f"score_{name}" in best.user_attrs
        )
        lines.append(
            f"Best trial #{best.number}: value {best.value:.4g}, the {settings.objective.stress_score} of {conditions}"
        )
    else:
        lines.append(f"Best trial #{best.number}: value {best.value:.4g} (mean - std of the final returns {finals})")
    lines.extend(f"  {name}: {value}" for name, value in space.overrides_of(best.params).items())
    lines.append(f"Best profile: {out / 'best.yml'}; trials: {out / 'trials.csv'}; plots: {out}/*.png")
    url = storage_url(settings)
    if "://" in url:
        lines.append(f"Dashboard: optuna-dashboard {url}")
    return lines
