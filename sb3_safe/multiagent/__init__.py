"""
Multi-agent training on PettingZoo parallel environments: one shared policy for every agent,
and MAPPO's centralized critic.

- :class:`PettingZooVecEnv`: the environment as an SB3 VecEnv, one slot per agent (``--env
  pettingzoo:<module>``).
- :class:`VmasVecEnv`: VMAS's batched simulator as an SB3 VecEnv, every copy stepped in one call
  (``--env vmas:<scenario>``).
- :class:`CentralizedCriticPolicy`: actor on the agent's own observation, critic on the global state.
- :func:`evaluate_team` / :class:`TeamEvalCallback`: evaluation by team return.
"""

from sb3_safe.multiagent.evaluation import TeamEvalCallback, evaluate_team
from sb3_safe.multiagent.policy import CentralizedCriticPolicy, KeyExtractor
from sb3_safe.multiagent.team import TeamVecEnv, unwrap_team
from sb3_safe.multiagent.vec_env import PREFIX, PettingZooVecEnv, is_pettingzoo, make_parallel_env
from sb3_safe.multiagent.vmas import VmasVecEnv, is_vmas

__all__ = [
    "PREFIX",
    "CentralizedCriticPolicy",
    "KeyExtractor",
    "PettingZooVecEnv",
    "TeamEvalCallback",
    "TeamVecEnv",
    "VmasVecEnv",
    "evaluate_team",
    "is_pettingzoo",
    "is_vmas",
    "make_parallel_env",
    "unwrap_team",
]
