"""
The tuning objective: a trial's configuration trained on several seeds, scored for high and stable return.

Score (maximized): over every seed, take the mean returns of its last ``last_evals``
evaluations; the trial's value is ``mean - spread_weight * std`` of those numbers. A
configuration that is good on one lucky seed, or whose return swings between
evaluations, scores below one that is reliably good.

With ``stresses`` (``sb3-safe tune --stress outliers,nan-obs``), every seed is also trained on
each stressed copy of the environment (:data:`sb3_safe.faults.STRESSES`; evaluation stays on
the clean one, so returns compare), each condition is scored the same way, and the trial's
value is the **worst** condition's score (``stress_score="mean"``: their mean). A configuration
wins by being fast on the clean task *and* by surviving the faults; a stressed run that
crashes, runs out of rollbacks or ends with non-finite weights prunes the trial.

Each evaluation is reported to Optuna for pruning at step
``(condition_index * seeds_per_trial + seed_index) * n_evaluations + k`` (the clean condition
first), so every trial reports the same steps in the same order.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
from dataclasses import dataclass

import optuna
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback

from sb3_safe.build import build_run, safety_callbacks
from sb3_safe.config import TrainConfig
from sb3_safe.errors import ConfigError, did_you_mean
from sb3_safe.evaluation import eval_callback_class
from sb3_safe.faults import STRESSES, stress_wrapper
from sb3_safe.multiagent.vec_env import count_agents
from sb3_safe.tuning.space import SearchSpace

__all__ = ["STRESS_SCORES", "ObjectiveSettings", "TrialObjective", "combine", "curve_key", "score"]


@dataclass(frozen=True)
class ObjectiveSettings:
    """How each trial is trained and scored."""

    timesteps: int
    seeds_per_trial: int = 2
    n_evaluations: int = 5
    eval_episodes: int = 5
    last_evals: int = 2
    spread_weight: float = 1.0
    #: Wall-clock budget of one trial in seconds (``None``: no limit); a trial over it is pruned
    trial_timeout: float | None = None
    seed: int = 0
    #: Names of :data:`sb3_safe.faults.STRESSES` each seed is also trained under
    stresses: tuple[str, ...] = ()
    #: How the conditions' scores combine: ``"worst"`` (their minimum) or ``"mean"``
    stress_score: str = "worst"

    def __post_init__(self) -> None:
        unknown = [name for name in self.stresses if name not in STRESSES]
        if unknown:
            raise ConfigError(
                f"--stress {unknown[0]!r} is not known.{did_you_mean(unknown[0], STRESSES)} "
                f"Use a comma-separated list of {', '.join(STRESSES)}"
            )
        if self.stress_score not in STRESS_SCORES:
            raise ConfigError(f"--stress-score {self.stress_score!r}: use one of {', '.join(STRESS_SCORES)}")

    @property
    def conditions(self) -> tuple[str | None, ...]:
        """The clean environment (``None``), then each stress."""
        return (None, *self.stresses)


STRESS_SCORES = ("worst", "mean")


def curve_key(stress: str | None, seed_index: int) -> str:
    """:return: The trial attribute holding a seed's evaluation curve under ``stress`` (``None``: clean)"""
    return f"curve_seed{seed_index}" if stress is None else f"curve_{stress}_seed{seed_index}"


def combine(scores: list[float], how: str = "worst") -> float:
    """
    :param scores: One score per condition (clean first)
    :param how: ``"worst"`` or ``"mean"``
    :return: The trial's value
    """
    return min(scores) if how == "worst" else statistics.fmean(scores)


def score(returns: list[float], spread_weight: float = 1.0) -> float:
    """
    :param returns: The last evaluations' mean returns of every seed
    :param spread_weight: Weight of the standard deviation
    :return: ``mean - spread_weight * std`` (population std; 0 for one number)
    """
    mean = statistics.fmean(returns)
    spread = statistics.pstdev(returns) if len(returns) > 1 else 0.0
    return mean - spread_weight * spread


class _PruneTrialError(Exception):
    """Raised inside a seed's run to end the trial as pruned, with the reason."""


class _TrialDeadline(BaseCallback):
    """Stops training once the trial's time budget is spent."""

    def __init__(self, deadline: float | None) -> None:
        super().__init__()
        self.deadline = deadline
        self.stop_reason: str | None = None

    def _on_step(self) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.stop_reason = "time budget exceeded"
            return False
        return True


class _TrialReport(BaseCallback):
    """
    Runs after each evaluation (``callback_after_eval`` of the evaluation callback, whichever kind
    fits the model): reports the mean return to the trial and stops on pruning.
    """

    def __init__(self, trial: optuna.Trial, step_offset: int) -> None:
        super().__init__()
        self.trial = trial
        self.step_offset = step_offset
        self.means: list[float] = []
        self.stop_reason: str | None = None

    def _on_step(self) -> bool:
        assert isinstance(self.parent, EvalCallback)
        mean = float(self.parent.last_mean_reward)
        self.means.append(mean)
        self.trial.report(mean, self.step_offset + len(self.means))
        if not math.isfinite(mean):
            self.stop_reason = "non-finite evaluation return"
            return False
        if self.trial.should_prune():
            self.stop_reason = f"pruned at evaluation {len(self.means)} (return {mean:.4g})"
            return False
        return True


class TrialObjective:
    """
    The callable handed to ``study.optimize``.

    :param base: The profile block the searched values are merged into
    :param space: The search space
    :param settings: Budget and scoring
    """

    def __init__(self, base: TrainConfig, space: SearchSpace, settings: ObjectiveSettings) -> None:
        self.base = base
        self.space = space
        self.settings = settings
        self._timesteps_run = 0

    def config_for(self, trial: optuna.Trial) -> TrainConfig:
        """The trial's configuration, or a pruned trial when the combination is invalid or too costly."""
        overrides = self.space.sample(trial)
        try:
            config = self.base.with_overrides({**overrides, "n_timesteps": self.settings.timesteps})
        except ConfigError as error:
            raise _PruneTrialError(f"invalid configuration: {error}") from None
        # a rollout has a slot per environment copy, and per agent on a PettingZoo environment
        agents = count_agents(config.env_id, config.env_kwargs) if config.multiagent else 1
        rollout = int(config.get("n_steps")) * config.n_envs * agents
        rollout_text = f"n_steps * n_envs{' * agents' if config.multiagent else ''} = {rollout}"
        batch = int(config.get("batch_size"))
        if batch > rollout:
            raise _PruneTrialError(f"batch_size {batch} is larger than the rollout ({rollout_text})")
        between = self.settings.timesteps // self.settings.n_evaluations
        if rollout > between:
            # learn() collects whole rollouts: such a trial would overrun its budget and update
            # fewer times than it is evaluated.
            raise _PruneTrialError(f"rollout {rollout_text} is longer than the {between} steps between evaluations")
        cap = self.space.max_grad_steps_per_env_step
        epochs = int(config.get("n_epochs"))
        if cap is not None and epochs / batch > cap:
            raise _PruneTrialError(
                f"n_epochs / batch_size = {epochs} / {batch} = {epochs / batch:.3g} gradient steps per env step exceeds "
                f"the limit {cap:g}"
            )
        return config

    def __call__(self, trial: optuna.Trial) -> float:
        th.set_num_threads(1)
        # which machine and process ran it (host:pid; benchmarks/tune.py: where each worker's time goes)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        start = time.monotonic()
        deadline = None if self.settings.trial_timeout is None else start + self.settings.trial_timeout
        self._timesteps_run = 0
        try:
            config = self.config_for(trial)
        except _PruneTrialError as reason:
            # Rejected before training: it costs nothing, so it does not count against --trials.
            trial.set_user_attr("pruned_reason", str(reason))
            trial.set_user_attr("invalid", True)
            raise optuna.TrialPruned(str(reason)) from None
        scores: list[float] = []
        try:
            for position, stress in enumerate(self.settings.conditions):
                finals: list[float] = []
                for index in range(self.settings.seeds_per_trial):
                    means = self._run_seed(trial, config, index, deadline, stress, position)
                    finals.extend(means[-self.settings.last_evals :])
                scores.append(score(finals, self.settings.spread_weight))
                if stress is None:
                    trial.set_user_attr("final_returns", finals)
                if self.settings.stresses:
                    trial.set_user_attr(f"score_{stress or 'clean'}", scores[-1])
        except _PruneTrialError as reason:
            trial.set_user_attr("pruned_reason", str(reason))
            trial.set_user_attr("timesteps_run", self._timesteps_run)
            raise optuna.TrialPruned(str(reason)) from None
        trial.set_user_attr("timesteps_run", self._timesteps_run)
        trial.set_user_attr("seconds", round(time.monotonic() - start, 2))
        return combine(scores, self.settings.stress_score)

    def _run_seed(
        self, trial: optuna.Trial, config: TrainConfig, index: int, deadline: float | None, stress: str | None, position: int
    ) -> list[float]:
        seed = self.settings.seed + index
        wrapper = None if stress is None else stress_wrapper(stress, self.settings.timesteps, config.n_envs)
        try:
            run = build_run(config, seed=seed, env_wrapper=wrapper)
        except ConfigError as error:
            raise _PruneTrialError(f"invalid configuration: {error}") from None
        model = run.model
        offset = (position * self.settings.seeds_per_trial + index) * self.settings.n_evaluations
        report, timer = _TrialReport(trial, offset), _TrialDeadline(deadline)
        evaluations = eval_callback_class(model, run.eval_env)(
            run.eval_env,
            callback_after_eval=report,
            n_eval_episodes=self.settings.eval_episodes,
            eval_freq=max(self.settings.timesteps // self.settings.n_evaluations // run.venv.num_envs, 1),
            deterministic=True,
            verbose=0,
        )
        safety = safety_callbacks(config, verbose=False)
        monitor, rollback = safety.monitor, safety.rollback
        # Safety first: the guard repairs NaN observations and statistics before the evaluation syncs them.
        callbacks: list[BaseCallback] = [*safety.as_list(), timer, evaluations]
        try:
            model.learn(self.settings.timesteps, callback=callbacks)
        except (ValueError, RuntimeError, FloatingPointError) as error:  # NaN in plain PPO reaches torch's checks
            raise _PruneTrialError(f"crashed with {type(error).__name__}: {str(error).splitlines()[0]}") from None
        finally:
            self._timesteps_run += model.num_timesteps
            run.close()
        where = f"seed {seed}" if stress is None else f"seed {seed} under {stress}"
        stop_reason = timer.stop_reason or report.stop_reason
        if stop_reason is not None:
            raise _PruneTrialError(f"{where}: {stop_reason}")
        if rollback is not None and rollback.exhausted:
            raise _PruneTrialError(f"{where}: rollbacks exhausted ({rollback.summary})")
        if rollback is None and monitor is not None and monitor.critical_codes:
            codes = sorted(monitor.critical_codes)
            raise _PruneTrialError(f"{where}: critical health finding ({', '.join(codes)})")
        if not report.means:
            raise _PruneTrialError(
                f"{where}: no evaluation ran (timesteps too small for {self.settings.n_evaluations} evaluations)"
            )
        trial.set_user_attr(curve_key(stress, index), report.means)
        if not all(bool(th.isfinite(p).all()) for p in model.policy.parameters()):
            raise _PruneTrialError(f"{where}: non-finite parameters after training")
        return report.means
