"""
The arithmetic of ``make bench-vmas`` (benchmarks/learning_vmas.py): a run's curve across its resume chain, the
time to a level, the IQM over seeds, and the peer's command carrying the profile's task options.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks import learning_vmas
from benchmarks.learning_vmas import Run
from tests.extras import require

DATA = Path(__file__).resolve().parent / "data" / "vmas-bench"


def _write_part(folder: Path, rows: list[tuple[int, float]], resumed_from: Path | None = None) -> None:
    folder.mkdir(parents=True)
    lines = ["time/total_timesteps,time/time_elapsed,train/value_loss"]
    lines += [f"{steps},{seconds},0.5" for steps, seconds in rows]
    lines.insert(2, ",,0.4")  # a row without the clock (an evaluation's row) is skipped
    (folder / "progress.csv").write_text("\n".join(lines) + "\n")
    block = {"env_kwargs": {"n_agents": 4, "max_steps": 100}}
    info = {"seed": 0, "resumed_from": None if resumed_from is None else str(resumed_from)}
    (folder / "config.yml").write_text(yaml.safe_dump({"vmas:balance": block, "run_info": info}))


def test_curve_follows_a_resume_chain(tmp_path: Path) -> None:
    run = tmp_path / "balance" / "safe-s0"
    first = run.with_name("safe-s0.part1")
    _write_part(first, [(100, 10.0), (200, 20.0)])
    (first / "checkpoints").mkdir()
    (first / "checkpoints" / "model_200_steps.zip").write_bytes(b"")
    # the first part evaluated at 100 and 200 and went on to 300 (its evaluation there is superseded) before it
    # stopped; the continued part started from the checkpoint at 200
    (first / "eval").mkdir()
    np.savez(
        first / "eval" / "evaluations.npz",
        timesteps=np.array([100, 200, 300]),
        results=np.array([[0.0, 4.0], [8.0, 4.0], [99.0, 99.0]]),
    )
    _write_part(run, [(300, 5.0), (400, 10.0)], resumed_from=first / "checkpoints" / "model_200_steps.zip")
    (run / "eval").mkdir()
    np.savez(run / "eval" / "evaluations.npz", timesteps=np.array([300, 400]), results=np.array([[12.0, 4.0], [16.0, 20.0]]))

    curve = learning_vmas._sb3_safe_curve(run)

    np.testing.assert_array_equal(curve["steps"], [100, 200, 300, 400])
    # the continued part's clock starts again at 0: its 5 and 10 s come after the first part's 20 s
    np.testing.assert_array_equal(curve["seconds"], [10.0, 20.0, 25.0, 30.0])
    # the mean team return over an evaluation's episodes, over 4 agents
    np.testing.assert_array_equal(curve["returns"], [[0.5], [1.5], [2.0], [4.5]])
    assert learning_vmas.seconds_to_reach(curve, 1.5) == 20.0
    assert learning_vmas.seconds_to_reach(curve, 4.5) == 30.0
    assert np.isnan(learning_vmas.seconds_to_reach(curve, 4.6))


def test_iqm_is_the_mean_of_the_middle_half_with_an_interval_around_it() -> None:
    require("rliable", "bench")
    estimates = learning_vmas.iqm_interval({"safe": np.array([0.0, 1.0, 2.0, 100.0])}, reps=200)
    point, low, high = estimates["safe"]
    assert point == pytest.approx(1.5)  # 0 and 100 are the outer quarters
    assert low <= point <= high


def test_peer_runs_the_profile_task_at_its_shape(tmp_path: Path) -> None:
    command = learning_vmas._peer_command(Run("navigation", "benchmarl", 2), tmp_path / "p.json", Path("py"), 10**6, 5, 7)
    options = dict(zip(command[2::2], command[3::2], strict=False))
    assert yaml.safe_load(options["--task-kwargs"])["n_agents"] == 3
    assert yaml.safe_load(options["--task-kwargs"])["shared_rew"] is False
    assert (options["--recipe"], options["--copies"], options["--steps"]) == ("matched", "200", "100")
    assert (options["--seed"], options["--agent-steps"], options["--episodes"]) == ("2", "1000000", "7")
    tuned = learning_vmas._peer_command(Run("balance", "benchmarl-tuned", 0), tmp_path / "p.json", Path("py"), 10**6, 5, 7)
    assert tuned[tuned.index("--recipe") + 1] == "tuned"


def test_the_benchmarks_page_shows_the_recorded_figures() -> None:
    record = json.loads((DATA / "vmas.json").read_text())
    page = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    balance = record["balance"]["methods"]
    safe, tuned = balance["safe"], balance["benchmarl-tuned"]
    assert (safe["seeds"], tuned["seeds"]) == (3, len(tuned["finals"]))
    assert safe["final_iqm"] == pytest.approx(np.mean(safe["finals"]))  # 3 seeds: the IQM is their mean
    for figure in (safe["final_iqm"], tuned["final_iqm"], record["transport"]["levels"]["heuristic"]):
        assert f"{figure:.1f}" in page
    assert f"{np.median(safe['seconds_to_peer_final']):,.0f} s" in page
    assert (DATA / "vmas.md").read_text().strip() in page  # the table as the bench printed it


def test_transport_scripted_policies_head_for_the_package_as_named() -> None:
    torch = pytest.importorskip("torch")
    # transport observation: position, velocity, package - goal, package - agent, package velocity, on goal
    near = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0]])  # goal at -1, package at +0.3
    far = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -0.3, 0.0, 0.0, 0.0, 0.0]])  # package between agent and goal
    to_package, far_side = (learning_vmas.SCRIPTED["transport"][name] for name in ("to the package", "from the far side"))
    assert to_package(near)[0].tolist() == pytest.approx([1.0, 0.0], abs=1e-5)
    assert to_package(far)[0].tolist() == pytest.approx([-1.0, 0.0], abs=1e-5)
    assert far_side(near).tolist() == [[0.0, 0.0]]
    assert far_side(far)[0].tolist() == pytest.approx([-1.0, 0.0], abs=1e-5)


def test_transport_in_the_goal_frame_rotates_observations_and_forces_back() -> None:
    require("vmas", "marl")
    import torch
    import vmas

    from benchmarks.transport_goal_frame import goal_frame

    def far_side_return(in_goal_frame: bool) -> float:
        options = {"max_steps": 100, "n_agents": 4, "package_mass": 5}
        with goal_frame() if in_goal_frame else contextlib.nullcontext():
            env = vmas.make_env("transport", num_envs=50, device="cpu", seed=0, continuous_actions=True, **options)
        observations = env.reset()
        if in_goal_frame:  # package - goal: the goal lies along +x
            package = env.scenario.packages[0]
            distance = (package.state.pos - package.goal.state.pos).norm(dim=-1)
            assert observations[0][:, 4].tolist() == pytest.approx((-distance).tolist(), abs=1e-5)
            assert observations[0][:, 5].abs().max() < 1e-5
        # "head for the package when it is between you and the goal": in the goal's frame a threshold on one input
        in_world_frame = learning_vmas.SCRIPTED["transport"]["from the far side"]
        total = torch.zeros(50)
        for _ in range(100):
            actions = [
                learning_vmas._toward(o[:, 6:8]) * (o[:, 6:7] > 0) if in_goal_frame else in_world_frame(o)
                for o in observations
            ]
            observations, rewards, _, _ = env.step(actions)
            total += rewards[0]
        return float(total.mean())

    in_frame, in_world = far_side_return(True), far_side_return(False)
    assert in_frame == pytest.approx(in_world, rel=1e-4)
    assert in_frame > 1.0
