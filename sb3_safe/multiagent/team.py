"""
:class:`TeamVecEnv`: what sb3-safe's multi-agent VecEnvs share, so evaluation and training can
tell a team environment from a single-agent one without knowing which simulator is behind it.
"""

from __future__ import annotations

from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvWrapper

from sb3_safe.slots import MonitoredSlots

__all__ = ["TeamVecEnv", "unwrap_team"]


class TeamVecEnv(MonitoredSlots):
    """
    A VecEnv with one slot per agent of each copy of a multi-agent environment (agent ``i`` of
    copy ``k`` at slot ``k * n_agents + i``), all agents acting through one shared policy.

    When a copy's episode ends, its first slot's info holds ``team_episode``: ``{"r": team
    return, "l": length}``, the team return being the sum of every agent's return.
    """

    #: Agents (slots) per copy
    n_agents: int


def unwrap_team(venv: VecEnv) -> TeamVecEnv | None:
    """:return: The :class:`TeamVecEnv` under ``venv``'s VecEnv wrappers, or ``None``"""
    while isinstance(venv, VecEnvWrapper):
        venv = venv.venv
    return venv if isinstance(venv, TeamVecEnv) else None
