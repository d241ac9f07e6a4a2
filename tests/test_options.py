"""Options checked from their types: every kind, every option class, the profile and the command line."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from sb3_safe.callbacks import HealthMonitorCallback, MonitorOptions, RollbackCallback, RollbackOptions
from sb3_safe.cli import main
from sb3_safe.config import SCHEMA, VALIDATORS, Spec, load_config
from sb3_safe.config.checks import _check
from sb3_safe.errors import ConfigError
from sb3_safe.health import Thresholds
from sb3_safe.options import KINDS, OptionError, check_mapping, option_kinds

ACCEPTED: dict[str, list[Any]] = {
    "count": [1, 3, 3.0, "20"],
    "count or zero": [0, 1, 7],
    "fraction": [1e-9, 0.5, 1],
    "fraction or zero": [0, 0.3, 1],
    "factor": [0.1, 1.0],
    "multiple": [1.01, 10],
    "positive": [1e-12, 5],
    "non-negative": [0, 2.5],
    "any finite": [-1e9, -2, 0, 3.5],
}
REJECTED: dict[str, list[Any]] = {
    "count": [0, -1, 2.5, math.inf, math.nan, True, "many", None, [3]],
    "count or zero": [-1, 0.5, math.inf],
    "fraction": [0, -0.1, 1.5, math.nan],
    "fraction or zero": [-0.1, 1.01],
    "factor": [0, 2, -0.5],
    "multiple": [1, 0.5, math.inf],
    "positive": [0, -1, math.inf],
    "non-negative": [-1e-9, math.nan],
    "any finite": [math.inf, -math.inf, math.nan, "x"],
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_accepts_and_rejects_what_it_says(kind: str):
    assert set(ACCEPTED) == set(KINDS) == set(REJECTED)
    for value in ACCEPTED[kind]:
        KINDS[kind].check("x", value)
    for value in REJECTED[kind]:
        with pytest.raises(OptionError, match=r"`x` = .*: must be"):
            KINDS[kind].check("x", value)


def test_counts_come_back_as_ints():
    assert KINDS["count"].check("n", 3.0) == 3 and isinstance(KINDS["count"].check("n", "3"), int)


@pytest.mark.parametrize("cls", [Thresholds, MonitorOptions, RollbackOptions])
def test_every_option_has_a_kind_and_its_default_passes(cls: type[Any]):
    kinds = option_kinds(cls)
    assert list(kinds) == [f.name for f in dataclasses.fields(cls)]
    cls()  # the defaults are valid


def test_a_field_without_a_kind_is_a_programming_error():
    @dataclasses.dataclass
    class Bad:
        window: int = 3

    with pytest.raises(TypeError, match=r"Bad\.window has no option kind"):
        option_kinds(Bad)


def test_python_api_checks_the_same_way():
    with pytest.raises(OptionError, match="frozen_updates"):
        Thresholds(frozen_updates=2.5)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="lr_factor"):
        RollbackCallback(lr_factor=2)
    with pytest.raises(OptionError, match="quiet_updates"):
        HealthMonitorCallback(quiet_updates=-1)
    with pytest.raises(OptionError, match="confirm_max_updates"):
        RollbackOptions(confirm_updates=4, confirm_max_updates=2)
    assert Thresholds(collapse_explained_variance=-2).collapse_explained_variance == -2


def test_check_mapping_names_unknown_keys_with_a_suggestion():
    with pytest.raises(OptionError, match=r"unknown key `health.frozen_updatez`. Did you mean 'frozen_updates'"):
        check_mapping((Thresholds, MonitorOptions), {"frozen_updatez": 3}, prefix="health.")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"health": {"frozen_updates": 2.5}}, r"`health.frozen_updates` = 2.5: must be a whole number >= 1"),
        ({"health": {"reward_collapse_fraction": 0}}, r"`health.reward_collapse_fraction` = 0: must be a number in \(0, 1\]"),
        ({"health": {"kl_spike_factor": 1}}, r"`health.kl_spike_factor` = 1: must be a number > 1"),
        ({"health": {"collapse_explained_variance": float("inf")}}, r"must be any finite number"),
        ({"health": {"quiet_updates": -2}}, r"`health.quiet_updates` = -2: must be a whole number >= 0"),
        ({"rollback": {"lr_factor": 2}}, r"`rollback.lr_factor` = 2: must be a number in \(0, 1\]"),
        ({"rollback": {"max_rollbacks": 1.5}}, r"`rollback.max_rollbacks` = 1.5"),
        ({"rollback": {"confirm_updates": 5, "confirm_max_updates": 3}}, r"`confirm_max_updates` = 3: must be >= "),
    ],
)
def test_profile_rejects_each_bad_option_naming_it(override: dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=message):
        load_config("safe", "Pendulum-v1", override)


def test_profile_accepts_a_negative_explained_variance_threshold():
    config = load_config("safe", "Pendulum-v1", {"health": {"collapse_explained_variance": -2}})
    assert config.callback_options("health") == {"collapse_explained_variance": -2.0}


def test_every_spec_kind_has_a_validator_and_an_unknown_kind_is_an_error():
    assert {spec.kind for spec in SCHEMA.values()} <= set(VALIDATORS)
    with pytest.raises(KeyError):
        _check("x", Spec("complex", "no such kind"), 1, "here")


@pytest.mark.parametrize(
    "args",
    [
        ["--timesteps", "inf"],
        ["--timesteps", "nan"],
        ["--timesteps", "-5"],
        ["--timesteps", "2.5"],
        ["--n-envs", "0"],
        ["--eval-freq", "1e400"],
        ["--set", "health.frozen_updates=2.5"],
        ["--set", "health.divergence_window=0"],
        ["--set", "rollback.lr_factor=2"],
        ["--set", "rollback.max_rollbacks=-1"],
        ["--set", "learning_rate=-1e-3"],
    ],
)
def test_cli_rejects_bad_options_in_one_line_before_any_run_folder(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    runs = tmp_path / "runs"
    code = main(["train", "--env", "Pendulum-v1", "--runs-root", str(runs), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("sb3-safe: error:"), err
    assert not runs.exists()
