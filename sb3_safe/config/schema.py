"""
What every profile key accepts (:data:`SCHEMA`), and the names profiles use for classes.

Plain data: nothing here imports torch. The names of activations and optimizers are resolved
to torch classes when a model is built (:meth:`~sb3_safe.config.TrainConfig.algorithm_kwargs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sb3_safe.callback_options import MonitorOptions, RollbackOptions
from sb3_safe.config.algorithms import ALGORITHMS, KL_STOPS
from sb3_safe.health.thresholds import Thresholds
from sb3_safe.options import Kind, interval_text

__all__ = [
    "ACTIVATIONS",
    "ADAPTIVE_KEYS",
    "ADAPTIVE_PREFIX",
    "CALLBACK_OPTIONS",
    "OPTIMIZERS",
    "POLICY_KWARGS",
    "SCHEMA",
    "VEC_NORMALIZE_KEYS",
    "ZOO_UNSUPPORTED",
    "Spec",
]

#: ``activation_fn:`` names -> ``torch.nn`` class names
ACTIVATIONS: dict[str, str] = {
    "tanh": "Tanh",
    "relu": "ReLU",
    "elu": "ELU",
    "leaky_relu": "LeakyReLU",
    "gelu": "GELU",
    "silu": "SiLU",
    "selu": "SELU",
}
#: ``optimizer_class:`` names -> ``torch.optim`` class names
OPTIMIZERS: dict[str, str] = {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}
#: The option classes behind the ``health:`` and ``rollback:`` blocks: their fields are the keys,
#: their annotated types say what each accepts (:mod:`sb3_safe.options`).
CALLBACK_OPTIONS: dict[str, tuple[type[Any], ...]] = {
    "health": (Thresholds, MonitorOptions),
    "rollback": (RollbackOptions,),
}
VEC_NORMALIZE_KEYS = {
    "norm_obs": "bool",
    "norm_reward": "bool",
    "clip_obs": "float",
    "clip_reward": "float",
    "epsilon": "float",
}


@dataclass(frozen=True)
class Spec:
    """What one profile key accepts."""

    #: A key of :data:`VALIDATORS`
    kind: str
    doc: str
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False
    #: Only SafePPO has it (``algo: ppo`` rejects it)
    safe_only: bool = False
    #: Passed to the algorithm's constructor (otherwise it configures the run)
    algorithm: bool = True

    def range_text(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        return interval_text(self.low, self.high, self.low_open, self.high_open)

    def number_kind(self, integer: bool = False) -> Kind:
        """:return: The :class:`~sb3_safe.options.Kind` that checks this key's numbers"""
        return Kind.interval(self.doc, self.low, self.high, low_open=self.low_open, high_open=self.high_open, integer=integer)


def _run(kind: str, doc: str, **kwargs: Any) -> Spec:
    return Spec(kind, doc, algorithm=False, **kwargs)


SCHEMA: dict[str, Spec] = {
    # -- the run
    "algo": _run(
        "choice",
        "safe_ppo, safe_recurrent_ppo, safe_maskable_ppo (sb3-safe) or ppo, recurrent_ppo, maskable_ppo (SB3, sb3-contrib)",
        choices=tuple(ALGORITHMS),
    ),
    "n_timesteps": _run("int", "environment steps to train for", low=1),
    "n_envs": _run("int", "parallel environment copies", low=1),
    "normalize": _run("normalize", "VecNormalize: true, false, or a mapping of its arguments"),
    "env_kwargs": _run("mapping", "keyword arguments of gymnasium.make"),
    "env_wrapper": _run("wrappers", "gymnasium wrappers: dotted class paths, optionally with kwargs"),
    "frame_stack": _run("int", "VecFrameStack size", low=1, nullable=True),
    "health": _run("health", "HealthMonitorCallback: a mapping of thresholds (null or false: off)", nullable=True),
    "rollback": _run("rollback", "RollbackCallback: a mapping of its options (null or false: off)", nullable=True),
    "keep_checkpoints": _run(
        "int", "keep this many newest checkpoints and spaced-out older ones (null: no count bound)", low=1, nullable=True
    ),
    "checkpoint_budget_mb": _run(
        "float",
        "the most the checkpoints may take on disk, in MiB; older ones are thinned past it (null: no budget)",
        low=0,
        low_open=True,
        nullable=True,
    ),
    "guard": _run("bool", "NonFiniteGuardCallback: zero NaN/inf observations and rewards (always on with rollback)"),
    # -- multi-agent (pettingzoo:<module> environments)
    "centralized_critic": _run("bool", "MAPPO: the critic sees the global state, each actor its own observation"),
    "agent_id": _run("bool", "append a one-hot agent index to each agent's observation (and to the global state)"),
    "pettingzoo_adapter": _run(
        "choice",
        "sb3_safe (PettingZooVecEnv) or supersuit (SuperSuit's VecEnv as SB3 users build it, for comparison)",
        choices=("sb3_safe", "supersuit"),
    ),
    # -- SB3's PPO
    "policy": Spec(
        "choice",
        "policy alias (the Lstm ones for recurrent algorithms)",
        choices=("MlpPolicy", "CnnPolicy", "MultiInputPolicy", "MlpLstmPolicy", "CnnLstmPolicy", "MultiInputLstmPolicy"),
    ),
    "policy_kwargs": Spec("policy_kwargs", "policy arguments (mapping, or the zoo's dict(...) string)"),
    "learning_rate": Spec(
        "schedule", "actor learning rate (float, lin_<float>, adaptive or adaptive_<initial float>)", low=0, low_open=True
    ),
    "n_steps": Spec("int", "steps per environment per rollout", low=1),
    "batch_size": Spec("int", "minibatch size", low=1),
    "n_epochs": Spec("int", "epochs per update", low=1),
    "gamma": Spec("float", "discount factor", low=0, low_open=True, high=1),
    "gae_lambda": Spec("float", "GAE lambda", low=0, high=1),
    "clip_range": Spec("schedule", "policy clip range (float or lin_<float>)", low=0, low_open=True),
    "clip_range_vf": Spec("schedule", "value clip range, max form (null: off)", low=0, low_open=True, nullable=True),
    "normalize_advantage": Spec("bool", "normalize advantages per minibatch"),
    "ent_coef": Spec("float", "entropy coefficient", low=0),
    "vf_coef": Spec("float", "value loss coefficient", low=0, low_open=True),
    "max_grad_norm": Spec("float", "gradient clipping norm (.inf: no clipping)", low=0, low_open=True),
    "use_sde": Spec("bool", "generalized state-dependent exploration"),
    "sde_sample_freq": Spec("int", "gSDE noise resampling period (-1: once per rollout)", low=-1),
    "target_kl": Spec("float", "KL target for early stopping (null: off)", low=0, low_open=True, nullable=True),
    "stats_window_size": Spec("int", "episodes averaged in rollout/ep_rew_mean", low=1),
    # -- SafePPO
    "value_loss": Spec("choice", "critic loss", choices=("mse", "huber", "blend"), safe_only=True),
    "huber_delta": Spec("float", "Huber delta", low=0, low_open=True, safe_only=True),
    "critic_learning_rate": Spec(
        "schedule", "critic learning rate (null: learning_rate)", low=0, low_open=True, nullable=True, safe_only=True
    ),
    "kl_stop": Spec("choice", "KL early-stopping rule", choices=KL_STOPS, safe_only=True),
    "adv_norm_min_std": Spec("float", "only centre advantages below this std", low=0, safe_only=True),
    "normalize_value": Spec("bool", "running normalization of value targets", safe_only=True),
    # -- the KL-adaptive learning rate (learning_rate: adaptive), see sb3_safe.schedules
    "desired_kl": _run(
        "float", "approx KL each update aims at (learning_rate: adaptive)", low=0, low_open=True, safe_only=True
    ),
    "adaptive_lr_factor": _run("float", "the adaptive rate's step per update", low=1, low_open=True, safe_only=True),
    "adaptive_lr_min": _run("float", "the adaptive rate's lower bound", low=0, low_open=True, safe_only=True),
    "adaptive_lr_max": _run("float", "the adaptive rate's upper bound", low=0, low_open=True, safe_only=True),
}

#: The profile keys of the adaptive learning rate, by :class:`~sb3_safe.schedules.AdaptiveLearningRate` field.
ADAPTIVE_KEYS = {
    "desired_kl": "desired_kl",
    "adaptive_lr_factor": "factor",
    "adaptive_lr_min": "min_lr",
    "adaptive_lr_max": "max_lr",
}
ADAPTIVE_PREFIX = "adaptive"

#: Keys of rl-baselines3-zoo files that sb3-safe cannot honour, with what to do instead.
ZOO_UNSUPPORTED = {
    "callback": "callbacks are not read from profiles; sb3-safe adds checkpoints, evaluation and health callbacks itself",
    "vec_env_wrapper": "VecEnv wrappers other than VecNormalize and VecFrameStack are not supported",
    "eval_env_kwargs": "the evaluation environment uses env_kwargs",
    "monitor_kwargs": "the Monitor wrapper is added with its defaults",
}

POLICY_KWARGS: dict[str, str] = {
    "net_arch": "list of layer sizes, or {pi: [...], vf: [...]}",
    "activation_fn": "one of " + ", ".join(ACTIVATIONS),
    "log_std_init": "float",
    "ortho_init": "bool",
    "share_features_extractor": "bool",
    "full_std": "bool",
    "use_expln": "bool",
    "squash_output": "bool",
    "normalize_images": "bool",
    "optimizer_class": "one of " + ", ".join(OPTIMIZERS),
    "optimizer_kwargs": "mapping of optimizer arguments, e.g. {eps: 1e-5}",
    # sb3-contrib's recurrent policies
    "lstm_hidden_size": "int >= 1 (recurrent policies)",
    "n_lstm_layers": "int >= 1 (recurrent policies)",
    "shared_lstm": "bool (recurrent policies)",
    "enable_critic_lstm": "bool (recurrent policies)",
}
