"""
Evaluation that fits the model and the environment: SB3's, sb3-contrib's masked one, or team
returns on a PettingZoo environment. Training, ``sb3-safe eval``, the benchmark and the tuner
all evaluate through here.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from sb3_safe.multiagent import TeamEvalCallback, evaluate_team
from sb3_safe.multiagent.team import unwrap_team

__all__ = ["episode_returns", "eval_callback_class", "evaluate_model", "is_masked"]


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
