"""
Resume a saved model under a profile, the one it was trained with or another one.

A checkpoint carries weights, optimizer moments, counters and the hyperparameters it was
trained with. Resuming it under another profile (``baseline`` -> ``safe``, the workflow
``sb3-safe recover`` automates) keeps what the network *is* and applies what training
*does*:

- The weights, always. Real shape differences (network architecture, activation, policy
  class, observation or action space, gSDE) are one-line errors naming the key with the
  checkpoint's and the profile's value.
- The optimizer moments, per parameter, into the profile's parameter groups (one group, or
  actor and critic groups when ``critic_learning_rate`` is set).
- ``normalize_value`` switched on: the value statistics start empty and take the first
  rollout's returns, and the value head is rescaled then so that its predictions do not move
  (PopArt's output-preserving update, :meth:`sb3_safe.value_norm.ValueNormalizer.update`).
  Switched off: the statistics are folded into the value head. Either way the head's Adam
  moments restart (they were in the other unit).
- Observation normalization stays as the checkpoint trained with it (a policy trained on raw
  observations keeps raw observations), unless the profile's ``normalize`` is set on the
  command line; reward normalization follows the profile.
- Everything else (learning rates, losses, clipping, KL stop, epochs, health and rollback
  options) simply applies.

:func:`build_resumed` returns the model and the list of these changes in words, which training
prints and writes to ``config.yml``'s ``run_info``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from sb3_safe.checkpoints import check_archive, stats_path_for
from sb3_safe.config import TrainConfig
from sb3_safe.errors import CheckpointError, ConfigError
from sb3_safe.runs import RunFolder
from sb3_safe.schedules import AdaptiveLearningRate, adaptive_rate_of
from sb3_safe.value_norm import DEFAULT_EPSILON

__all__ = ["SavedModel", "build_resumed", "find_stats", "normalize_plan", "read_saved"]

_NORMALIZER_PREFIX = "value_normalizer."
# Hyperparameters whose change is reported (the rest of a profile applies without comment).
_REPORTED = (
    "learning_rate",
    "critic_learning_rate",
    "max_grad_norm",
    "normalize_advantage",
    "adv_norm_min_std",
    "value_loss",
    "huber_delta",
    "clip_range",
    "clip_range_vf",
    "target_kl",
    "kl_stop",
    "n_epochs",
    "n_steps",
    "batch_size",
    "gamma",
    "gae_lambda",
    "ent_coef",
    "vf_coef",
)
# policy_kwargs that only set initial values: the checkpoint's weights replace them.
_INIT_ONLY = ("log_std_init", "ortho_init")


@dataclass
class SavedModel:
    """What a saved model ``.zip`` holds, read without building a model."""

    path: Path
    #: The saved attributes (hyperparameters, spaces, counters)
    data: dict[str, Any]
    #: ``"policy"`` and ``"policy.optimizer"`` state dicts
    params: dict[str, Any]
    #: VecNormalize statistics saved with it, if found
    stats: Path | None = None
    #: The ``normalize`` value of the run that saved it, when its run folder says
    #: (``False``: no VecNormalize); ``None`` when unknown
    trained_normalize: dict[str, Any] | bool | None = None
    #: What resuming changed, in words
    changes: list[str] = field(default_factory=list)

    @property
    def num_timesteps(self) -> int:
        return int(self.data.get("num_timesteps", 0))

    @property
    def value_normalized(self) -> bool:
        return any(key.startswith(_NORMALIZER_PREFIX) for key in self.params.get("policy", {}))


def find_stats(model_path: Path) -> Path | None:
    """
    The VecNormalize statistics saved with a model: sb3-safe's name (``vecnormalize_<N>_steps.pkl``),
    SB3 ``CheckpointCallback``'s (``<prefix>_vecnormalize_<N>_steps.pkl``), or rl-zoo's
    ``vecnormalize.pkl`` beside the final model or in its ``<env id>/`` folder.

    :return: The file, or ``None``
    """
    stem = model_path.name.removesuffix(".zip")
    candidates = [stats_path_for(model_path)]
    if stem.endswith("_steps"):
        prefix, _, steps = stem.removesuffix("_steps").rpartition("_")  # rl_model_5000_steps -> rl_model, 5000
        candidates.append(model_path.with_name(f"{prefix}_vecnormalize_{steps}_steps.pkl"))
    else:
        candidates += [model_path.with_name("vecnormalize.pkl"), model_path.parent / stem / "vecnormalize.pkl"]
    return next((path for path in candidates if path.is_file()), None)


def read_saved(path: Path, device: str = "cpu") -> SavedModel:
    """
    :param path: A model ``.zip`` saved by SB3 (PPO or SafePPO)
    :param device: Torch device for the tensors
    :return: Its contents, with the statistics and the run's ``normalize`` when they can be found
    :raises CheckpointError: When the file is missing or damaged
    """
    try:
        check_archive(path)
        data, params, _ = load_from_zip_file(path, device=device)
    except CheckpointError:
        raise
    except Exception as error:  # a damaged archive raises many types (zipfile, pickle, torch)
        raise CheckpointError(
            f"checkpoint {str(path)!r} is damaged (truncated or corrupt): "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}. Use an earlier checkpoint"
        ) from None
    if data is None or "policy" not in params:
        raise CheckpointError(f"checkpoint {str(path)!r} holds no SB3 model (no policy parameters). Pass a model .zip")
    trained: dict[str, Any] | bool | None = None
    folder = RunFolder.containing(path)
    if folder is not None and folder.config_file.is_file():
        _, block, _ = folder.read_config()
        value = block.get("normalize", False)
        trained = dict(value) if isinstance(value, Mapping) else False
    return SavedModel(path, data, dict(params), find_stats(path), trained)


def normalize_plan(config: TrainConfig, saved: SavedModel, explicit: bool) -> dict[str, Any] | None:
    """
    The VecNormalize settings of the resumed run: the profile's, with observation normalization
    as the checkpoint trained (unless ``explicit``: the user set ``normalize`` on the command line).
    Adds the change to ``saved.changes``.

    :param config: The profile block
    :param saved: The checkpoint
    :param explicit: Whether ``normalize`` was set on the command line
    :return: VecNormalize keyword arguments, or ``None`` for no VecNormalize
    :raises CheckpointError: When the checkpoint's run normalized but its statistics are missing
    """
    profile = config.normalize
    trained_obs, trained_reward = _trained_flags(saved)
    if saved.trained_normalize and saved.stats is None:
        raise CheckpointError(
            f"--checkpoint {str(saved.path)!r} was trained with VecNormalize but its statistics are not beside it "
            f"({stats_path_for(saved.path).name}); without them the observation scale is lost. Use a checkpoint saved "
            "by sb3-safe with its vecnormalize_*.pkl"
        )
    want_obs = bool(profile and profile.get("norm_obs", True))
    want_reward = bool(profile and profile.get("norm_reward", True))
    obs = want_obs if explicit else trained_obs
    if explicit and want_obs != trained_obs:
        saved.changes.append(
            f"observation normalization {'on' if want_obs else 'off'} as asked (the policy was trained "
            f"{'with' if trained_obs else 'without'} it: expect a drop until it adapts)"
        )
    elif want_obs != trained_obs:
        saved.changes.append(
            f"observations stay {'normalized' if trained_obs else 'raw'} as the checkpoint trained "
            f"(the profile says norm_obs: {str(want_obs).lower()}; set normalize on the command line to change it)"
        )
    if want_reward != trained_reward:
        saved.changes.append(f"reward normalization {'on' if want_reward else 'off'}")
    if not obs and not want_reward:
        return None
    kwargs = dict(profile or {})
    kwargs.update(norm_obs=obs, norm_reward=want_reward)
    return kwargs


def _trained_flags(saved: SavedModel) -> tuple[bool, bool]:
    """Whether the checkpoint trained on normalized observations and rewards."""
    if isinstance(saved.trained_normalize, Mapping):
        return bool(saved.trained_normalize.get("norm_obs", True)), bool(saved.trained_normalize.get("norm_reward", True))
    if saved.trained_normalize is False or saved.stats is None:
        return False, False
    try:
        with saved.stats.open("rb") as f:
            # VecNormalize statistics beside the user's own checkpoint (SB3 pickles them too).
            stats = pickle.load(f)
        return bool(getattr(stats, "norm_obs", True)), bool(getattr(stats, "norm_reward", True))
    except Exception as error:
        raise CheckpointError(
            f"VecNormalize statistics {str(saved.stats)!r} cannot be read (corrupt or truncated?): {error}"
        ) from None


def build_resumed(config: TrainConfig, saved: SavedModel, venv: VecEnv, seed: int, device: str) -> OnPolicyAlgorithm:
    """
    Build the profile's model on ``venv`` and put the checkpoint's state into it.

    :param config: The profile block
    :param saved: The checkpoint (its ``changes`` get what this changed)
    :param venv: The training environments, VecNormalize already decided
    :param seed: Seed
    :param device: Torch device
    :return: The model, at the checkpoint's step count
    :raises CheckpointError: When the checkpoint does not fit the profile's network or environment
    """
    _check_spaces(saved, venv)
    _check_use_sde(config, saved)
    try:
        model = config.algorithm_class(config.policy, venv, seed=seed, device=device, **config.algorithm_kwargs())
    except (ValueError, AssertionError) as error:
        raise ConfigError(f"{config.where()}: {error}") from None
    if saved.data.get("policy_class") not in (None, model.policy_class):
        raise CheckpointError(
            f"--checkpoint {str(saved.path)!r} holds a {getattr(saved.data['policy_class'], '__name__', '?')}, the "
            f"profile builds a {model.policy_class.__name__}: policy: must match. Resume with the checkpoint's policy"
        )
    _check_activation(config, saved, model)
    state = _policy_state(saved, model)
    _check_shapes(config, saved, state, model)
    model.policy.load_state_dict(state)
    _carry_optimizer(saved, model)
    _carry_adaptive_rate(saved, model)
    for name in ("num_timesteps", "_n_updates", "_episode_num", "ep_info_buffer", "ep_success_buffer"):
        if name in saved.data and saved.data[name] is not None:
            setattr(model, name, saved.data[name])
    _report_hyperparameters(saved, model)
    return model


def _check_spaces(saved: SavedModel, venv: VecEnv) -> None:
    for name, space in (("observation", venv.observation_space), ("action", venv.action_space)):
        stored = saved.data.get(f"{name}_space")
        if stored is not None and stored != space:
            raise CheckpointError(
                f"--checkpoint {str(saved.path)!r} was trained on {name} space {stored}, this environment has {space}: "
                "it cannot act here. Resume it on the environment it was trained on"
            )


def _check_use_sde(config: TrainConfig, saved: SavedModel) -> None:
    trained, wanted = bool(saved.data.get("use_sde", False)), bool(config.get("use_sde"))
    if trained != wanted:
        raise CheckpointError(
            f"--checkpoint {str(saved.path)!r} was trained with use_sde={trained}, the profile says use_sde={wanted}; "
            f"it shapes the policy's noise parameters. Resume with --set use_sde={str(trained).lower()}"
        )


def _check_activation(config: TrainConfig, saved: SavedModel, model: OnPolicyAlgorithm) -> None:
    trained = saved.data.get("policy_kwargs", {}).get("activation_fn", nn.Tanh)
    wanted = getattr(model.policy, "activation_fn", trained)
    if trained is not wanted:
        raise CheckpointError(
            f"--checkpoint {str(saved.path)!r} was trained with policy_kwargs.activation_fn {trained.__name__}, the "
            f"profile says {wanted.__name__}. Resume with --set policy_kwargs={_kwargs_text(saved)}"
        )


def _kwargs_text(saved: SavedModel) -> str:
    kwargs = dict(saved.data.get("policy_kwargs", {}))
    parts = []
    for key, value in kwargs.items():
        if isinstance(value, type):
            value = value.__name__.lower()
        parts.append(f"{key}: {value}")
    return "{" + ", ".join(parts) + "}"


def _policy_state(saved: SavedModel, model: OnPolicyAlgorithm) -> dict[str, th.Tensor]:
    """The checkpoint's policy weights, with the value statistics switched to what ``model`` has."""
    state = dict(saved.params["policy"])
    normalizer = getattr(model, "value_normalizer", None)
    if saved.value_normalized and normalizer is None:
        mean = state.pop(_NORMALIZER_PREFIX + "mean")
        var = state.pop(_NORMALIZER_PREFIX + "var")
        state.pop(_NORMALIZER_PREFIX + "count", None)
        std = th.sqrt(var + DEFAULT_EPSILON)
        weight, bias = _head_keys(model)
        state[weight] = (state[weight].double() * std).to(state[weight].dtype)
        state[bias] = (state[bias].double() * std + mean).to(state[bias].dtype)
        saved.changes.append(
            f"normalize_value off: the value statistics (mean {float(mean):.4g}, std {float(std):.4g}) folded into the "
            "value head; predictions unchanged"
        )
    elif normalizer is not None and not saved.value_normalized:
        fresh = normalizer.state_dict()
        for key, value in fresh.items():
            state[_NORMALIZER_PREFIX + key] = value.clone()
        # count 0 marks "no returns seen": the first update takes the rollout's statistics and
        # rescales the head so the predictions do not move (ValueNormalizer.update).
        state[_NORMALIZER_PREFIX + "mean"] = th.zeros((), dtype=th.float64)
        state[_NORMALIZER_PREFIX + "var"] = th.ones((), dtype=th.float64) - normalizer.epsilon
        state[_NORMALIZER_PREFIX + "count"] = th.zeros((), dtype=th.float64)
        saved.changes.append(
            "normalize_value on: value statistics start from the first rollout's returns, value head rescaled then "
            "so its predictions do not change"
        )
    return state


def _head_keys(model: OnPolicyAlgorithm) -> tuple[str, str]:
    head = getattr(model.policy, "value_net", None)
    if not isinstance(head, nn.Linear):
        raise CheckpointError(
            f"normalize_value cannot be switched for a value_net of type {type(head).__name__} (a Linear layer is "
            "needed to rescale it). Resume with the checkpoint's normalize_value"
        )
    return "value_net.weight", "value_net.bias"


def _check_shapes(config: TrainConfig, saved: SavedModel, state: Mapping[str, th.Tensor], model: OnPolicyAlgorithm) -> None:
    expected = model.policy.state_dict()
    for key in sorted(set(expected) | set(state)):
        ours, theirs = expected.get(key), state.get(key)
        if ours is not None and theirs is not None and ours.shape == theirs.shape:
            continue
        detail = (
            f"{key} is {tuple(theirs.shape) if theirs is not None else 'absent'} in the checkpoint, "
            f"{tuple(ours.shape) if ours is not None else 'absent'} with the profile"
        )
        raise CheckpointError(
            f"--checkpoint {str(saved.path)!r} does not fit the profile's network: {detail} (policy_kwargs: checkpoint "
            f"{_kwargs_text(saved)}, profile {config.values.get('policy_kwargs', {})}). Resume with "
            f"--set policy_kwargs={_kwargs_text(saved)}"
        )


def _parameter_order(model: OnPolicyAlgorithm, separate_critic: bool) -> list[str]:
    """Parameter names in the order an optimizer built by (Safe)PPO numbers them."""
    names = [name for name, _ in model.policy.named_parameters()]
    if not separate_critic or not hasattr(model, "_critic_parameters"):
        return names
    critic_ids = model._critic_parameters()
    critic = {name for name, p in model.policy.named_parameters() if id(p) in critic_ids}
    return [n for n in names if n not in critic] + [n for n in names if n in critic]


def _carry_optimizer(saved: SavedModel, model: OnPolicyAlgorithm) -> None:
    """Move each parameter's optimizer state into the model's groups."""
    old = saved.params.get("policy.optimizer")
    optimizer = model.policy.optimizer
    trained_groups = 1 if saved.data.get("critic_learning_rate") is None else 2
    new_groups = len(optimizer.param_groups)
    if old is None:
        saved.changes.append("optimizer state not in the checkpoint: Adam moments start afresh")
        return
    old_order = _parameter_order(model, separate_critic=trained_groups == 2)
    sizes = [len(group["params"]) for group in old["param_groups"]]
    params = dict(model.policy.named_parameters())
    fits = sum(sizes) == len(old_order) and all(
        not isinstance(value, th.Tensor) or value.dim() == 0 or value.shape == params[old_order[index]].shape
        for index, entry in old["state"].items()
        if index < len(old_order)
        for value in entry.values()
    )
    if len(sizes) != trained_groups or not fits:
        saved.changes.append("optimizer state does not match the network's parameters: Adam moments start afresh")
        return
    reset = set()
    if saved.value_normalized != (getattr(model, "value_normalizer", None) is not None):
        reset = {"value_net.weight", "value_net.bias"}
        saved.changes.append("value head's Adam moments restart (its outputs changed unit)")
    old_index = {name: index for index, name in enumerate(old_order)}
    names = {id(p): name for name, p in params.items()}
    new_state = optimizer.state_dict()
    carried: dict[int, Any] = {}
    position = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            entry = old["state"].get(old_index[name])
            if entry is not None and name not in reset:
                carried[position] = entry
            position += 1
    new_state["state"] = carried
    optimizer.load_state_dict(new_state)
    if new_groups != trained_groups:
        saved.changes.append(
            f"optimizer rebuilt with {new_groups} parameter group{'s' if new_groups > 1 else ''} "
            f"({'actor and critic' if new_groups == 2 else 'one learning rate'}); every parameter keeps its Adam moments"
        )


def _carry_adaptive_rate(saved: SavedModel, model: OnPolicyAlgorithm) -> None:
    """An adaptive rate goes on from where the checkpoint's had got to (within the profile's bounds)."""
    trained, rate = saved.data.get("learning_rate"), adaptive_rate_of(model)
    if isinstance(trained, AdaptiveLearningRate) and rate is not None:
        rate.value = min(max(trained.value, rate.min_lr), rate.max_lr)
        saved.changes.append(f"adaptive learning rate continues at {rate.value:.3g}, where the checkpoint's had got to")


def _describe(value: Any) -> str:
    if isinstance(value, AdaptiveLearningRate):
        return (
            f"adaptive (desired_kl {value.desired_kl:g}, factor {value.factor:g}, bounds [{value.min_lr:g}, {value.max_lr:g}])"
        )
    if callable(value):
        try:
            return f"{float(value(1.0)):.3g} (schedule)"
        except Exception:
            return repr(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _report_hyperparameters(saved: SavedModel, model: OnPolicyAlgorithm) -> None:
    for key in _REPORTED:
        if key not in saved.data or not hasattr(model, key):
            continue
        before, after = _describe(saved.data[key]), _describe(getattr(model, key))
        if before != after:
            if key == "critic_learning_rate" and saved.data[key] is None:
                after += ": a critic group of its own"
            saved.changes.append(f"{key} {before} -> {after}")
    kwargs = saved.data.get("policy_kwargs", {})
    profile_kwargs = getattr(model, "policy_kwargs", {})
    for key in _INIT_ONLY:
        if kwargs.get(key) != profile_kwargs.get(key) and key in profile_kwargs:
            saved.changes.append(f"policy_kwargs.{key} ignored: it sets initial values, the checkpoint's weights are kept")
