"""
One way to build a run from a resolved profile: the environments, the model, and the safety callbacks.

Training (:func:`sb3_safe.training.train`), the tuner's objective and the benchmark runner
all build through here, so a profile means the same thing to each of them::

    config = load_config("safe", "Pendulum-v1")
    run = build_run(config, seed=0)
    safety = safety_callbacks(config)
    run.model.learn(config.n_timesteps, callback=safety.as_list())
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sb3_safe.callbacks import HealthMonitorCallback, NonFiniteGuardCallback, RollbackCallback
from sb3_safe.config import TrainConfig
from sb3_safe.envs import make_env, make_eval_env, wrap_normalize
from sb3_safe.errors import ConfigError
from sb3_safe.options import OptionError
from sb3_safe.resume import SavedModel, build_resumed, normalize_plan, read_saved
from sb3_safe.runs import RunFolder

__all__ = ["BuiltRun", "SafetyCallbacks", "build_run", "safety_callbacks"]


@dataclass
class BuiltRun:
    """The parts of a run, ready to ``learn``."""

    config: TrainConfig
    #: The training environments (VecNormalize outermost when the profile normalizes)
    venv: VecEnv
    #: One evaluation environment: true rewards, observation statistics synced from ``venv``
    eval_env: VecEnv
    model: OnPolicyAlgorithm
    #: The step count the model starts from (the checkpoint's when resuming, else 0)
    start_timesteps: int = 0
    #: What resuming under this profile changed, in words (empty for a new run)
    resume_changes: list[str] = field(default_factory=list)

    @property
    def normalized(self) -> bool:
        return isinstance(self.venv, VecNormalize)

    def close(self) -> None:
        self.venv.close()
        self.eval_env.close()


@dataclass
class SafetyCallbacks:
    """The callbacks a profile's ``health``, ``rollback`` and ``guard`` keys ask for (each may be off)."""

    guard: NonFiniteGuardCallback | None = None
    monitor: HealthMonitorCallback | None = None
    rollback: RollbackCallback | None = None

    def as_list(self) -> list[BaseCallback]:
        """
        :return: The callbacks in the order they must run: the guard repairs NaN observations and
            statistics, the monitor judges the update, the rollback acts, all before evaluation and
            checkpoint callbacks that come after them see the state
        """
        return [cb for cb in (self.guard, self.monitor, self.rollback) if cb is not None]


def safety_callbacks(config: TrainConfig, run_dir: Path | None = None, verbose: bool = True) -> SafetyCallbacks:
    """
    Build the callbacks a profile asks for.

    - ``health: {...}`` (or ``{}``): a :class:`HealthMonitorCallback` with those thresholds.
    - ``rollback: {...}``: a :class:`RollbackCallback` (it runs a non-finite guard of its own and,
      when ``health`` is off, feeds a silent monitor).
    - ``guard: true``: a :class:`NonFiniteGuardCallback`, for profiles without rollback.

    :param config: The profile block
    :param run_dir: Folder for ``health.jsonl`` and ``last_healthy_model.zip`` (``None``: none written)
    :param verbose: Print findings and rollbacks (findings only when ``health`` is on)
    :return: The callbacks; put :meth:`SafetyCallbacks.as_list` first in the callback list
    """
    health, rollback_options = config.callback_options("health"), config.callback_options("rollback")
    folder = None if run_dir is None else RunFolder(run_dir)
    monitor = None
    if health is not None or rollback_options is not None:
        thresholds = dict(health or {})
        quiet = int(thresholds.pop("quiet_updates", 5))
        monitor = HealthMonitorCallback(
            thresholds,
            log_path=None if folder is None else folder.health_log,
            quiet_updates=quiet,
            verbose=int(verbose and health is not None),
        )
    if rollback_options is not None:
        assert monitor is not None
        try:
            rollback = RollbackCallback(monitor, save_path=run_dir, verbose=int(verbose), **rollback_options)
        except OptionError as error:
            raise ConfigError(f"{config.where()}: rollback: {error}") from None
        return SafetyCallbacks(monitor=monitor, rollback=rollback)
    guard = NonFiniteGuardCallback(monitor, verbose=int(verbose)) if config.values.get("guard", False) else None
    return SafetyCallbacks(guard=guard, monitor=monitor)


def build_run(
    config: TrainConfig,
    *,
    seed: int = 0,
    vec_env: str = "dummy",
    device: str = "cpu",
    checkpoint: Path | None = None,
    env_wrapper: Callable[[gym.Env], gym.Env] | None = None,
    explicit: Collection[str] = (),
) -> BuiltRun:
    """
    Build the environments and the model of a run (nothing is written to disk).

    :param config: The validated profile block
    :param seed: Seed of the model and the environments; evaluation uses ``seed + 1000``
    :param vec_env: ``dummy`` or ``subproc``
    :param device: Torch device
    :param checkpoint: A model ``.zip`` to resume from; its VecNormalize statistics (beside it)
        are loaded with it, the profile's hyperparameters apply, and the step count goes on
    :param env_wrapper: An extra gymnasium wrapper for the training environments (fault injection)
    :param explicit: Profile keys set on the command line (``normalize`` there may switch a
        checkpoint's observation normalization; see :mod:`sb3_safe.resume`)
    :return: The parts
    :raises ConfigError: When the algorithm rejects the configuration
    :raises CheckpointError: When the checkpoint is missing, damaged or does not fit the profile
    """
    saved = None if checkpoint is None else read_saved(checkpoint, device)
    normalize = config.normalize
    if saved is not None:
        normalize = normalize_plan(config, saved, explicit="normalize" in explicit)
        config = config.with_overrides({"normalize": normalize if normalize is not None else False})
    venv: VecEnv = make_env(config, seed, vec_env=vec_env, wrapper=env_wrapper, device=device)
    try:
        venv = wrap_normalize(venv, config, None if saved is None or normalize is None else saved.stats)
        model = _model(config, venv, seed, device, saved)
    except BaseException:
        venv.close()
        raise
    eval_env = make_eval_env(config, seed + 1000, normalized=isinstance(venv, VecNormalize), device=device)
    start = 0 if saved is None else saved.num_timesteps
    return BuiltRun(config, venv, eval_env, model, start, [] if saved is None else saved.changes)


def _model(config: TrainConfig, venv: VecEnv, seed: int, device: str, saved: SavedModel | None) -> OnPolicyAlgorithm:
    if saved is not None:
        return build_resumed(config, saved, venv, seed, device)
    try:
        return config.algorithm_class(config.policy, venv, seed=seed, device=device, **config.algorithm_kwargs())
    except (ValueError, AssertionError) as error:
        raise ConfigError(f"{config.where()}: {error}") from None
