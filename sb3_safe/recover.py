"""
``sb3-safe recover``: continue a run that went wrong, under the safe profile, from before the trouble began.

1. :func:`find_trouble` reads the run: the detectors replayed over its ``progress.csv``
   (:func:`sb3_safe.diagnose.diagnose`, with the run's own thresholds), the rollbacks and stops of
   its ``health.jsonl``, and whether it finished. The trouble is the first critical finding no
   rollback dealt with (or the end of a run that never finished); its *onset* is where the
   detector saw it begin (the last update at which the value loss stood at its level, the best
   return before a collapse, or the best periodic evaluation before that when the greedy policy was
   measurably better there than at any evaluation since), not where it became critical.
2. :func:`choose_checkpoint` picks the newest retained checkpoint at or before the onset.
3. :func:`recover` resumes it under the profile (:mod:`sb3_safe.resume` applies every
   difference) to the run's original budget, in a new run folder beside the old one whose
   ``config.yml`` records the chain: parent run, checkpoint, trouble, onset, changes.

Plain SB3 and rl-zoo run folders work too (``progress.csv``, checkpoints named
``*_<N>_steps.zip``, VecNormalize statistics beside them); they need ``--env`` and
``--timesteps``, which an sb3-safe run folder records itself.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sb3_safe.checkpoints import monitor_state_path_for, stats_path_for
from sb3_safe.config import load_config
from sb3_safe.diagnose import diagnose
from sb3_safe.errors import ConfigError, RunFolderError
from sb3_safe.health import Finding, Thresholds, evaluation_noise_floor, evaluation_peak_before
from sb3_safe.runs import RunFolder, atomic_write, free_path, list_checkpoints
from sb3_safe.training import TrainResult, TrainSettings, train

__all__ = [
    "RecoverSettings",
    "Recovery",
    "Trouble",
    "choose_checkpoint",
    "find_checkpoints",
    "find_trouble",
    "keep_better",
    "plan_recovery",
    "recover",
    "run_recovery",
    "run_thresholds",
]

_ANY_CHECKPOINT = re.compile(r".*_(\d+)_steps\.zip")
# Profile keys that shape the network and the environment it acts in: a recovered run keeps its parent's
# (a checkpoint of 2 agents with 20-dimensional observations cannot act in the profile's 4-agent scenario).
_NETWORK_KEYS = (
    "policy",
    "policy_kwargs",
    "use_sde",
    "env_kwargs",
    "env_wrapper",
    "frame_stack",
    "centralized_critic",
    "agent_id",
)


@dataclass(frozen=True)
class Trouble:
    """What ended or spoiled a run."""

    code: str
    #: Step at which it was seen (critical)
    timestep: int
    #: Step at which it began
    onset: int
    message: str

    def describe(self) -> str:
        began = f"began at step {self.onset:,}" + (f" (critical at {self.timestep:,})" if self.timestep != self.onset else "")
        return f"{self.code} {began} ({self.message.rstrip('.')})"


def run_thresholds(folder: RunFolder) -> Thresholds | None:
    """The run's own health thresholds, from its ``config.yml`` (``None``: the defaults)."""
    try:
        _, block, _ = folder.read_config()
    except RunFolderError:
        return None
    health = block.get("health")
    if not isinstance(health, Mapping):
        return None
    names = set(Thresholds.names())
    return Thresholds(**{key: value for key, value in health.items() if key in names})


def find_trouble(run: Path) -> Trouble | None:
    """
    :param run: A run folder (sb3-safe's, or one with SB3's ``progress.csv``)
    :return: The first trouble no rollback dealt with, or ``None`` for a healthy, finished run
    """
    folder = RunFolder(run)
    diagnosis = diagnose(run, run_thresholds(folder))
    if diagnosis.unhandled:
        trouble = _trouble(diagnosis.unhandled[0])
        return _evaluated_onset(trouble, folder) if trouble.code == "reward_collapse" else trouble
    last_step = int(diagnosis.history[-1].get("timesteps", 0)) if diagnosis.history else 0
    result = folder.read_result()
    if folder.config_file.is_file() and result is None:
        return _stopped("unfinished", "the run stopped without a result (crashed or killed)", last_step, diagnosis.findings)
    if (result or {}).get("crashed"):
        return _stopped("crash", str((result or {}).get("error", "training raised")), last_step, diagnosis.findings)
    warnings = [f for f in diagnosis.findings if f.severity == "warning"]
    if warnings:  # nothing critical: the first warning is the first sign of the trouble
        first = min(warnings, key=lambda f: (f.onset if f.onset is not None else f.timestep, f.timestep))
        trouble = _trouble(first)
        return replace(trouble, message=f"a warning, nothing critical: {trouble.message}")
    return None


def _stopped(code: str, what: str, last_step: int, findings: Sequence[Finding]) -> Trouble:
    """
    A run that ended early without a critical finding (stopped by hand as its value loss rose, killed,
    crashed): the trouble began at the onset of its latest warning, if it had one, else at its last update.
    """
    if findings:
        latest = findings[-1]
        onset = latest.onset if latest.onset is not None else latest.timestep
        return Trouble(code, last_step, onset, f"{what}; its latest warning, {latest.code}, began at step {onset:,}.")
    return Trouble(code, last_step, last_step, f"{what}; no warning before it, its last logged update is this step.")


def _trouble(finding: Finding) -> Trouble:
    onset = finding.onset if finding.onset is not None else finding.timestep
    return Trouble(finding.code, finding.timestep, onset, finding.message)


def _evaluated_onset(trouble: Trouble, folder: RunFolder) -> Trouble:
    """
    A collapse of the training return, moved back to the best periodic evaluation when the greedy
    policy was measurably better there than at any evaluation since the training return's peak
    (:func:`~sb3_safe.health.evaluation_peak_before`): resuming after the greedy policy began to fall
    resumes a policy already on its way down.
    """
    steps, means = folder.evaluations()
    noise = evaluation_noise_floor(folder.evaluation_noise())
    peak = evaluation_peak_before(steps, means, trouble.onset, trouble.timestep, noise)
    if peak is None:
        return trouble
    note = (
        f" The periodic evaluations peaked earlier, at step {peak:,}, beyond their noise above every evaluation "
        f"since step {trouble.onset:,}: the trouble began there."
    )
    return Trouble(trouble.code, trouble.timestep, peak, trouble.message.rstrip() + note)


def find_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """
    :return: ``(steps, model path)`` of the run's checkpoints, oldest first: sb3-safe's
        ``checkpoints/model_<N>_steps.zip``, or any ``*_<N>_steps.zip`` under a plain SB3 / rl-zoo run
    """
    return list_checkpoints(RunFolder(run).checkpoints_dir) or list_checkpoints(run, "**/*_steps.zip", _ANY_CHECKPOINT)


def _with_best_model(checkpoints: list[tuple[int, Path]], folder: RunFolder) -> list[tuple[int, Path]]:
    """
    The run's checkpoints and its ``best_model.zip``, the state at its best periodic evaluation (the evaluation
    callback saves it at the first evaluation with the highest mean, with ``best_vecnormalize.pkl``). A collapse's
    onset is often that evaluation, and checkpoint retention may have dropped the checkpoint taken there.
    """
    steps, means = folder.evaluations()
    finite = [i for i, mean in enumerate(means) if math.isfinite(mean)]
    if not finite or not folder.best_model.is_file():
        return checkpoints
    best_step = steps[max(finite, key=lambda i: (means[i], -i))]
    if any(step == best_step for step, _ in checkpoints):
        return checkpoints
    return sorted([*checkpoints, (best_step, folder.best_model)])


def choose_checkpoint(checkpoints: Sequence[tuple[int, Path]], before: int) -> tuple[int, Path] | None:
    """:return: The newest checkpoint at or before step ``before``, or ``None``"""
    earlier = [(steps, path) for steps, path in checkpoints if steps <= before]
    return earlier[-1] if earlier else None


@dataclass(frozen=True)
class RecoverSettings:
    """
    How :func:`recover` continues a run.

    :param profile: The profile to continue with
    :param env_id: The environment (default: the run's, from its ``config.yml``)
    :param timesteps: The budget in total steps (default: the run's ``n_timesteps``)
    :param overrides: Profile keys set on the command line
    :param from_step: Continue from the newest checkpoint at or before this step, trouble or not
    :param seed: Seed (default: the run's)
    :param argv: The command line, for ``command.txt``
    :param progress_bar: See :func:`sb3_safe.training.train`
    :param eval_freq: Evaluate every this many steps (default: :func:`~sb3_safe.training.train`'s)
    :param save_freq: Checkpoint every this many steps (default: :func:`~sb3_safe.training.train`'s)
    :param n_eval_episodes: Episodes per periodic evaluation
    :param compare_episodes: Episodes on which the recovered policy and the checkpoint it started from are
        evaluated after training, the same episodes for both (0: no comparison); the better one ends as ``model.zip``
    """

    profile: str = "safe"
    env_id: str | None = None
    timesteps: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    from_step: int | None = None
    seed: int | None = None
    argv: Sequence[str] = ()
    progress_bar: bool | None = None
    eval_freq: int | None = None
    save_freq: int | None = None
    n_eval_episodes: int = 5
    compare_episodes: int = 20


@dataclass
class Recovery:
    """What :func:`plan_recovery` decided, and the run :func:`run_recovery` trained (``None`` until then)."""

    trouble: Trouble | None
    checkpoint: tuple[int, Path] | None
    reason: str
    result: TrainResult | None = None
    #: The run folder that went wrong
    run: Path | None = None
    #: Its environment, budget, seed and profile block (what the new run takes over)
    env_id: str | None = None
    budget: int = 0
    seed: int = 0
    block: Mapping[str, Any] = field(default_factory=dict)

    @property
    def needed(self) -> bool:
        """Whether there is a run to train (trouble was found, or a step was asked for)."""
        return self.run is not None


def plan_recovery(run: Path, settings: RecoverSettings | None = None) -> Recovery:
    """
    Find the trouble of a run and pick the checkpoint before it; train nothing (``--dry-run`` prints this).

    :param run: The run folder
    :param settings: How to continue (default: :class:`RecoverSettings`)
    :return: The decision
    :raises RunFolderError: When ``run`` is no run folder
    :raises ConfigError: When the environment or budget cannot be known
    """
    settings = settings or RecoverSettings()
    if not run.is_dir():
        raise RunFolderError(f"{str(run)!r} is not a run folder. Pass the folder a training run wrote (runs/<env>/<run>)")
    folder = RunFolder(run)
    known_env, block, info = _parent(folder)
    env_id = settings.env_id or known_env
    if env_id is None:
        raise ConfigError(f"{str(run)!r} has no config.yml to name its environment. Pass --env ENV_ID")
    budget = settings.timesteps or (int(block["n_timesteps"]) if "n_timesteps" in block else None)
    if budget is None:
        raise ConfigError(f"{str(run)!r} does not record its budget. Pass --timesteps N (total steps)")
    trouble = find_trouble(run)
    checkpoints = _with_best_model(find_checkpoints(run), folder)
    from_step = settings.from_step
    if from_step is not None:
        limit = from_step
        chosen = choose_checkpoint(checkpoints, from_step)
        reason = f"asked to continue from step {from_step:,}" + (f"; {trouble.describe()}" if trouble else "")
    elif trouble is None:
        return Recovery(
            None,
            None,
            f"{run}: no finding, no crash: nothing to recover from. Pass --from STEP to continue from the newest "
            "checkpoint at or before STEP anyway (`sb3-safe diagnose RUN` shows the run's curves and findings)",
        )
    else:
        limit = trouble.onset
        chosen = choose_checkpoint(checkpoints, trouble.onset)
        reason = trouble.describe()
    if chosen is None:
        first = f"the first is at step {checkpoints[0][0]:,}" if checkpoints else "the run kept none"
        reason += f"; no checkpoint at or before step {limit:,} ({first}): starting afresh"
    else:
        reason += f"; newest checkpoint before it: {chosen[1].name} (step {chosen[0]:,})"
    seed = int(info.get("seed", 0)) if settings.seed is None else settings.seed
    return Recovery(trouble, chosen, reason, run=run, env_id=env_id, budget=budget, seed=seed, block=block)


def run_recovery(recovery: Recovery, settings: RecoverSettings | None = None) -> TrainResult:
    """
    Train what :func:`plan_recovery` decided: the chosen checkpoint resumed under the profile, to the
    run's budget, in a new folder beside the run whose ``config.yml`` records the chain.

    :param recovery: A decision that :attr:`Recovery.needed` a run
    :param settings: The same settings the plan was made with
    :return: The new run (also kept as ``recovery.result``)
    """
    settings = settings or RecoverSettings()
    if recovery.run is None or recovery.env_id is None:
        raise ValueError("run_recovery needs a plan that found something to recover (Recovery.needed)")
    run, trouble, chosen = recovery.run, recovery.trouble, recovery.checkpoint
    print(f"sb3-safe recover: {recovery.reason}", flush=True)
    RunFolder(run).remove_stale_temporaries()
    # The network is the run's: its shape keys carry over (the profile's would not fit the checkpoint).
    carried = {key: recovery.block[key] for key in _NETWORK_KEYS if key in recovery.block}
    config = load_config(settings.profile, recovery.env_id, {**carried, **settings.overrides, "n_timesteps": recovery.budget})
    lineage = {
        "parent_run": str(run.resolve()),
        "checkpoint": None if chosen is None else str(chosen[1].resolve()),
        "checkpoint_timestep": None if chosen is None else chosen[0],
        "trouble": None if trouble is None else trouble.code,
        "trouble_timestep": None if trouble is None else trouble.timestep,
        "onset": None if trouble is None else trouble.onset,
        "reason": recovery.reason,
        "profile": settings.profile,
    }
    recovery.result = train(
        config,
        TrainSettings(
            seed=recovery.seed,
            run_dir=_new_folder(run, settings.profile),
            checkpoint=None if chosen is None else chosen[1],
            argv=settings.argv,
            progress_bar=settings.progress_bar,
            eval_freq=settings.eval_freq,
            save_freq=settings.save_freq,
            n_eval_episodes=settings.n_eval_episodes,
            explicit=frozenset(settings.overrides),
            lineage=lineage,
        ),
    )
    if chosen is not None and settings.compare_episodes > 0:
        keep_better(recovery.result.run_dir, chosen[1], settings.compare_episodes, recovery.seed)
    return recovery.result


def keep_better(run_dir: Path, checkpoint: Path, episodes: int, seed: int) -> dict[str, Any]:
    """
    Evaluate a recovered run's final policy and the checkpoint it started from on the same episodes, and keep the
    better one as the run's ``model.zip``. A recovery that made things worse (the safe profile can also fail to
    regain what a run lost) then still ends with the best policy there is; the trained one stays beside it as
    ``trained_model.zip``. The comparison goes into ``result.json`` under ``recovery``.

    :param run_dir: The recovered run's folder
    :param checkpoint: The checkpoint it resumed from
    :param episodes: Episodes for each (the evaluation environment seeded with ``seed + 1000`` for both)
    :param seed: The run's seed
    :return: The comparison
    """
    from sb3_safe.evaluation import evaluate

    folder = RunFolder(run_dir)
    recovered = evaluate(run_dir, episodes=episodes, seed=seed + 1000)
    original = evaluate(checkpoint, episodes=episodes, seed=seed + 1000, run=run_dir)
    kept = "recovered" if recovered.mean >= original.mean else "checkpoint"
    if kept == "checkpoint":
        final = folder.final_model
        moves = [(final, final.with_name("trained_model.zip"))]
        moves += [(stats_path_for(final), stats_path_for(moves[0][1]))]
        moves += [(monitor_state_path_for(final), monitor_state_path_for(moves[0][1]))]
        for source, target in moves:
            if source.is_file():
                os.replace(source, target)
        for source, target in ((checkpoint, final), (stats_path_for(checkpoint), stats_path_for(final))):
            if source.is_file():
                atomic_write(target, functools.partial(shutil.copyfile, source))
    comparison = {
        "episodes": episodes,
        "seed": seed + 1000,
        "recovered_mean": recovered.mean,
        "recovered_sem": recovered.std / math.sqrt(episodes),
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_mean": original.mean,
        "checkpoint_sem": original.std / math.sqrt(episodes),
        "kept": kept,
    }
    folder.write_result({**(folder.read_result() or {}), "recovery": comparison})
    better = "the recovered policy" if kept == "recovered" else f"the checkpoint it started from ({checkpoint.name})"
    print(
        f"sb3-safe recover: over the same {episodes} episodes the recovered policy returns {recovered.mean:.4g}, "
        f"the checkpoint {original.mean:.4g}: model.zip is {better}",
        flush=True,
    )
    return comparison


def recover(run: Path, settings: RecoverSettings | None = None, *, dry_run: bool = False, **changes: Any) -> Recovery:
    """
    Find the trouble of a run, pick the checkpoint before it, and continue under the profile
    (:func:`plan_recovery`, then :func:`run_recovery` unless ``dry_run``).

    :param run: The run folder
    :param settings: How to continue (default: :class:`RecoverSettings`)
    :param dry_run: Decide and explain, train nothing
    :param changes: :class:`RecoverSettings` fields that replace ``settings``' (``recover(run, profile="safe")``)
    :return: The decision, and the new run when one was trained
    """
    settings = replace(settings or RecoverSettings(), **changes)
    recovery = plan_recovery(run, settings)
    if recovery.needed and not dry_run:
        run_recovery(recovery, settings)
    return recovery


def _parent(folder: RunFolder) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """The run's environment, profile block and run_info (``None``, ``{}``, ``{}`` for a plain SB3 run)."""
    if not folder.config_file.is_file():
        return None, {}, {}
    return folder.read_config()


def _new_folder(run: Path, profile: str) -> Path:
    """A folder beside the run that exists nowhere yet: ``<run>.recover-<profile>[-2, -3, ...]``."""
    return free_path(run.resolve().with_name(f"{run.resolve().name}.recover-{profile}"))
