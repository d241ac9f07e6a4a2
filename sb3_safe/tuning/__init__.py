"""Optuna tuning of SafePPO/PPO profiles: search space, stability-aware objective, studies and reports."""

from sb3_safe.tuning.objective import ObjectiveSettings, TrialObjective, score
from sb3_safe.tuning.space import SearchSpace, load_space
from sb3_safe.tuning.study import TuneSettings, open_study, run_tuning

__all__ = [
    "ObjectiveSettings",
    "SearchSpace",
    "TrialObjective",
    "TuneSettings",
    "load_space",
    "open_study",
    "run_tuning",
    "score",
]
