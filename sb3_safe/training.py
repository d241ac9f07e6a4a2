"""
``train`` and ``evaluate``: the Python API behind ``sb3-safe train`` and ``sb3-safe eval``.

The command line only parses arguments and calls these; tests call them directly.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger, make_output_format
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import sync_envs_normalization

import sb3_safe
from sb3_safe.build import BuiltRun, SafetyCallbacks, build_run, safety_callbacks
from sb3_safe.callbacks import HealthMonitorCallback, RollbackCallback
from sb3_safe.checkpoints import (
    AtomicCheckpointCallback,
    checkpoint_bytes_estimate,
    monitor_state_path_for,
    save_with_stats,
)
from sb3_safe.config import TrainConfig
from sb3_safe.errors import CheckpointError, ConfigError
from sb3_safe.evaluation import EvalResult as EvalResult
from sb3_safe.evaluation import eval_callback_class, evaluate_model
from sb3_safe.evaluation import evaluate as evaluate
from sb3_safe.evaluation import load_policy as load_policy
from sb3_safe.runs import RunFolder, atomic_write

# EvalResult, evaluate and load_policy live in sb3_safe.evaluation; they stay importable from here.
__all__ = [
    "ProgressLineCallback",
    "RecoveryPoints",
    "ResourceLogCallback",
    "TrainResult",
    "TrainSettings",
    "resident_memory_mb",
    "show_progress_bar",
    "train",
]


@dataclass(frozen=True)
class TrainResult:
    """What a finished training run left behind."""

    run_dir: Path
    model: OnPolicyAlgorithm
    num_timesteps: int
    eval_mean: float
    eval_std: float
    #: The health monitor, when the profile turned it on
    monitor: HealthMonitorCallback | None = None
    #: The rollback callback, when the profile turned it on
    rollback: RollbackCallback | None = None

    @property
    def stopped_early(self) -> bool:
        """Whether training stopped because the rollbacks ran out."""
        return self.rollback is not None and self.rollback.exhausted


def show_progress_bar() -> bool:
    """SB3's progress bar in a terminal; plain lines when ``CI`` is set or output is not a terminal."""
    return sys.stdout.isatty() and not os.environ.get("CI")


class ProgressLineCallback(BaseCallback):
    """
    One plain line about every tenth of the run: steps, speed, mean episode return, time left.

    For logs (CI, ``nohup``, a file) where a progress bar would be garbage. PPO trains whole
    rollouts, so a budget that is not a multiple of one rollout (``n_steps * n_envs``) rounds up:
    that is said once at the start, and the lines count against the rounded number, never past 100%.

    :param total: Steps this ``learn`` call was asked to train for
    :param lines: About how many lines to print
    """

    def __init__(self, total: int, lines: int = 10) -> None:
        super().__init__()
        self.requested = total
        self.total = total
        self.lines = lines
        self.every = max(total // lines, 1)

    def _on_training_start(self) -> None:
        rollout = int(getattr(self.model, "n_steps", 1)) * self.model.n_envs
        self.total = -(-self.requested // rollout) * rollout
        self.every = max(self.total // self.lines, 1)
        if self.total != self.requested:
            print(
                f"Training {self.total:,} steps: the budget of {self.requested:,} rounds up to whole rollouts of "
                f"{rollout:,} steps ({self.model.n_envs} envs x {rollout // self.model.n_envs} steps)",
                flush=True,
            )
        self.start_steps = self.num_timesteps
        self.start_time = time.perf_counter()
        self.next_mark = self.start_steps + self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_mark:
            self.next_mark += self.every
            done = self.num_timesteps - self.start_steps
            elapsed = max(time.perf_counter() - self.start_time, 1e-9)
            speed = done / elapsed
            buffer = self.model.ep_info_buffer
            ret = f"{np.mean([ep['r'] for ep in buffer]):.1f}" if buffer else "n/a"
            eta = max(self.total - done, 0) / max(speed, 1e-9)
            target = self.start_steps + self.total
            print(
                f"[{100 * min(done / self.total, 1.0):3.0f}%] {self.num_timesteps:,} of {target:,} steps | "
                f"{speed:,.0f} steps/s | ep_rew_mean {ret} | {eta:.0f}s left",
                flush=True,
            )
        return True


def resident_memory_mb() -> float:
    """:return: This process's resident memory now (Linux), or its peak where ``/proc`` is missing, in MiB"""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ResourceLogCallback(BaseCallback):
    """
    Log the process's resident memory (``time/rss_mb``) once per rollout, so a long run's
    progress.csv shows whether memory stays flat as it grows.
    """

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.logger.record("time/rss_mb", round(resident_memory_mb(), 1))


class RecoveryPoints:
    """
    The moments a recovery may want to go back to, for checkpoint retention: the onset of every finding the
    health monitor reports and the step of the best evaluation. Each call of :meth:`new_events` returns
    those that came since the last call.

    :param monitor: The run's health monitor, if any
    """

    def __init__(self, monitor: HealthMonitorCallback | None) -> None:
        self.monitor = monitor
        self.seen = 0 if monitor is None else monitor.reported
        self.pending: dict[int, str] = {}

    def best_evaluation(self, step: int) -> None:
        self.pending[step] = "the checkpoint before the best evaluation"

    def new_events(self) -> dict[int, str]:
        events, self.pending = self.pending, {}
        if self.monitor is not None:
            fresh = min(self.monitor.reported - self.seen, len(self.monitor.findings))
            self.seen = self.monitor.reported
            for finding in list(self.monitor.findings)[len(self.monitor.findings) - fresh :]:
                onset = finding.onset if finding.onset is not None else finding.timestep
                events.setdefault(onset, f"the newest checkpoint before the onset of {finding.code} ({finding.severity})")
        return events


class _SaveBest(BaseCallback):
    """Called by EvalCallback on a new best: save the model with its VecNormalize statistics."""

    def __init__(self, path: Path, points: RecoveryPoints | None = None) -> None:
        super().__init__()
        self.path = path
        self.points = points

    def _on_step(self) -> bool:
        assert isinstance(self.model, OnPolicyAlgorithm)
        save_with_stats(self.model, self.path)
        if self.points is not None:
            self.points.best_evaluation(self.num_timesteps)
        return True


@dataclass(frozen=True)
class TrainSettings:
    """
    How one run trains, beside its profile block: everything :func:`train` takes by name.

    :param seed: Seed of the model and the environments (evaluation uses ``seed + 1000``)
    :param runs_root: Parent of the run folders
    :param run_dir: An explicit run folder (must not exist)
    :param vec_env: How copies are stepped (:data:`sb3_safe.envs.VEC_ENVS`)
    :param device: Torch device (a batched simulator runs there too)
    :param checkpoint: A model ``.zip`` to resume from; its VecNormalize statistics are loaded
        with it and the timestep count goes on from the checkpoint's to ``n_timesteps``
    :param eval_freq: Evaluate every this many environment steps (default: 20 times a run)
    :param save_freq: Checkpoint every this many environment steps (default: 10 times a run)
    :param n_eval_episodes: Episodes per evaluation
    :param argv: The command line, for ``command.txt``
    :param progress_bar: SB3's progress bar (default: :func:`show_progress_bar`), else plain lines
    :param explicit: Profile keys set on the command line (see :func:`sb3_safe.build.build_run`)
    :param lineage: Where this run comes from (``sb3-safe recover``: parent run, checkpoint, reason),
        written to ``config.yml``'s ``run_info``
    """

    seed: int = 0
    runs_root: Path = Path("runs")
    run_dir: Path | None = None
    vec_env: str = "dummy"
    device: str = "cpu"
    checkpoint: Path | None = None
    eval_freq: int | None = None
    save_freq: int | None = None
    n_eval_episodes: int = 5
    argv: Sequence[str] = ()
    progress_bar: bool | None = None
    explicit: Collection[str] = ()
    lineage: Mapping[str, Any] | None = None


def train(
    config: TrainConfig,
    settings: TrainSettings | None = None,
    *,
    callbacks: Sequence[BaseCallback] = (),
    env_wrapper: Callable[[gym.Env], gym.Env] | None = None,
    **changes: Any,
) -> TrainResult:
    """
    Train one run into a new run folder.

    :param config: The validated profile block
    :param settings: How to train (default: :class:`TrainSettings`'s defaults)
    :param callbacks: More callbacks
    :param env_wrapper: An extra gymnasium wrapper for the training environments (fault injection)
    :param changes: :class:`TrainSettings` fields that replace ``settings``' (``train(config, seed=1)``)
    :return: The run
    """
    settings = _with_changes(settings or TrainSettings(), changes)
    if settings.checkpoint is not None:
        opened = RunFolder.containing(settings.checkpoint)
        if opened is not None:
            opened.remove_stale_temporaries()
    target = config.n_timesteps
    built = build_run(
        config,
        seed=settings.seed,
        vec_env=settings.vec_env,
        device=settings.device,
        checkpoint=settings.checkpoint,
        env_wrapper=env_wrapper,
        explicit=settings.explicit,
    )
    try:
        remaining = target - built.start_timesteps
        if remaining <= 0:
            raise ConfigError(
                f"--checkpoint {str(settings.checkpoint)!r} is at {built.start_timesteps} steps, n_timesteps is {target}: "
                f"nothing to train. Pass --timesteps larger than {built.start_timesteps}"
            )
        _check_budget(config, built.model)
        folder = RunFolder.create(settings.runs_root, config.env_id, config.profile, settings.seed, settings.run_dir)
        return _train_into(folder, built, remaining, settings, callbacks)
    finally:
        built.close()


def _check_budget(config: TrainConfig, model: OnPolicyAlgorithm) -> None:
    """A checkpoint budget must hold two checkpoints (the newest and one to recover from): checked before any folder exists."""
    budget = config.values.get("checkpoint_budget_mb")
    if budget is None:
        return
    size = checkpoint_bytes_estimate(model)
    if budget * 2**20 < 2 * size:
        raise ConfigError(
            f"`checkpoint_budget_mb` = {budget}: must hold at least two checkpoints of this model "
            f"({size / 2**20:.2f} MiB each). Set checkpoint_budget_mb to {2 * size / 2**20:.1f} or more (null: no budget)"
        )


def _with_changes(settings: TrainSettings, changes: Mapping[str, Any]) -> TrainSettings:
    unknown = sorted(set(changes) - {f.name for f in fields(TrainSettings)})
    if unknown:
        raise TypeError(f"train() got an unexpected keyword argument {unknown[0]!r} (not a TrainSettings field)")
    return replace(settings, **changes) if changes else settings


def _run_info(config: TrainConfig, settings: TrainSettings, start: int) -> dict[str, Any]:
    checkpoint = settings.checkpoint
    return {
        "profile": config.profile,
        "profile_file": str(config.source.resolve()),
        "seed": settings.seed,
        "device": settings.device,
        "vec_env": settings.vec_env,
        "resumed_from": None if checkpoint is None else str(checkpoint.resolve()),
        "resumed_at_timestep": start,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {
            "sb3_safe": sb3_safe.__version__,
            "stable_baselines3": stable_baselines3.__version__,
            "torch": str(th.__version__),
            "gymnasium": gym.__version__,
        },
    }


def _train_into(
    folder: RunFolder, built: BuiltRun, remaining: int, settings: TrainSettings, callbacks: Sequence[BaseCallback]
) -> TrainResult:
    config, model = built.config, built.model
    target = config.n_timesteps
    checkpoint, lineage, n_eval_episodes = settings.checkpoint, settings.lineage, settings.n_eval_episodes
    run_info = _run_info(config, settings, built.start_timesteps)
    if checkpoint is not None:
        run_info["resume_changes"] = list(built.resume_changes)
        for change in built.resume_changes:
            print(f"Resume: {change}", flush=True)
    if lineage is not None:
        run_info["recovered_from"] = dict(lineage)
    block = {**config.effective_values(), "n_timesteps": target}
    with folder.writing():
        folder.write_config({config.env_id: block}, run_info, settings.argv or ["sb3-safe", "train", "--env", config.env_id])
    model.set_logger(
        Logger(
            str(folder.path),
            [make_output_format("csv", str(folder.path)), make_output_format("tensorboard", str(folder.tensorboard_dir))],
        )
    )
    safety = safety_callbacks(config, folder.path)
    if checkpoint is not None and safety.monitor is not None:
        _resume_monitor(safety.monitor, checkpoint)
    recovery_points = RecoveryPoints(safety.monitor)
    n_envs = built.venv.num_envs
    # By default 20 evaluations and 10 checkpoints a run, at most one of each per rollout (a budget of one
    # rollout is not evaluated 20 times over)
    rollout = int(getattr(model, "n_steps", 1)) * n_envs
    eval_every = settings.eval_freq or max(target // 20, rollout)
    save_every = settings.save_freq or max(target // 10, rollout)
    all_callbacks: list[BaseCallback] = [
        *safety.as_list(),  # first: they repair NaN observations and statistics before evaluation and checkpoints
        AtomicCheckpointCallback(
            max(save_every // n_envs, 1),
            folder.checkpoints_dir,
            keep=config.values.get("keep_checkpoints"),
            state=None if safety.monitor is None else _monitor_state(safety),
            protect=None if safety.rollback is None else _healthy_step(safety.rollback, folder),
            events=recovery_points.new_events,
            budget_mb=config.values.get("checkpoint_budget_mb"),
            log=folder.health_log,
        ),
        eval_callback_class(model, built.eval_env)(
            built.eval_env,
            callback_on_new_best=_SaveBest(folder.best_model, recovery_points),
            n_eval_episodes=n_eval_episodes,
            eval_freq=max(eval_every // n_envs, 1),
            log_path=str(folder.evaluations_file.parent),
            deterministic=True,
            verbose=0,
        ),
        ResourceLogCallback(),
        *callbacks,
    ]
    bar = show_progress_bar() if settings.progress_bar is None else settings.progress_bar
    if not bar:
        all_callbacks.append(ProgressLineCallback(remaining))
    print(f"Run folder: {folder.path}", flush=True)
    with folder.writing():
        start = time.perf_counter()
        model.learn(remaining, callback=all_callbacks, reset_num_timesteps=checkpoint is None, progress_bar=bar)
        return _finish(folder, built, safety, time.perf_counter() - start, n_eval_episodes)


def _finish(folder: RunFolder, built: BuiltRun, safety: SafetyCallbacks, wall: float, n_eval_episodes: int) -> TrainResult:
    """The end of a run: the final model with the monitor's state, the final evaluation, ``result.json``."""
    model = built.model
    if safety.monitor is not None:
        state = _monitor_state(safety)()
        atomic_write(monitor_state_path_for(folder.final_model), lambda tmp: tmp.write_text(json.dumps(state)))
    save_with_stats(model, folder.final_model)

    if built.normalized:
        sync_envs_normalization(built.venv, built.eval_env)
    episodes = max(n_eval_episodes, 10)
    mean, std = evaluate_model(model, built.eval_env, episodes, deterministic=True)
    folder.write_result(
        {
            "num_timesteps": model.num_timesteps,
            "eval_mean_return": mean,
            "eval_std_return": std,
            "eval_episodes": episodes,
            "wall_time_s": round(wall, 2),
            # steps actually run: a run stopped early (rollbacks exhausted) ran fewer than its budget
            "steps_per_s": round((model.num_timesteps - built.start_timesteps) / wall, 1),
        }
    )
    return TrainResult(folder.path, model, model.num_timesteps, mean, std, safety.monitor, safety.rollback)


def _monitor_state(safety: SafetyCallbacks) -> Callable[[], dict[str, Any]]:
    """What is saved beside each checkpoint: the monitor's history, the rollbacks so far, the last healthy step."""

    def state() -> dict[str, Any]:
        assert safety.monitor is not None
        rollback = safety.rollback
        return {
            "health": safety.monitor.history.state_dict(),
            "rollbacks": None if rollback is None else rollback.rollbacks,
            "healthy_timesteps": None if rollback is None or rollback.healthy is None else rollback.healthy.timesteps,
        }

    return state


def _healthy_step(rollback: RollbackCallback, folder: RunFolder) -> Callable[[], list[int]]:
    """The newest checkpoint at or before the last confirmed-healthy state is never pruned."""

    def steps() -> list[int]:
        healthy = rollback.healthy
        if healthy is None:
            return []
        return [s for s, _ in folder.checkpoints() if s <= healthy.timesteps][-1:]

    return steps


def _resume_monitor(monitor: HealthMonitorCallback, checkpoint: Path) -> None:
    """
    Load the monitor's history saved beside ``checkpoint``, so that a collapse right after a resume
    is judged against the best return from before it.
    """
    path = monitor_state_path_for(checkpoint)
    try:
        state = json.loads(path.read_text())
        monitor.history.load_state_dict(state["health"])
    except FileNotFoundError:
        return  # a checkpoint from before monitor states were saved, or from a run without a monitor
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"monitor state {str(path)!r} beside the checkpoint is damaged ({type(error).__name__}: {error}). "
            "Delete it to resume with a fresh health history"
        ) from None
