"""The Optuna tuner: search space, objective, SQLite studies with worker processes, retry, PostgreSQL."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from sb3_safe.cli import main
from sb3_safe.config import load_config
from sb3_safe.errors import ConfigError
from sb3_safe.schedules import AdaptiveLearningRate
from sb3_safe.tuning import ObjectiveSettings, TuneSettings, load_space, open_study, run_tuning, score
from sb3_safe.tuning.objective import combine
from sb3_safe.tuning.report import write_report
from sb3_safe.tuning.space import AT_SCALE_SPACE, DEFAULT_SPACE
from sb3_safe.tuning.study import run_worker

SMALL_SPACE = """
learning_rate: {type: loguniform, low: 1.0e-4, high: 3.0e-3}
n_epochs: {type: categorical, choices: [1, 2]}
gamma: {type: one_minus_loguniform, low: 1.0e-3, high: 0.05}
policy_kwargs.net_arch: {type: categorical, choices: {tiny: [16], small: [32]}}
"""
FAST = {"n_envs": 2, "n_steps": 64, "batch_size": 64}


def settings(tmp_path: Path, trials: int = 3, workers: int = 1, timesteps: int = 256, **kwargs: Any) -> TuneSettings:
    space = tmp_path / "space.yml"
    if not space.exists():
        space.write_text(SMALL_SPACE)
    return TuneSettings(
        env_id="CartPole-v1",
        profile="safe",
        out=tmp_path / "out",
        trials=trials,
        objective=ObjectiveSettings(timesteps=timesteps, seeds_per_trial=2, n_evaluations=2, eval_episodes=2),
        space=space,
        workers=workers,
        overrides=dict(FAST),
        n_startup_trials=2,
        **kwargs,
    )


def test_score_is_mean_minus_std():
    # returns 100 and 80: mean 90, population std 10
    assert score([100.0, 80.0]) == pytest.approx(80.0)
    assert score([100.0, 80.0], spread_weight=0.5) == pytest.approx(85.0)
    assert score([42.0]) == 42.0


def test_default_space_loads_and_covers_the_safe_parameters():
    space = load_space()
    keys = {p.key for p in space.params}
    assert {"learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "ent_coef", "clip_range"} <= keys
    assert {"max_grad_norm", "policy_kwargs.net_arch", "critic_learning_rate", "target_kl", "huber_delta"} <= keys
    assert {"clip_range_vf", "adv_norm_min_std", "desired_kl", "adaptive_lr_factor"} <= keys
    assert next(p for p in space.params if p.key == "learning_rate").prefix == "adaptive_"
    assert space.max_grad_steps_per_env_step == 0.3
    assert DEFAULT_SPACE.is_file()


def test_a_vmas_block_keeps_its_update_shape_when_tuned():
    """At 500 copies the single-environment space's n_steps and batch sizes overrun a trial or take hours per update."""
    space = load_space(env_id="vmas:transport")
    keys = {p.key for p in space.params}
    assert space.source == AT_SCALE_SPACE
    assert not keys & {"n_steps", "batch_size", "n_envs"}
    assert {"learning_rate", "n_epochs", "ent_coef", "policy_kwargs.log_std_init", "critic_learning_rate"} <= keys
    base = load_config("safe", "vmas:transport", {})
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    config = base.with_overrides(space.sample(trial))
    assert (config.n_envs, config.get("n_steps"), config.get("batch_size")) == (500, 50, 4000)
    assert load_space(env_id="CartPole-v1").source == DEFAULT_SPACE


def test_prefixed_number_samples_the_adaptive_rate(tmp_path: Path):
    path = tmp_path / "space.yml"
    path.write_text("learning_rate: {type: loguniform, low: 1e-4, high: 1e-3, prefix: adaptive_}\n")
    space = load_space(path)
    trial = optuna.trial.FixedTrial({"learning_rate": 5e-4})
    assert space.sample(trial) == {"learning_rate": "adaptive_0.0005"}  # type: ignore[arg-type]
    assert space.overrides_of({"learning_rate": 5e-4}) == {"learning_rate": "adaptive_0.0005"}
    rate = load_config("safe", "Pendulum-v1", space.sample(trial)).algorithm_kwargs()["learning_rate"]  # type: ignore[arg-type]
    assert isinstance(rate, AdaptiveLearningRate) and rate.value == 5e-4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "learning_rat: {type: loguniform, low: 1e-5, high: 1e-3}",
            "`learning_rat` is not a parameter of SafePPO/PPO profiles. Did you mean 'learning_rate'?",
        ),
        ("policy_kwargs.net_arc: {type: categorical, choices: [1]}", "Did you mean 'policy_kwargs.net_arch'?"),
        (
            "gamma: {type: loguniformm, low: 0.9, high: 0.99}",
            "distribution type 'loguniformm' is not known. Did you mean 'loguniform'?",
        ),
        ("gamma: {type: uniform, low: 0.99, high: 0.9}", "`low` = 0.99 must be below `high` = 0.9"),
        ("ent_coef: {type: loguniform, low: 0, high: 0.1}", "a log scale needs `low` > 0"),
        ("n_epochs: {type: int, low: 1, hi: 20}", "unknown field `hi`. Did you mean 'high'?"),
        (
            "policy_kwargs.net_arch: {type: categorical, choices: [[64], [64, 64]]}",
            "choices that are lists or mappings need names",
        ),
        ("limits: {max_grad_steps: 1}", "unknown limit 'max_grad_steps'. Did you mean 'max_grad_steps_per_env_step'?"),
        ("[1, 2", "is not valid YAML"),
        ("learning_rate: {type: loguniform, low: 1e-4, high: 1e-3, prefix: adaptiv_}", "`prefix` = 'adaptiv_' is not known"),
        ("gamma: {type: uniform, low: 0.9, high: 0.99, prefix: lin_}", "unknown field `prefix`"),
    ],
)
def test_malformed_space_is_a_one_line_error(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "space.yml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_space(path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_stress_aware_study_scores_the_worst_condition(tmp_path: Path):
    config = settings(tmp_path, trials=1, pruner="none")
    objective = ObjectiveSettings(
        timesteps=256, seeds_per_trial=2, n_evaluations=2, eval_episodes=2, stresses=("nan-obs", "reward-x100")
    )
    config = dataclasses.replace(config, objective=objective)
    study = run_tuning(config)
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("pruned_reason")
    scores = [trial.user_attrs[f"score_{name}"] for name in ("clean", "nan-obs", "reward-x100")]
    assert trial.value == min(scores)
    # every condition and seed reported its evaluations at its own steps, clean first
    assert sorted(trial.intermediate_values) == list(range(1, 13))
    assert trial.user_attrs["curve_seed0"] == [trial.intermediate_values[1], trial.intermediate_values[2]]
    assert trial.user_attrs["curve_nan-obs_seed1"] == [trial.intermediate_values[7], trial.intermediate_values[8]]
    lines = write_report(study, config, load_space(config.space))
    assert any("the worst of clean" in line for line in lines)
    assert "score_nan-obs" in (config.out / "trials.csv").read_text().splitlines()[0]
    mean = dataclasses.replace(objective, stress_score="mean")
    assert combine(scores, mean.stress_score) == pytest.approx(sum(scores) / 3)


def test_unknown_stress_is_a_one_line_error():
    with pytest.raises(ConfigError, match=re.escape("--stress 'outlier' is not known. Did you mean 'outliers'?")):
        ObjectiveSettings(timesteps=256, stresses=("outlier",))
    assert main(["tune", "--stress", "nan-ob", "--trials", "1"]) == 2


def test_gradient_budget_prunes_before_training(tmp_path: Path):
    (tmp_path / "space.yml").write_text(
        "n_epochs: {type: categorical, choices: [20]}\nbatch_size: {type: categorical, choices: [32]}\n"
    )
    config = settings(tmp_path, trials=1)
    study = run_tuning(config)
    # every sample is rejected before training: none counts against --trials, so the worker
    # stops at its limit of 50 rejected configurations per counted trial
    assert len(study.trials) == 50
    for trial in study.trials:
        assert trial.state == TrialState.PRUNED and trial.user_attrs["invalid"]
        assert "20 / 32 = 0.625 gradient steps per env step exceeds the limit 0.3" in trial.user_attrs["pruned_reason"]
        assert "timesteps_run" not in trial.user_attrs


def test_sqlite_study_writes_a_best_profile_that_trains(tmp_path: Path):
    config = settings(tmp_path, trials=3)
    study = run_tuning(config)
    assert len(study.trials) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    lines = write_report(study, config, load_space(config.space))
    assert any(line.startswith("Best trial #") for line in lines)
    assert any(line.startswith("Dashboard: optuna-dashboard sqlite:///") for line in lines)
    out = config.out
    for name in ("best.yml", "trials.csv", "history.png", "importances.png", "best_curve.png", "study.db"):
        assert (out / name).is_file(), name
    best = load_config(str(out / "best.yml"), "CartPole-v1")
    assert best.values["n_epochs"] in (1, 2)
    assert best.values["policy_kwargs"]["net_arch"] in ([16], [32])
    assert best.values["policy_kwargs"]["log_std_init"] == -0.5  # the base profile's values stay
    assert main(["train", "--env", "CartPole-v1", "--profile", str(out / "best.yml"), "--timesteps", "256",
                 "--runs-root", str(tmp_path / "runs"), "--eval-freq", "100000"]) == 0  # fmt: skip
    # running the same study again resumes it: nothing left to do
    assert len(run_tuning(config).trials) == 3


def test_two_worker_processes_share_one_sqlite_study(tmp_path: Path):
    study = run_tuning(settings(tmp_path, trials=4, workers=2))
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) >= 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("foo://bar/baz", "unknown scheme 'foo'"),
        ("postgresql://user:secret@127.0.0.1:1/nodb", "cannot open storage 'postgresql://user:***@127.0.0.1:1/nodb'"),
    ],
)
def test_bad_storage_is_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, storage: str, expected: str):
    assert main(["tune", "--storage", storage, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "secret" not in err


def _worker(config: TuneSettings) -> None:
    run_worker(config)


def test_killed_worker_trial_is_failed_and_retried(tmp_path: Path):
    # A long trial (a big budget) in a worker process that is killed while the trial runs.
    slow = settings(tmp_path, trials=1, timesteps=200_000, heartbeat_interval=1)
    open_study(slow)
    worker = multiprocessing.get_context("spawn").Process(target=_worker, args=(slow,))
    worker.start()
    study = open_study(slow)
    for _ in range(600):  # wait (up to 60 s) until the trial is training: all 4 parameters sampled
        running = study.get_trials(states=(TrialState.RUNNING,))
        if running and len(running[0].params) == 4:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the worker never started its trial")
    os.kill(worker.pid, 9)  # type: ignore[arg-type]
    worker.join()
    time.sleep(3)  # heartbeat grace period: 2 s
    # a new worker (quick budget) fails the stale trial and reruns its parameters
    quick = settings(tmp_path, trials=1, timesteps=256, heartbeat_interval=1)
    run_worker(quick)
    study = optuna.load_study(study_name=quick.name, storage=f"sqlite:///{(quick.out / 'study.db').resolve()}")
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.FAIL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert retried and retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retried[0].params == study.trials[0].params


POSTGRES_URL = os.environ.get("SB3_SAFE_TEST_POSTGRES_URL")


@pytest.mark.skipif(
    POSTGRES_URL is None and not os.environ.get("CI"),
    reason="no PostgreSQL: set SB3_SAFE_TEST_POSTGRES_URL=postgresql://user:password@127.0.0.1/db "
    "(.ci/run installs and starts one) to run this test",
)
def test_two_workers_share_one_postgresql_study(tmp_path: Path):
    assert POSTGRES_URL is not None, "CI must provide SB3_SAFE_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)"
    name = f"pg-test-{os.getpid()}-{time.time_ns()}"
    study = run_tuning(settings(tmp_path, trials=4, workers=2, storage=POSTGRES_URL, study_name=name))
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) >= 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    optuna.delete_study(study_name=name, storage=POSTGRES_URL)


@pytest.mark.parametrize(("sampler", "pruner"), [("random", "halving"), ("cmaes", "none")])
def test_other_samplers_and_pruners(tmp_path: Path, sampler: str, pruner: str):
    study = run_tuning(settings(tmp_path, trials=2, sampler=sampler, pruner=pruner))
    assert len([t for t in study.trials if not t.user_attrs.get("invalid")]) == 2
    assert isinstance(study.sampler, optuna.samplers.RandomSampler if sampler == "random" else optuna.samplers.CmaEsSampler)
