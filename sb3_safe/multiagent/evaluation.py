"""
Evaluation of a shared multi-agent policy by **team return**: the sum of every agent's return
over an episode, one number per episode (SB3's ``evaluate_policy`` would count each agent's
slot as an episode of its own).
"""

from __future__ import annotations

import os

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

__all__ = ["TeamEvalCallback", "evaluate_team"]


def evaluate_team(
    model: BaseAlgorithm, env: VecEnv, n_eval_episodes: int = 10, deterministic: bool = True
) -> tuple[list[float], list[int]]:
    """
    Run whole episodes of a :class:`~sb3_safe.multiagent.PettingZooVecEnv` (possibly wrapped, e.g.
    in VecNormalize) and return each episode's team return and length.

    The environment is reset first; with several copies the first ``n_eval_episodes`` episodes
    to finish are counted.

    :param model: The model acting for every agent
    :param env: The multi-agent VecEnv (true rewards: VecNormalize with ``norm_reward=False``)
    :param n_eval_episodes: Episodes to count
    :param deterministic: Greedy actions
    :return: Team returns and episode lengths
    """
    returns: list[float] = []
    lengths: list[int] = []
    obs = env.reset()
    while len(returns) < n_eval_episodes:
        actions, _ = model.predict(obs, deterministic=deterministic)  # type: ignore[arg-type]
        obs, _, _, infos = env.step(actions)
        for info in infos:
            team = info.get("team_episode")
            if team is not None and len(returns) < n_eval_episodes:
                returns.append(float(team["r"]))
                lengths.append(int(team["l"]))
    return returns, lengths


class TeamEvalCallback(EvalCallback):
    """
    SB3's ``EvalCallback`` (same arguments, same ``evaluations.npz``, logger keys and best-model
    callback) with each evaluation episode scored by its team return (:func:`evaluate_team`).
    """

    def _on_step(self) -> bool:
        if self.eval_freq <= 0 or self.n_calls % self.eval_freq != 0:
            return True
        if self.model.get_vec_normalize_env() is not None:
            sync_envs_normalization(self.training_env, self.eval_env)
        rewards, lengths = evaluate_team(self.model, self.eval_env, self.n_eval_episodes, self.deterministic)
        if self.log_path is not None:
            self.evaluations_timesteps.append(self.num_timesteps)
            self.evaluations_results.append(rewards)
            self.evaluations_length.append(lengths)
            np.savez(
                self.log_path,
                timesteps=self.evaluations_timesteps,
                results=self.evaluations_results,
                ep_lengths=self.evaluations_length,
            )
        mean = float(np.mean(rewards))
        self.last_mean_reward = mean
        if self.verbose >= 1:
            print(f"Eval num_timesteps={self.num_timesteps}, team return={mean:.2f} +/- {np.std(rewards):.2f}")
        self.logger.record("eval/mean_reward", mean)
        self.logger.record("eval/mean_ep_length", float(np.mean(lengths)))
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(self.num_timesteps)
        continue_training = True
        if mean > self.best_mean_reward:
            self.best_mean_reward = mean
            if self.best_model_save_path is not None:
                self.model.save(os.path.join(self.best_model_save_path, "best_model"))
            if self.callback_on_new_best is not None:
                continue_training = self.callback_on_new_best.on_step()
        if self.callback is not None:
            continue_training = continue_training and self._on_event()
        return continue_training
