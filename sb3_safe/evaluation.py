"""
Evaluation that fits the model and the environment: SB3's, sb3-contrib's masked one, or team
returns on a PettingZoo environment; and a saved policy evaluated in its run's environment
(:func:`evaluate`, ``sb3-safe eval``). Training, the benchmark and the tuner all evaluate through here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from sb3_safe.checkpoints import load_model, stats_path_for
from sb3_safe.config import load_config
from sb3_safe.envs import load_vec_normalize, make_env
from sb3_safe.errors import RunFolderError
from sb3_safe.multiagent import TeamEvalCallback, evaluate_team
from sb3_safe.multiagent.team import unwrap_team
from sb3_safe.runs import RunFolder

__all__ = [
    "EvalResult",
    "episode_returns",
    "eval_callback_class",
    "evaluate",
    "evaluate_model",
    "is_masked",
    "load_policy",
]


def is_masked(model: OnPolicyAlgorithm) -> bool:
    """Whether the model acts with invalid-action masks (sb3-contrib's MaskablePPO and SafeMaskablePPO)."""
    from sb3_contrib import MaskablePPO

    return isinstance(model, MaskablePPO)


def eval_callback_class(model: OnPolicyAlgorithm, eval_env: VecEnv) -> type[EvalCallback]:
    """
    :return: SB3's EvalCallback; sb3-contrib's MaskableEvalCallback, which passes the masks to
        ``predict``; or, on a multi-agent environment, :class:`~sb3_safe.multiagent.TeamEvalCallback`
        (team returns)
    """
    if unwrap_team(eval_env) is not None:
        return TeamEvalCallback
    if is_masked(model):
        from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback

        return MaskableEvalCallback
    return EvalCallback


def episode_returns(model: OnPolicyAlgorithm, venv: VecEnv, episodes: int, deterministic: bool = True) -> list[float]:
    """
    :return: The return of each of ``episodes`` episodes (team returns on a PettingZoo environment),
        in the order they ended
    """
    # SB3's evaluate_policy threads a recurrent policy's LSTM states; masks need sb3-contrib's;
    # a multi-agent episode is scored once, by its team return.
    if unwrap_team(venv) is not None:
        team, _ = evaluate_team(model, venv, episodes, deterministic)
        return [float(r) for r in team]
    if is_masked(model):
        from sb3_contrib.common.maskable.evaluation import evaluate_policy as evaluate_masked

        returns, _ = evaluate_masked(
            model,  # type: ignore[arg-type]
            venv,
            n_eval_episodes=episodes,
            deterministic=deterministic,
            return_episode_rewards=True,
        )
    else:
        returns, _ = evaluate_policy(
            model, venv, n_eval_episodes=episodes, deterministic=deterministic, return_episode_rewards=True
        )
    assert isinstance(returns, list)
    return [float(r) for r in returns]


def evaluate_model(model: OnPolicyAlgorithm, venv: VecEnv, episodes: int, deterministic: bool = True) -> tuple[float, float]:
    """
    :return: Mean and std of the episode returns (team returns on a PettingZoo environment)
    """
    returns = episode_returns(model, venv, episodes, deterministic)
    return float(np.mean(returns)), float(np.std(returns))


@dataclass(frozen=True)
class EvalResult:
    mean: float
    std: float
    episodes: int
    model_path: Path
    #: Each episode's return, in the order they ended (the same episodes for every model evaluated with one seed)
    returns: list[float] = field(default_factory=list)


def load_policy(
    target: Path, *, seed: int = 0, device: str = "cpu", run: Path | None = None, render: bool = False
) -> tuple[OnPolicyAlgorithm, Any, Path]:
    """
    A saved policy in its evaluation environment: the run's environment (one copy), its saved VecNormalize statistics
    frozen (observations normalized as in training, rewards not), seeded.

    :param target: A run folder (its ``model.zip``) or a model ``.zip`` in one
    :param seed: Seed of the environment
    :param device: Torch device
    :param run: The run folder whose ``config.yml`` says the environment and algorithm (default: the model's)
    :param render: Make the environment render ``rgb_array`` frames (``VecEnv.render()``)
    :return: The model, the VecEnv, and the model's path
    """
    if not target.exists():
        raise RunFolderError(f"{str(target)!r} does not exist. Pass a run folder or a model .zip inside one")
    model_path = RunFolder(target).final_model if target.is_dir() else target
    if not model_path.is_file():
        found = sorted(p.name for p in target.glob("*.zip")) if target.is_dir() else []
        raise RunFolderError(
            f"no model.zip in {str(target)!r}{' (found ' + ', '.join(found) + ')' if found else ''}; pass a model file"
        )
    folder = RunFolder.containing(model_path) if run is None else RunFolder(run)
    if folder is None:
        raise RunFolderError(f"no config.yml beside {str(model_path)!r}: evaluate a model inside an sb3-safe run folder")
    env_id, _, _ = folder.read_config()
    config = load_config(str(folder.config_file), env_id)
    if render and not config.multiagent:  # Gymnasium renders frames only when made to (VMAS always can)
        config = config.with_overrides({"env_kwargs": {"render_mode": "rgb_array"}})
    venv = make_env(config, seed, n_envs=1, evaluation=True)
    stats = stats_path_for(model_path)
    if stats.is_file():
        venv = load_vec_normalize(stats, venv)
        venv.training = False
        venv.norm_reward = False
    model = load_model(config.algorithm_class, model_path, venv, device)
    # Loading re-seeds the environment with the model's training seed (SB3's set_random_seed): seed it again.
    venv.seed(seed)
    return model, venv, model_path


def evaluate(
    target: Path,
    *,
    episodes: int = 10,
    seed: int = 0,
    deterministic: bool = True,
    device: str = "cpu",
    run: Path | None = None,
) -> EvalResult:
    """
    Evaluate a run folder or a model file from one, with its saved VecNormalize statistics
    (observations normalized as in training, rewards not normalized).

    :param target: A run folder (its ``model.zip``) or a model ``.zip`` in one
    :param episodes: Number of episodes
    :param seed: Seed of the evaluation environment
    :param deterministic: Greedy actions
    :param device: Torch device
    :param run: The run folder whose ``config.yml`` says the environment and algorithm (default: the one the
        model is in; another for a plain SB3 checkpoint evaluated in the environment of the run recovered from it)
    :return: Mean and std of the episode returns
    """
    model, venv, model_path = load_policy(target, seed=seed, device=device, run=run)
    returns = episode_returns(model, venv, episodes, deterministic)
    venv.close()
    return EvalResult(float(np.mean(returns)), float(np.std(returns)), episodes, model_path, returns)
