"""Profiles: loading, merging, validation errors, rl-baselines3-zoo compatibility."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from stable_baselines3.common.utils import LinearSchedule
from torch import nn

from sb3_safe.config import ALGORITHMS, SCHEMA, algorithm_defaults, load_config, parse_overrides
from sb3_safe.errors import ConfigError
from sb3_safe.schedules import AdaptiveLearningRate
from sb3_safe.zoo import parse_policy_kwargs_string

PROFILE_ENVS = [
    "CartPole-v1",
    "Acrobot-v1",
    "Pendulum-v1",
    "MountainCarContinuous-v0",
    "LunarLander-v3",
    "LunarLanderContinuous-v3",
    "BipedalWalker-v3",
    "HalfCheetah-v5",
    "Hopper-v5",
]


@pytest.mark.parametrize("profile", ["safe", "baseline"])
@pytest.mark.parametrize("env_id", PROFILE_ENVS)
def test_shipped_profiles_validate_for_every_environment(profile: str, env_id: str):
    config = load_config(profile, env_id)
    assert config.n_timesteps > 0
    assert config.algorithm_kwargs()  # builds schedules and classes


def test_safe_profile_has_the_stabilizers():
    values = load_config("safe", "Ant-v5").values  # no block of its own: the default
    assert values["max_grad_norm"] == 0.5
    assert values["adv_norm_min_std"] == 0.01
    assert values["learning_rate"] == 3e-4
    assert values["critic_learning_rate"] > values["learning_rate"]
    assert values["value_loss"] == "blend"
    assert values["clip_range_vf"] == 0.2
    assert (values["kl_stop"], values["target_kl"]) == ("epoch", 0.015)
    assert values["normalize"]["norm_reward"] and values["normalize"]["clip_reward"] == 10.0
    assert values["normalize_value"] is True
    assert values["policy_kwargs"]["log_std_init"] == -0.5


def test_retuned_pendulum_block_keeps_every_stabilizer_on():
    config = load_config("safe", "Pendulum-v1")
    values = config.values
    rate = config.algorithm_kwargs()["learning_rate"]
    assert isinstance(rate, AdaptiveLearningRate) and (rate.value, rate.max_lr, rate.desired_kl) == (1e-3, 1e-3, 0.02)
    assert (values["kl_stop"], values["target_kl"], values["clip_range_vf"], values["max_grad_norm"]) == (
        "epoch",
        0.03,
        1.0,
        0.5,
    )
    assert values["normalize_value"] and values["value_loss"] == "blend" and values["adv_norm_min_std"] == 0.01
    assert values["normalize"]["norm_reward"] and not values["normalize"]["norm_obs"]
    assert values["health"] == {} and values["rollback"]["max_rollbacks"] == 3


def test_baseline_profile_is_the_aggressive_config():
    values = load_config("baseline", "Pendulum-v1").values
    assert values["learning_rate"] == 5e-3 and values["critic_learning_rate"] is None
    assert values["max_grad_norm"] == float("inf")
    assert values["normalize_advantage"] is False
    assert values["normalize_value"] is True
    assert values["value_loss"] == "mse" and values["target_kl"] is None
    assert values["normalize"] is False


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "profile.yml"
    path.write_text(text)
    return str(path)


def test_env_block_merges_over_default_key_by_key(tmp_path: Path):
    profile = write(
        tmp_path,
        """
default:
  learning_rate: 1e-3
  n_timesteps: 1000
  policy_kwargs: {log_std_init: -1.0, net_arch: [32]}
Pendulum-v1:
  n_steps: 64
  policy_kwargs: {net_arch: [64, 64]}
""",
    )
    config = load_config(profile, "Pendulum-v1")
    # 1e-3 without a dot is a string to PyYAML: accepted as a number
    assert config.values["learning_rate"] == 1e-3
    assert config.values["n_steps"] == 64
    assert config.values["policy_kwargs"] == {"log_std_init": -1.0, "net_arch": [64, 64]}
    # an env without its own block gets the default
    assert load_config(profile, "CartPole-v1").values["policy_kwargs"]["net_arch"] == [32]


def error_of(tmp_path: Path, block: str, env_id: str = "Pendulum-v1", overrides: dict[str, object] | None = None) -> str:
    profile = write(tmp_path, f"{env_id}:\n" + "".join(f"  {line}\n" for line in block.strip().splitlines()))
    with pytest.raises(ConfigError) as info:
        load_config(profile, env_id, overrides)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("learnig_rate: 3e-4", "unknown key `learnig_rate`. Did you mean 'learning_rate'?"),
        ("learning_rate: -0.001", "`learning_rate` = -0.001: must be a number > 0"),
        ("learning_rate: lin_-1", "`learning_rate` = -1: must be a number > 0"),
        ("learning_rate: fast", "`learning_rate` = 'fast' is not a number, lin_<number> or adaptive_<number>"),
        ("gamma: 1.5", "`gamma` = 1.5: must be a number in (0, 1] (discount factor)"),
        ("gamma: 0", "`gamma` = 0: must be a number in (0, 1]"),
        ("n_steps: 10.5", "`n_steps` = 10.5: must be a whole number >= 1"),
        ("use_sde: yes please", "`use_sde` = 'yes please' is not true or false"),
        ("value_loss: hubr", "`value_loss` = 'hubr' is not allowed. Did you mean 'huber'?"),
        ("algo: ppo\nvalue_loss: huber", "`value_loss` is an sb3-safe option but `algo` is ppo"),
        ("policy_kwargs: {activation_fn: relux}", "`policy_kwargs.activation_fn` = 'relux': expected one of tanh"),
        ("policy_kwargs: {net_arh: [64]}", "unknown key `policy_kwargs.net_arh`. Did you mean 'net_arch'?"),
        ("policy_kwargs: {net_arch: [64, -1]}", "`policy_kwargs.net_arch` = [64, -1]: expected list of layer sizes"),
        ("normalize: {norm_rewards: true}", "unknown key `normalize.norm_rewards`. Did you mean 'norm_reward'?"),
        ("callback: my.Callback", "`callback` (an rl-baselines3-zoo key) is not supported"),
        ("policy_kwargs: \"dict(activation_fn=__import__('os'))\"", "is not allowed. Only literals"),
        ("target_kl: null\nclip_range: null", "`clip_range` must not be null"),
        ("desired_kl: 0.02", "`desired_kl` sets the adaptive learning rate but `learning_rate` = 0.0003 is not adaptive"),
        ("learning_rate: adaptive_0.1", "`learning_rate` = 'adaptive_0.1': AdaptiveLearningRate `initial` = 0.1 is outside"),
        ("learning_rate: adaptive_-1", "`learning_rate` = -1: must be a number > 0"),
        ("learning_rate: adaptive\nadaptive_lr_factor: 0.5", "`adaptive_lr_factor` = 0.5: must be a number > 1"),
        ("learning_rate: adaptive\nalgo: ppo", "`learning_rate` = 'adaptive' needs an sb3-safe algorithm"),
        ("critic_learning_rate: adaptive", "`critic_learning_rate` = 'adaptive': only learning_rate adapts"),
    ],
)
def test_bad_values_are_one_line_errors_naming_key_value_and_range(tmp_path: Path, block: str, expected: str):
    message = error_of(tmp_path, block)
    assert expected in message
    assert "profile.yml [Pendulum-v1]" in message


def test_batch_larger_than_rollout_warns_with_the_effective_size(tmp_path: Path):
    profile = write(tmp_path, "Pendulum-v1: {n_steps: 64, n_envs: 2, batch_size: 512}\n")
    with pytest.warns(UserWarning, match=r"`batch_size` = 512 is larger than the rollout n_steps \* n_envs = 64 \* 2 = 128.*"):
        load_config(profile, "Pendulum-v1")


def test_overrides_are_validated_like_the_file(tmp_path: Path):
    assert "`n_envs` = 0: must be a whole number >= 1" in error_of(tmp_path, "n_steps: 8", overrides={"n_envs": 0})


def test_missing_block_and_unknown_profile_explain_themselves(tmp_path: Path):
    profile = write(tmp_path, "Pendulum-v1: {n_timesteps: 100}\n")
    with pytest.raises(ConfigError, match=r"no block for 'Pendulm-v1' and no `default:` block. Did you mean 'Pendulum-v1'"):
        load_config(profile, "Pendulm-v1")
    with pytest.raises(ConfigError, match=r"unknown profile 'saf'. Did you mean 'safe'"):
        load_config("saf", "Pendulum-v1")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yml"), "Pendulum-v1")


def test_invalid_yaml_names_the_line(tmp_path: Path):
    profile = write(tmp_path, "Pendulum-v1:\n  n_steps: [1, 2\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(profile, "Pendulum-v1")


def test_parse_overrides_reads_yaml_values_and_dotted_keys():
    assert parse_overrides(["learning_rate=1e-4", "policy_kwargs.net_arch=[64, 64]", "target_kl=null"]) == {
        "learning_rate": "1e-4",
        "policy_kwargs": {"net_arch": [64, 64]},
        "target_kl": None,
    }
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["learning_rate"])


ZOO_FILE = """
# A file in rl-baselines3-zoo's format (hyperparams/ppo.yml), written here to test against.
atari:
  env_wrapper:
    - stable_baselines3.common.atari_wrappers.AtariWrapper
  frame_stack: 4
  policy: 'CnnPolicy'

CartPole-v1:
  n_envs: 8
  n_timesteps: !!float 1e5
  policy: 'MlpPolicy'
  n_steps: 32
  batch_size: 256
  learning_rate: lin_0.001
  clip_range: lin_0.2

MountainCarContinuous-v0:
  normalize: true
  n_envs: 1
  n_timesteps: !!float 20000
  policy: 'MlpPolicy'
  batch_size: 256
  n_steps: 8
  learning_rate: !!float 7.77e-05
  use_sde: True
  policy_kwargs: "dict(log_std_init=-3.29, ortho_init=False)"

HalfCheetah-v4: &mujoco
  normalize: "{'norm_obs': True, 'norm_reward': False}"
  n_envs: 1
  n_timesteps: !!float 1e6
  policy: 'MlpPolicy'
  batch_size: 64
  n_steps: 512
  policy_kwargs: "dict(
                    log_std_init=-2,
                    ortho_init=False,
                    activation_fn=nn.ReLU,
                    net_arch=[dict(pi=[256, 256], vf=[256, 256])]
                  )"

Hopper-v4:
  <<: *mujoco
  batch_size: 32
"""


@pytest.mark.filterwarnings("ignore:.*larger than the rollout")
def test_zoo_file_works_as_a_profile(tmp_path: Path):
    profile = write(tmp_path, ZOO_FILE)
    cartpole = load_config(profile, "CartPole-v1")
    kwargs = cartpole.algorithm_kwargs()
    assert isinstance(kwargs["learning_rate"], LinearSchedule)
    assert kwargs["learning_rate"](1.0) == pytest.approx(1e-3)
    assert kwargs["learning_rate"](0.25) == pytest.approx(0.25e-3)
    assert cartpole.n_timesteps == 100_000 and cartpole.normalize is None

    mountain = load_config(profile, "MountainCarContinuous-v0")
    assert mountain.normalize == {}
    assert mountain.values["policy_kwargs"] == {"log_std_init": -3.29, "ortho_init": False}

    cheetah = load_config(profile, "HalfCheetah-v4")
    assert cheetah.normalize == {"norm_obs": True, "norm_reward": False}
    policy_kwargs = cheetah.algorithm_kwargs()["policy_kwargs"]
    assert policy_kwargs["activation_fn"] is nn.ReLU
    assert policy_kwargs["net_arch"] == {"pi": [256, 256], "vf": [256, 256]}  # SB3 2.x form
    hopper = load_config(profile, "Hopper-v4")  # YAML merge key
    assert hopper.values["batch_size"] == 32 and hopper.values["n_steps"] == 512


def test_policy_kwargs_strings_are_parsed_not_evaluated():
    assert parse_policy_kwargs_string("dict(net_arch=dict(pi=[64], vf=[64]), activation_fn=th.nn.Tanh)") == {
        "net_arch": {"pi": [64], "vf": [64]},
        "activation_fn": "th.nn.Tanh",
    }
    for hostile in ["__import__('os').system('true')", "dict(x=open('f'))", "dict(**globals())", "[x for x in ()]"]:
        with pytest.raises(ConfigError):
            parse_policy_kwargs_string(hostile)


def test_adaptive_learning_rate_is_built_from_its_keys(tmp_path: Path):
    profile = write(
        tmp_path,
        "Pendulum-v1: {learning_rate: adaptive_1e-3, desired_kl: 0.02, adaptive_lr_factor: 2, adaptive_lr_max: 0.005}\n",
    )
    kwargs = load_config(profile, "Pendulum-v1").algorithm_kwargs()
    rate = kwargs["learning_rate"]
    assert isinstance(rate, AdaptiveLearningRate)
    assert (rate.value, rate.desired_kl, rate.factor, rate.min_lr, rate.max_lr) == (1e-3, 0.02, 2.0, 1e-5, 0.005)
    assert not {"desired_kl", "adaptive_lr_factor", "adaptive_lr_max"} & set(kwargs)  # not SafePPO arguments
    default = load_config(profile, "Pendulum-v1", {"learning_rate": "adaptive"}).algorithm_kwargs()["learning_rate"]
    assert isinstance(default, AdaptiveLearningRate) and default.value == 3e-4


def test_every_schema_key_is_documented():
    assert all(spec.doc for spec in SCHEMA.values())


def test_reading_a_profile_imports_no_torch():
    """Checking a profile is plain data: torch, SB3 and the simulators load only to build a model."""
    code = (
        "import sys; from sb3_safe.config import load_config; "
        "[load_config(p, e) for p in ('safe', 'baseline') for e in ('Pendulum-v1', 'vmas:transport', 'CartPoleNoVel-v1')]; "
        "print(sorted(m for m in ('torch', 'stable_baselines3', 'sb3_contrib', 'vmas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_the_algorithm_tables_defaults_are_the_constructors(name: str):
    """The table keeps the defaults profile checks read without importing the class; they must be the class's own."""
    table = ALGORITHMS[name]
    from_signature = algorithm_defaults(name)
    assert {key: from_signature[key] for key in table.defaults} == dict(table.defaults)
    assert table.cls.__name__ == table.class_path.rpartition(".")[2]
