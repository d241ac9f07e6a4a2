"""Resume under another profile (sb3_safe.resume) and ``sb3-safe recover`` (sb3_safe.recover)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
import yaml
from stable_baselines3.common.vec_env import VecNormalize

from sb3_safe import SafePPO
from sb3_safe.build import build_run
from sb3_safe.cli import main
from sb3_safe.config import load_config
from sb3_safe.diagnose import diagnose
from sb3_safe.errors import CheckpointError
from sb3_safe.health import evaluation_collapse, evaluation_noise_floor, evaluation_peak_before
from sb3_safe.recover import choose_checkpoint, find_trouble, recover
from sb3_safe.resume import read_saved
from sb3_safe.runs import RunFolder
from sb3_safe.training import train
from sb3_safe.value_norm import ValueNormalizer
from tests.algorithms import predict_values

SMALL = {"n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 2, "policy_kwargs": {"net_arch": [16]}}


def config(profile: str, steps: int = 512, **extra):
    return load_config(profile, "Pendulum-v1", {**SMALL, "n_timesteps": steps, **extra})


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished baseline run: one optimizer group, no VecNormalize, value normalization on."""
    root = tmp_path_factory.mktemp("runs")
    return train(config("baseline"), seed=3, runs_root=root, save_freq=256, eval_freq=256, n_eval_episodes=1).run_dir


def observations(n: int = 32) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, size=(n, 3)).astype(np.float32)


# -- resume under another profile


def test_baseline_checkpoint_resumes_under_safe_with_every_difference_applied(baseline_run: Path):
    checkpoint = baseline_run / "checkpoints" / "model_256_steps.zip"
    saved = read_saved(checkpoint)
    built = build_run(config("safe", 1024), seed=3, checkpoint=checkpoint)
    model = built.model
    assert isinstance(model, SafePPO)
    # optimizer: two groups, and every parameter carries its Adam moments bit for bit
    groups = model.policy.optimizer.param_groups
    assert [g["name"] for g in groups] == ["actor", "critic"]
    assert [g["lr"] for g in groups] == [1e-3, 1e-3]  # the block's adaptive rate starts at its 1e-3 ceiling
    old = saved.params["policy.optimizer"]
    names = [name for name, _ in model.policy.named_parameters()]  # the baseline's single group, in this order
    by_name = {name: old["state"][i] for i, name in enumerate(names)}
    ids = {id(p): name for name, p in model.policy.named_parameters()}
    for group in groups:
        for p in group["params"]:
            state = model.policy.optimizer.state[p]
            assert th.equal(state["exp_avg"], by_name[ids[id(p)]]["exp_avg"])
            assert th.equal(state["exp_avg_sq"], by_name[ids[id(p)]]["exp_avg_sq"])
    # weights bit for bit, counters carried
    for key, value in saved.params["policy"].items():
        assert th.equal(model.policy.state_dict()[key], value)
    assert model.num_timesteps == 256 and built.start_timesteps == 256
    # the safe profile's algorithm settings apply
    assert (model.max_grad_norm, model.value_loss, model.kl_stop, model.target_kl) == (0.5, "blend", "epoch", 0.03)
    # reward normalization on, observations raw as the checkpoint trained
    assert isinstance(built.venv, VecNormalize)
    assert built.venv.norm_reward and not built.venv.norm_obs
    text = "\n".join(built.resume_changes)
    assert "observations" not in text  # raw in the checkpoint and in the Pendulum-v1 block: nothing to say
    for expected in [
        "reward normalization on",
        "optimizer rebuilt with 2 parameter groups",
        "learning_rate 0.005 -> adaptive (desired_kl 0.02, factor 1.5, bounds [1e-05, 0.001])",
        "critic_learning_rate None -> 0.001",
        "max_grad_norm inf -> 0.5",
        "value_loss mse -> blend",
    ]:
        assert expected in text, text
    built.close()


def test_resume_with_the_same_profile_changes_nothing_and_keeps_the_optimizer(baseline_run: Path):
    checkpoint = baseline_run / "checkpoints" / "model_256_steps.zip"
    built = build_run(config("baseline", 1024), seed=3, checkpoint=checkpoint)
    assert built.resume_changes == []
    saved = read_saved(checkpoint)
    assert str(built.model.policy.optimizer.state_dict()["state"]) == str(saved.params["policy.optimizer"]["state"])
    built.close()


def test_switching_value_normalization_off_folds_the_statistics_into_the_head(baseline_run: Path):
    checkpoint = baseline_run / "model.zip"
    saved = read_saved(checkpoint)
    assert saved.value_normalized
    before = build_run(config("baseline", 2048), seed=3, checkpoint=checkpoint)
    assert isinstance(before.model, SafePPO)
    normalizer = before.model.value_normalizer
    assert normalizer is not None and abs(float(normalizer.mean)) > 1e-3, "the statistics must matter for the test"
    after = build_run(config("baseline", 2048, normalize_value=False), seed=3, checkpoint=checkpoint)
    assert isinstance(after.model, SafePPO) and after.model.value_normalizer is None
    np.testing.assert_allclose(
        predict_values(after.model, observations()), predict_values(before.model, observations()), rtol=1e-5, atol=1e-5
    )
    assert any("normalize_value off" in change for change in after.resume_changes)
    assert any("Adam moments restart" in change for change in after.resume_changes)
    before.close()
    after.close()


def test_switching_value_normalization_on_keeps_predictions_through_the_first_update(baseline_run: Path):
    off = config("baseline", 2048, normalize_value=False)
    plain_run = train(off, seed=4, runs_root=baseline_run.parent.parent / "off", eval_freq=10_000, n_eval_episodes=1).run_dir
    checkpoint = plain_run / "model.zip"
    before = build_run(config("baseline", 2048, normalize_value=False), seed=4, checkpoint=checkpoint)
    after = build_run(config("baseline", 2048), seed=4, checkpoint=checkpoint)
    assert isinstance(after.model, SafePPO)
    normalizer = after.model.value_normalizer
    assert normalizer is not None and float(normalizer.count) == 0.0
    expected = predict_values(before.model, observations())
    np.testing.assert_allclose(predict_values(after.model, observations()), expected, rtol=1e-5, atol=1e-5)
    # The first update takes the rollout's statistics and rescales the head: predictions do not move.
    returns = th.as_tensor(np.random.default_rng(1).normal(-300.0, 80.0, size=512))
    normalizer.update(returns)
    assert float(normalizer.mean) == pytest.approx(float(returns.mean()), rel=1e-9)
    assert float(normalizer.count) == 512
    np.testing.assert_allclose(predict_values(after.model, observations()), expected, rtol=1e-5, atol=1e-4)
    before.close()
    after.close()


def test_a_new_normalizer_never_rescales():
    head = th.nn.Linear(3, 1)
    normalizer = ValueNormalizer()
    normalizer.attach(head)
    weight = head.weight.detach().clone()
    normalizer.update(th.tensor([1.0, 5.0, 9.0]))
    assert th.equal(head.weight, weight), "MAPPO's ValueNorm: only a resumed (count 0) normalizer rescales"


def test_architecture_mismatch_is_a_one_line_error_naming_both_values(baseline_run: Path, capsys: pytest.CaptureFixture[str]):
    checkpoint = baseline_run / "model.zip"
    with pytest.raises(
        CheckpointError, match=r"does not fit the profile's network: .*policy_kwargs: checkpoint \{net_arch: \[16\]"
    ):
        build_run(config("safe", 4096, policy_kwargs={"net_arch": [32]}), checkpoint=checkpoint)
    with pytest.raises(CheckpointError, match="use_sde=True, the profile says use_sde=False"):
        build_run(config("safe", 4096, use_sde=False), checkpoint=checkpoint)
    with pytest.raises(CheckpointError, match="activation_fn Tanh, the profile says ReLU"):
        build_run(config("safe", 4096, policy_kwargs={"net_arch": [16], "activation_fn": "relu"}), checkpoint=checkpoint)
    code = main(["train", "--profile", "safe", "--checkpoint", str(checkpoint), "--set", "policy_kwargs={net_arch: [32]}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "damaged" not in err


def test_only_a_damaged_file_is_called_damaged(tmp_path: Path, baseline_run: Path):
    broken = tmp_path / "model_100_steps.zip"
    broken.write_bytes((baseline_run / "model.zip").read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="is damaged"):
        read_saved(broken)


# -- which checkpoint


def test_choose_checkpoint():
    found = [(1000, Path("a")), (2000, Path("b")), (4000, Path("c"))]
    assert choose_checkpoint(found, 3500) == (2000, Path("b"))  # onset between checkpoints
    assert choose_checkpoint(found, 2000) == (2000, Path("b"))  # a checkpoint at the onset is from before it
    assert choose_checkpoint(found, 999) is None  # before the first
    assert choose_checkpoint([], 10_000) is None


def write_run(
    folder: Path, returns: list[float], losses: list[float], rollback_at: int | None = None, kl_spike_at: int | None = None
) -> Path:
    """An sb3-safe-like run folder with a progress.csv, a config and a result."""
    folder.mkdir(parents=True)
    keys = ["time/total_timesteps", "rollout/ep_rew_mean", "train/value_loss", "train/explained_variance"]
    keys += ["train/approx_kl", "train/clip_fraction"]
    with open(folder / "progress.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        for i, (ret, loss) in enumerate(zip(returns, losses, strict=True)):
            ev = 0.8 if loss < 0.01 else -3.0
            kl, clipped = (0.5, 0.6) if i == kl_spike_at else (0.01, 0.1)
            writer.writerow({keys[0]: 1000 * (i + 1), keys[1]: ret, keys[2]: loss, keys[3]: ev, keys[4]: kl, keys[5]: clipped})
    block = {"algo": "safe_ppo", "n_timesteps": 1000 * len(returns), "normalize": False, "health": {}}
    (folder / "config.yml").write_text(yaml.safe_dump({"Pendulum-v1": block, "run_info": {"seed": 0}}))
    (folder / "result.json").write_text(json.dumps({"num_timesteps": 1000 * len(returns)}))
    (folder / "checkpoints").mkdir()
    if rollback_at is not None:
        event = {"event": "rollback", "timestep": rollback_at, "restored_timestep": 0, "reasons": "x", "rollbacks": 1}
        (folder / "health.jsonl").write_text(json.dumps(event) + "\n")
    return folder


def collapse() -> tuple[list[float], list[float]]:
    returns = [-1200.0 + 30 * i for i in range(30)] + [-330.0 - 120 * (i + 1) for i in range(10)]
    losses = [0.004] * 30 + [0.004 * 4 ** (i + 2) for i in range(10)]
    return returns, losses


def test_trouble_and_its_onset(tmp_path: Path):
    returns, losses = collapse()
    run = write_run(tmp_path / "bad", returns, losses)
    trouble = find_trouble(run)
    assert trouble is not None and trouble.onset < trouble.timestep
    # the onset is no later than the last healthy update (30,000) and after the climb began
    assert 20_000 <= trouble.onset <= 30_000, trouble
    healthy = write_run(tmp_path / "good", [-1200.0 + 30 * i for i in range(40)], [0.004] * 40)
    assert find_trouble(healthy) is None
    assert diagnose(healthy).recover_command is None
    assert diagnose(run).recover_command == f"sb3-safe recover {run}"


def test_trouble_a_rollback_dealt_with_is_no_trouble(tmp_path: Path):
    returns, losses = collapse()
    first = find_trouble(write_run(tmp_path / "a", returns, losses))
    assert first is not None
    handled = write_run(tmp_path / "b", returns, losses, rollback_at=first.timestep)
    later = find_trouble(handled)
    assert later is None or later.timestep > first.timestep


def test_evaluation_collapse_by_hand():
    steps, means = [5_000, 50_000, 95_000], [-1200.0, -300.0, -108.0]  # gain 1,092
    found = evaluation_collapse(steps, means, final=-700.0, final_step=100_000)  # gives back 592 / 1,092 = 54%
    assert found is not None and found.code == "evaluation_collapse" and found.severity == "critical"
    assert (found.timestep, found.onset) == (100_000, 95_000)
    assert found.values["fraction_lost"] == pytest.approx(592 / 1092, abs=1e-4)
    assert evaluation_collapse(steps, means, final=-600.0, final_step=100_000) is None  # 45%: kept most of it
    assert evaluation_collapse(steps, [-100.0, -300.0, -500.0], final=-900.0, final_step=100_000) is None  # no gain
    assert evaluation_collapse(steps, means, final=float("nan"), final_step=100_000) is None
    assert evaluation_collapse([], [], final=-700.0, final_step=100_000) is None


def test_evaluation_collapse_within_the_noise_is_none(tmp_path: Path):
    """A run that started near its best (a recovered one): 5-episode evaluations swing more than it gains."""
    steps, means = [85_000, 90_000, 95_000, 100_000], [-183.0, -129.0, -154.0, -130.0]
    assert evaluation_collapse(steps, means, final=-168.0, final_step=100_480) is not None  # 72% of a 54 gain
    floor = evaluation_noise_floor(34.0)
    assert floor == pytest.approx(2 * 2**0.5 * 34.0)
    assert evaluation_collapse(steps, means, final=-168.0, final_step=100_480, noise=floor) is None
    # a real collapse is far outside the noise
    assert evaluation_collapse(steps, means[:2], final=-1100.0, final_step=100_480, noise=floor) is None  # gain 54
    assert evaluation_collapse([1, 2], [-1500.0, -140.0], final=-1100.0, final_step=3, noise=floor) is not None
    # the standard error read from the run folder, pooled: episode returns (1, 3) and (2, 6) have variances 2 and 8,
    # their mean 5 over 2 episodes: sqrt(2.5)
    folder = tmp_path / "run"
    (folder / "eval").mkdir(parents=True)
    np.savez(folder / "eval" / "evaluations.npz", timesteps=np.array([1, 2]), results=np.array([[1.0, 3.0], [2.0, 6.0]]))
    assert RunFolder(folder).evaluation_noise() == pytest.approx(2.5**0.5)
    # rare successes (VMAS transport: most evaluations all zeros, a few with one delivery) are noise, not a median of 0
    results = np.zeros((10, 10))
    results[[2, 5, 8], 3] = 60.0
    np.savez(folder / "eval" / "evaluations.npz", timesteps=np.arange(1, 11), results=results)
    assert RunFolder(folder).evaluation_noise() == pytest.approx((3 * 360.0 / 10 / 10) ** 0.5)
    assert RunFolder(tmp_path / "none").evaluation_noise() == 0.0


def test_evaluation_peak_before_by_hand():
    steps, means = [10_000, 20_000, 30_000, 40_000], [-900.0, -150.0, -400.0, -700.0]
    # the training return peaked at 25,000 and collapsed by 40,000: the evaluations fell from 20,000
    assert evaluation_peak_before(steps, means, onset=25_000, until=40_000) == 20_000
    assert evaluation_peak_before(steps, means, onset=25_000, until=40_000, noise=249.0) == 20_000  # 250 apart
    assert evaluation_peak_before(steps, means, onset=25_000, until=40_000, noise=250.0) is None  # within the noise
    assert evaluation_peak_before(steps, means, onset=20_000, until=40_000) is None  # the peak is the onset itself
    assert evaluation_peak_before(steps, means, onset=5_000, until=40_000) is None  # no evaluation before the onset
    assert evaluation_peak_before(steps, means, onset=41_000, until=50_000) is None  # none since: nothing to compare
    # an evaluation since the onset as good as the earlier peak: the greedy policy had not fallen yet
    assert evaluation_peak_before(steps, [-900.0, -150.0, -140.0, -700.0], onset=25_000, until=40_000) is None


def test_a_collapse_goes_back_to_an_earlier_evaluation_peak(tmp_path: Path):
    """The greedy policy fell before the training return did: recover resumes from before the evaluations fell."""
    returns, _ = collapse()
    run = write_run(tmp_path / "bad", returns, [0.004] * len(returns))  # a calm critic: the return alone collapses
    training = find_trouble(run)
    assert training is not None and training.code == "reward_collapse" and training.onset > 15_000
    (run / "eval").mkdir()

    def evaluations(results: list[list[float]]) -> None:
        steps = np.array([5_000, 15_000, training.onset + 1_000, 40_000])
        np.savez(run / "eval" / "evaluations.npz", timesteps=steps, results=np.array(results))

    evaluations([[-1100.0] * 2, [-150.0] * 2, [-500.0] * 2, [-900.0] * 2])
    trouble = find_trouble(run)
    assert trouble is not None and (trouble.code, trouble.timestep) == ("reward_collapse", training.timestep)
    assert trouble.onset == 15_000 and "peaked earlier, at step 15,000" in trouble.message
    for steps in (10_000, 20_000, 30_000):
        (run / "checkpoints" / f"model_{steps}_steps.zip").touch()
    decided = recover(run, dry_run=True)
    assert decided.checkpoint is not None and decided.checkpoint[0] == 10_000
    # retention dropped the checkpoint at the peak, but the evaluation callback kept the model there
    (run / "best_model.zip").touch()
    decided = recover(run, dry_run=True)
    assert decided.checkpoint == (15_000, run / "best_model.zip"), decided
    assert "best_model.zip (step 15,000)" in decided.reason
    # 5-episode-like evaluations whose noise covers the difference: the training log's onset stands
    evaluations([[-1100.0, -1000.0], [-150.0, -750.0], [-500.0, -100.0], [-900.0, -800.0]])
    assert find_trouble(run) == training


def test_a_run_whose_final_evaluation_collapsed_goes_back_to_its_best_evaluation(tmp_path: Path):
    """The training return still climbs (no detector fires) but the greedy policy fell apart at the end."""
    run = write_run(tmp_path / "spoiled", [-1200.0 + 30 * i for i in range(40)], [0.004] * 40)
    assert find_trouble(run) is None
    (run / "eval").mkdir()
    np.savez(
        run / "eval" / "evaluations.npz",
        timesteps=np.array([10_000, 20_000, 30_000]),
        results=np.array([[-1100.0] * 2, [-150.0] * 2, [-400.0] * 2]),
    )
    (run / "result.json").write_text(json.dumps({"num_timesteps": 40_000, "eval_mean_return": -900.0}))
    trouble = find_trouble(run)
    assert trouble is not None and trouble.code == "evaluation_collapse"
    assert (trouble.onset, trouble.timestep) == (20_000, 40_000)
    assert diagnose(run).recover_command == f"sb3-safe recover {run}"
    # the calibration replays the training log's detectors alone: nothing there
    assert diagnose(run, evaluations=False).findings == []
    for steps in (10_000, 20_000, 30_000):
        (run / "checkpoints" / f"model_{steps}_steps.zip").touch()
    decided = recover(run, dry_run=True)
    assert decided.checkpoint is not None and decided.checkpoint[0] == 20_000
    assert "evaluation_collapse began at step 20,000 (critical at 40,000)" in decided.reason


def test_an_unfinished_run_is_trouble_at_its_last_update(tmp_path: Path):
    run = write_run(tmp_path / "killed", [-1200.0 + 30 * i for i in range(10)], [0.004] * 10)
    (run / "result.json").unlink()
    trouble = find_trouble(run)
    assert trouble is not None and trouble.code == "unfinished" and trouble.onset == 10_000


def test_a_run_stopped_while_its_value_loss_rises_goes_back_to_the_rise(tmp_path: Path):
    """Stopped by hand after a warning (a KL spike at update 31), before anything critical: the warning is the trouble."""
    returns = [-1200.0 + 30 * i for i in range(34)]
    run = write_run(tmp_path / "stopped", returns, [0.004] * 34, kl_spike_at=30)
    (run / "result.json").unlink()
    found = diagnose(run).findings
    assert [(f.code, f.severity) for f in found] == [("kl_spike", "warning")], found
    trouble = find_trouble(run)
    assert trouble is not None and trouble.code == "unfinished"
    assert trouble.onset == 31_000 and trouble.timestep == 34_000, trouble
    assert "its latest warning, kl_spike, began at step 31,000" in trouble.message


def test_recover_on_a_healthy_run_does_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run = write_run(tmp_path / "good", [-1200.0 + 30 * i for i in range(40)], [0.004] * 40)
    assert main(["recover", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no finding, no crash: nothing to recover from. Pass --from STEP" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]


def test_recover_end_to_end_after_a_forced_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A baseline run hit by a NaN observation (the baseline profile has no guard) is continued under safe."""
    from sb3_safe.faults import make_fault_wrapper

    broken = config("baseline", 1024, guard=False)
    wrapper = make_fault_wrapper("non_finite", at_step=400, target="obs")
    train(broken, seed=5, run_dir=tmp_path / "parent", save_freq=128, eval_freq=10_000, env_wrapper=wrapper)
    parent = tmp_path / "parent"
    trouble = find_trouble(parent)
    assert trouble is not None and trouble.code == "non_finite" and trouble.onset <= 1024
    recovery = recover(parent, progress_bar=False)
    assert recovery.checkpoint is not None and recovery.checkpoint[0] <= trouble.onset
    assert recovery.result is not None and recovery.result.num_timesteps >= 1024
    child = recovery.result.run_dir
    assert child.name == "parent.recover-safe"
    info = yaml.safe_load((child / "config.yml").read_text())["run_info"]
    chain = info["recovered_from"]
    assert chain["parent_run"] == str(parent.resolve()) and chain["checkpoint_timestep"] == recovery.checkpoint[0]
    assert chain["trouble"] == trouble.code and "newest checkpoint before it" in chain["reason"]
    assert any("reward normalization on" in change for change in info["resume_changes"])
    # the recovered policy and its checkpoint were compared on the same episodes; the better one is model.zip
    compared = json.loads((child / "result.json").read_text())["recovery"]
    assert compared["episodes"] == 20 and compared["kept"] in ("recovered", "checkpoint")
    assert Path(compared["checkpoint"]) == recovery.checkpoint[1].resolve()
    kept_trained = (child / "trained_model.zip").is_file()
    assert kept_trained == (compared["kept"] == "checkpoint")
    assert (compared["recovered_mean"] >= compared["checkpoint_mean"]) == (compared["kept"] == "recovered")
    # and a second recovery never overwrites the first
    again = recover(parent, progress_bar=False)
    assert again.result is not None and again.result.run_dir.name == "parent.recover-safe-2"


def test_a_recovery_worse_than_its_checkpoint_keeps_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The safe profile can fail to regain what a run lost: then model.zip is the checkpoint, the trained one kept beside."""
    import sb3_safe.evaluation
    from sb3_safe.checkpoints import stats_path_for
    from sb3_safe.evaluation import EvalResult
    from sb3_safe.recover import keep_better

    result = train(config("safe", 1024), seed=0, run_dir=tmp_path / "run", save_freq=512, eval_freq=10_000)
    folder = RunFolder(result.run_dir)
    checkpoint = folder.checkpoints()[0][1]
    trained_bytes, checkpoint_bytes = folder.final_model.read_bytes(), checkpoint.read_bytes()
    scores = {folder.final_model: -900.0, checkpoint: -300.0}

    def evaluate(target: Path, **kwargs: Any) -> EvalResult:
        model = RunFolder(target).final_model if target.is_dir() else target
        return EvalResult(scores[model], 10.0, kwargs["episodes"], model, [scores[model]] * kwargs["episodes"])

    monkeypatch.setattr(sb3_safe.evaluation, "evaluate", evaluate)
    compared = keep_better(result.run_dir, checkpoint, episodes=4, seed=0)
    assert compared["kept"] == "checkpoint" and compared["checkpoint_mean"] == -300.0
    assert folder.final_model.read_bytes() == checkpoint_bytes
    assert (result.run_dir / "trained_model.zip").read_bytes() == trained_bytes
    assert stats_path_for(folder.final_model).read_bytes() == stats_path_for(checkpoint).read_bytes()
    assert (result.run_dir / "trained_vecnormalize.pkl").is_file()
    assert json.loads(folder.result_file.read_text())["recovery"]["kept"] == "checkpoint"


def test_recover_a_plain_sb3_run_folder(tmp_path: Path):
    """A plain SB3 PPO run (CheckpointCallback with VecNormalize, CSV log) continues under the safe profile."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import CheckpointCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import configure

    run = tmp_path / "sb3-run"
    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    model = PPO(
        "MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, use_sde=True, policy_kwargs={"net_arch": [16]}
    )
    model.set_logger(configure(str(run), ["csv"]))
    model.learn(512, callback=CheckpointCallback(128, str(run / "checkpoints"), save_vecnormalize=True))
    recovery = recover(run, env_id="Pendulum-v1", timesteps=768, from_step=300, progress_bar=False, overrides=SMALL)
    assert recovery.checkpoint is not None and recovery.checkpoint[0] == 256
    assert recovery.result is not None and recovery.result.num_timesteps >= 768
    info = yaml.safe_load((recovery.result.run_dir / "config.yml").read_text())["run_info"]
    changes = "\n".join(info["resume_changes"])
    assert "normalize_value on" in changes and "optimizer rebuilt with 2 parameter groups" in changes
    # SB3's VecNormalize normalized observations; the Pendulum-v1 block would not: the checkpoint's choice is kept
    assert "observations stay normalized as the checkpoint trained" in changes


def test_a_finished_run_with_warnings_only_goes_back_to_the_first_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run = write_run(tmp_path / "warned", [-1200.0 + 30 * i for i in range(40)], [0.004] * 40, kl_spike_at=30)
    (run / "checkpoints" / "model_30000_steps.zip").write_bytes(b"")
    (run / "checkpoints" / "model_32000_steps.zip").write_bytes(b"")
    trouble = find_trouble(run)
    assert trouble is not None and trouble.code == "kl_spike" and trouble.onset == 31_000
    assert trouble.message.startswith("a warning, nothing critical:")
    assert main(["recover", str(run), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "kl_spike began at step 31,000" in out and "newest checkpoint before it: model_30000_steps.zip" in out
