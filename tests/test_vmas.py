"""VMAS's batched simulator as an SB3 VecEnv (``--env vmas:<scenario>``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnvWrapper

from sb3_safe import SafePPO
from sb3_safe.callbacks import HealthMonitorCallback, NonFiniteGuardCallback
from sb3_safe.cli import main
from sb3_safe.config import load_config
from sb3_safe.errors import ConfigError
from sb3_safe.multiagent import CentralizedCriticPolicy, VmasVecEnv, evaluate_team
from sb3_safe.runs import RunFolder
from sb3_safe.training import evaluate, train
from tests.algorithms import assert_same_parameters, params
from tests.extras import require

require("vmas", "marl")
from vmas.simulator.core import Agent, World  # noqa: E402
from vmas.simulator.scenario import BaseScenario  # noqa: E402

NAVIGATION = "vmas:navigation"
# A few copies and short rollouts: the profiles' shape (hundreds of copies) is for benchmarks
TINY = {"n_envs": 4, "n_steps": 32, "batch_size": 128, "n_epochs": 2, "env_kwargs": {"max_steps": 25, "n_agents": 2}}


class Countdown(BaseScenario):  # type: ignore[misc]
    """
    Two agents; copy ``k`` terminates after ``k + 2`` steps. Each agent gets a reward of 1 per
    step and observes ``[steps taken, its index]``: what each copy did is known by hand.
    """

    def make_world(self, batch_dim: int, device: th.device, **kwargs: Any) -> World:
        world = World(batch_dim, device)
        for i in range(2):
            world.add_agent(Agent(name=f"agent_{i}", collide=False))
        self.t = th.zeros(batch_dim, device=device)
        self.length = th.arange(batch_dim, device=device, dtype=th.float32) + 2
        return world

    def reset_world_at(self, env_index: int | None = None) -> None:
        if env_index is None:
            self.t[:] = 0
        else:
            self.t[env_index] = 0
        for agent in self.world.agents:
            agent.set_pos(th.zeros(self.world.dim_p, device=self.world.device), batch_index=env_index)

    def post_step(self) -> None:
        self.t += 1

    def observation(self, agent: Agent) -> th.Tensor:
        index = float(self.world.agents.index(agent))
        return th.stack([self.t, th.full_like(self.t, index)], dim=1)

    def reward(self, agent: Agent) -> th.Tensor:
        return th.ones(self.world.batch_dim, device=self.world.device)

    def done(self) -> th.Tensor:
        return self.t >= self.length


def countdown(copies: int = 3, max_steps: int = 3, **kwargs: Any) -> VmasVecEnv:
    return VmasVecEnv(Countdown(), copies, {"max_steps": max_steps}, **kwargs)


def test_copies_finishing_at_different_steps_are_reset_alone_with_their_terminal_observations():
    """Copy 0 terminates at step 2, copy 1 at step 3 (its task ends as the time limit does), copy 2 is truncated at 3."""
    venv = countdown()
    assert venv.num_envs == 6 and venv.n_agents == 2
    obs = venv.reset()
    np.testing.assert_array_equal(obs, [[0, 0], [0, 1]] * 3)
    actions = np.zeros((6, 2), dtype=np.float32)
    venv.step(actions)
    obs, rewards, dones, infos = venv.step(actions)
    assert dones.tolist() == [True, True, False, False, False, False]
    np.testing.assert_array_equal(rewards, 1.0)
    for slot in (0, 1):
        np.testing.assert_array_equal(infos[slot]["terminal_observation"], [2, slot])
        assert infos[slot]["TimeLimit.truncated"] is False
        assert infos[slot]["episode"]["r"] == 2.0 and infos[slot]["episode"]["l"] == 2
    assert infos[0]["team_episode"] == {"r": 4.0, "l": 2}
    assert "team_episode" not in infos[1] and infos[2] == {}
    np.testing.assert_array_equal(obs, [[0, 0], [0, 1], [2, 0], [2, 1], [2, 0], [2, 1]])  # only copy 0 was reset
    obs, _, dones, infos = venv.step(actions)
    assert dones.tolist() == [False, False, True, True, True, True]
    assert infos[2]["TimeLimit.truncated"] is False  # terminated at the limit: a real end
    assert infos[4]["TimeLimit.truncated"] is True and infos[5]["TimeLimit.truncated"] is True
    np.testing.assert_array_equal(infos[4]["terminal_observation"], [3, 0])
    assert infos[4]["team_episode"] == {"r": 6.0, "l": 3}
    np.testing.assert_array_equal(obs, [[1, 0], [1, 1], [0, 0], [0, 1], [0, 0], [0, 1]])


def test_the_centralized_critic_sees_every_agents_observation_and_the_agent_index():
    venv = countdown(centralized_critic=True, agent_id=True)
    obs = venv.reset()
    assert isinstance(obs, dict)
    np.testing.assert_array_equal(obs["obs"][:2], [[0, 0, 1, 0], [0, 1, 0, 1]])
    np.testing.assert_array_equal(obs["state"][:2], [[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 0, 1]])
    _, _, _, infos = venv.step(np.zeros((6, 2), dtype=np.float32))
    _, _, _, infos = venv.step(np.zeros((6, 2), dtype=np.float32))
    np.testing.assert_array_equal(infos[1]["terminal_observation"]["state"], [2, 0, 2, 1, 0, 1])


class BufferProbe(BaseCallback):
    """Keeps the first rollout's rewards."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if not hasattr(self, "rewards"):
            self.rewards = self.model.rollout_buffer.rewards.copy()  # type: ignore[attr-defined]


def test_a_truncation_bootstraps_from_the_terminal_observations_value_through_sb3s_rollout():
    """SB3 adds ``gamma * V(terminal_observation)`` to the reward of a truncated step, not to a terminated one."""
    model = PPO("MlpPolicy", countdown(), n_steps=3, batch_size=18, n_epochs=1, gamma=0.9, seed=0)
    with th.no_grad():  # the policy before any update, as during the first rollout
        terminal = th.as_tensor(np.array([[3, 0], [3, 1]], dtype=np.float32))
        values = model.policy.predict_values(terminal).numpy().ravel()
    probe = BufferProbe()
    model.learn(18, callback=probe)
    rewards = probe.rewards  # [step, slot]
    np.testing.assert_allclose(rewards[:2], 1.0)
    np.testing.assert_allclose(rewards[2, :4], 1.0)  # copy 0 restarted; copy 1 terminated
    np.testing.assert_allclose(rewards[2, 4:], 1.0 + 0.9 * values, rtol=1e-5)
    assert not np.allclose(values, 0.0)


def test_discrete_actions_and_seeding_through_the_model_reproduce_a_run():
    def run(seed: int) -> dict[str, th.Tensor]:
        venv = VmasVecEnv(NAVIGATION, 4, {"max_steps": 10, "n_agents": 2, "continuous_actions": False})
        model = SafePPO("MlpPolicy", venv, n_steps=16, batch_size=64, n_epochs=2, seed=seed)
        model.learn(256)
        return params(model)

    first = run(3)
    assert_same_parameters(first, run(3))
    assert not th.equal(first["action_net.weight"], run(4)["action_net.weight"])


def test_evaluation_counts_team_returns_of_whole_episodes():
    model = PPO("MlpPolicy", countdown(copies=1, max_steps=5), n_steps=4, seed=0)
    returns, lengths = evaluate_team(model, countdown(copies=1, max_steps=5), n_eval_episodes=3)
    assert returns == [4.0, 4.0, 4.0] and lengths == [2, 2, 2]


class NanAt(VecEnvWrapper):
    """A NaN in the observation of one agent of one copy, at one step."""

    def __init__(self, venv: Any, step: int, slot: int) -> None:
        super().__init__(venv)
        self.at, self.slot, self.count = step, slot, 0

    def reset(self) -> Any:
        return self.venv.reset()

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        self.count += 1
        if self.count == self.at:
            assert isinstance(obs, dict)
            obs["obs"][self.slot] = np.nan
        return obs, rewards, dones, infos


def test_a_nan_in_one_agent_of_one_copy_does_not_reach_the_parameters():
    venv = NanAt(VmasVecEnv(NAVIGATION, 4, {"max_steps": 10, "n_agents": 2}, centralized_critic=True), step=5, slot=3)
    model = SafePPO(CentralizedCriticPolicy, venv, n_steps=16, batch_size=64, n_epochs=2, seed=0)
    monitor = HealthMonitorCallback(verbose=0)
    guard = NonFiniteGuardCallback(monitor, verbose=0)
    model.learn(256, callback=[guard, monitor])
    assert guard.repairs == 1
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    assert "non_finite" in {f.code for f in monitor.findings}


def test_a_short_run_saves_loads_predicts_and_resumes(tmp_path: Path):
    config = load_config("safe", NAVIGATION, {**TINY, "n_timesteps": 1024})
    result = train(config, seed=0, runs_root=tmp_path, eval_freq=512, save_freq=512, n_eval_episodes=2)
    folder = RunFolder(result.run_dir)
    steps, means = folder.evaluations()
    assert steps == [512, 1024] and all(np.isfinite(means))
    assert isinstance(result.model.policy, CentralizedCriticPolicy)
    again = evaluate(result.run_dir, episodes=2)
    assert np.isfinite(again.mean)
    checkpoint = folder.checkpoints()[0][1]
    resumed = train(config.with_overrides({"n_timesteps": 1536}), seed=0, runs_root=tmp_path, checkpoint=checkpoint)
    assert resumed.model.num_timesteps == 1536


def test_training_on_navigation_learns():
    """Four copies of two agents, fixed seed: the team return rises well above the untrained policy's."""
    config = load_config("safe", NAVIGATION, {**TINY, "n_envs": 16, "n_steps": 50, "batch_size": 400, "n_epochs": 10})
    venv = VmasVecEnv(NAVIGATION, 16, config.env_kwargs, centralized_critic=True, agent_id=True)
    model = SafePPO(CentralizedCriticPolicy, venv, seed=0, **config.algorithm_kwargs())
    eval_env = VmasVecEnv(NAVIGATION, 1, config.env_kwargs, centralized_critic=True, agent_id=True, seed=1000)
    before = np.mean(evaluate_team(model, eval_env, 10)[0])
    model.learn(60_000)
    after = np.mean(evaluate_team(model, eval_env, 10)[0])
    assert after > before + 0.5, (before, after)


@pytest.mark.parametrize(
    ("env_id", "overrides", "message"),
    [
        ("vmas:navigaton", {}, "VMAS has no scenario 'navigaton'. Did you mean 'navigation'?"),
        (NAVIGATION, {"env_kwargs": {"n_agnets": 3}}, "passed but not used by the scenario"),
        (NAVIGATION, {"env_kwargs": {"n_agents": "three"}}, "rejected by VMAS"),
        (NAVIGATION, {"pettingzoo_adapter": "supersuit"}, "`pettingzoo_adapter` is for PettingZoo environments"),
    ],
)
def test_vmas_mistakes_are_one_line_errors(tmp_path: Path, env_id: str, overrides: dict[str, Any], message: str):
    def run() -> None:
        train(load_config("safe", env_id, {**TINY, **overrides}), seed=0, runs_root=tmp_path)

    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("(", r"\(")) as caught:
        run()
    assert "\n" not in str(caught.value)
    assert not any(tmp_path.iterdir())


def test_the_command_line_says_what_is_wrong_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = main(["train", "--env", "vmas:transprt", "--profile", "safe", "--runs-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "Did you mean 'transport'?" in err and "Available:" in err
    assert not any(tmp_path.iterdir())


def test_without_vmas_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "vmas", None)
    with pytest.raises(ConfigError, match=r"pip install 'sb3-safe\[marl\]'"):
        VmasVecEnv(NAVIGATION, 1)


def test_recover_continues_a_vmas_run_from_a_checkpoint(tmp_path: Path):
    from sb3_safe.recover import recover

    config = load_config("baseline", NAVIGATION, {**TINY, "n_timesteps": 1024})
    run = train(config, seed=0, runs_root=tmp_path, eval_freq=512, save_freq=512, n_eval_episodes=2).run_dir
    small = {"n_envs": 4, "n_steps": 32, "batch_size": 128}  # the safe block's 200 copies would overshoot the budget
    recovery = recover(run, from_step=600, progress_bar=False, overrides=small)
    assert recovery.checkpoint is not None and recovery.checkpoint[0] == 512
    assert recovery.result is not None and recovery.result.model.num_timesteps == 1024
    _, block, info = RunFolder(recovery.result.run_dir).read_config()
    assert info["recovered_from"]["parent_run"] == str(run.resolve())
    # the parent's scenario (2 agents, 25 steps), not the safe profile's (3 agents, 100 steps)
    assert block["env_kwargs"] == RunFolder(run).read_config()[1]["env_kwargs"]
    assert (block["env_kwargs"]["n_agents"], block["env_kwargs"]["max_steps"]) == (2, 25)


class Rollouts(BaseCallback):
    """The observations of every rollout the buffer held."""

    def __init__(self) -> None:
        super().__init__()
        self.observations: list[np.ndarray] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.observations.append(self.model.rollout_buffer.observations["obs"].copy())  # type: ignore[attr-defined]


def test_the_training_episodes_do_not_depend_on_the_evaluation_schedule(tmp_path: Path):
    """
    VMAS keeps one random state for every environment; the evaluation environment is built, seeded and reset
    between training rollouts. Evaluated after every rollout or never, the same seed trains on the same episodes.
    """
    config = load_config("safe", NAVIGATION, {**TINY, "n_timesteps": 512})
    seen = []
    for run, eval_freq in (("often", 256), ("never", 10**6)):
        probe = Rollouts()
        train(config, seed=0, run_dir=tmp_path / run, eval_freq=eval_freq, n_eval_episodes=2, callbacks=[probe])
        seen.append(probe.observations)
    assert len(seen[0]) == 2 and RunFolder(tmp_path / "often").evaluations()[0] == [256, 512]
    for often, never in zip(*seen, strict=True):
        np.testing.assert_array_equal(often, never)


def test_each_environment_draws_from_its_own_stream():
    """Stepping a second environment in between leaves the first one's episodes as they were alone."""

    def rollout(interleave: bool) -> list[Any]:
        venv = VmasVecEnv(NAVIGATION, 4, {"max_steps": 5, "n_agents": 2})
        venv.seed(7)
        frames = [venv.reset()]
        for t in range(12):
            if interleave:
                other = VmasVecEnv(NAVIGATION, 2, {"max_steps": 3, "n_agents": 2}, seed=t)
                other.seed(100 + t)
                other.reset()
                other.step(np.zeros((4, 2), dtype=np.float32))
            frames.append(venv.step(np.full((8, 2), 0.5, dtype=np.float32))[0])
        return frames

    for alone, shared in zip(rollout(False), rollout(True), strict=True):
        np.testing.assert_array_equal(alone, shared)


def test_a_scenario_without_a_block_of_its_own_gets_the_vmas_block(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    config = load_config("safe", "vmas:wheel")
    assert config.blocks == ("default", "vmas:")
    assert config.values["centralized_critic"] and config.values["agent_id"] and config.values["n_envs"] == 500
    assert config.values["value_loss"] == "blend"  # the stabilizers of `default` stay
    assert load_config("safe", "vmas:balance").blocks == ("default", "vmas:", "vmas:balance")
    assert main(["train", "--env", "vmas:wheel", "--dry-run", "--runs-root", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "blocks default, vmas:" in out and "centralized_critic: true" in out and "vmas:wheel:" in out
    assert not (tmp_path / "runs").exists()
    # a run's config.yml holds the same resolved block
    result = train(config.with_overrides({**TINY, "n_timesteps": 256}), seed=0, runs_root=tmp_path, eval_freq=10**6)
    assert RunFolder(result.run_dir).read_config()[1]["centralized_critic"] is True
