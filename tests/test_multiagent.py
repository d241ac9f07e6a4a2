"""Multi-agent training: the PettingZoo adapter, the centralized critic, and the run around them."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from sb3_safe import SafePPO
from sb3_safe.config import load_config
from sb3_safe.errors import ConfigError
from sb3_safe.faults import make_fault_wrapper
from sb3_safe.multiagent import CentralizedCriticPolicy, PettingZooVecEnv, evaluate_team, make_parallel_env
from sb3_safe.multiagent.supersuit import make_supersuit_env
from sb3_safe.multiagent.wrappers import FirstAgentWrapper
from sb3_safe.runs import RunFolder
from sb3_safe.training import evaluate, train
from tests.algorithms import assert_same_parameters, params
from tests.extras import require

for _module in ("pettingzoo", "mpe2", "supersuit"):
    require(_module, "marl")
from pettingzoo import ParallelEnv  # noqa: E402
from pettingzoo.test import parallel_api_test  # type: ignore[attr-defined]  # noqa: E402

SPREAD = "pettingzoo:mpe2.simple_spread_v3"
REFERENCE = "pettingzoo:mpe2.simple_reference_v3"


class Relay(ParallelEnv):  # type: ignore[type-arg]
    """
    A tiny deterministic team task: observation ``[t, agent index]``, reward 1 per agent per step,
    truncated after ``length`` steps; ``leaves`` maps an agent to the step at which it terminates.
    """

    metadata = {"name": "relay_v0", "render_modes": []}  # noqa: RUF012

    def __init__(self, length: int = 4, leaves: dict[str, int] | None = None, spaces_differ: bool = False) -> None:
        self.possible_agents = ["a", "b"]
        self.length, self.leaves = length, leaves or {}
        self._obs = {a: spaces.Box(-10, 10, shape=(2,), dtype=np.float32) for a in self.possible_agents}
        if spaces_differ:
            self._obs["b"] = spaces.Box(-10, 10, shape=(3,), dtype=np.float32)
        self.agents: list[str] = []
        self.t = 0
        self.render_mode = None

    def observation_space(self, agent: str) -> spaces.Space[Any]:
        return self._obs[agent]

    def action_space(self, agent: str) -> spaces.Space[Any]:
        return spaces.Discrete(2)

    def _observe(self) -> dict[str, np.ndarray]:
        return {a: np.array([self.t, i], dtype=np.float32) for i, a in enumerate(self.possible_agents) if a in self.agents}

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        self.agents, self.t = list(self.possible_agents), 0
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> Any:
        self.t += 1
        obs = self._observe()
        rewards = dict.fromkeys(self.agents, 1.0)
        terminations = {a: self.leaves.get(a) == self.t for a in self.agents}
        truncations = {a: self.t >= self.length and not terminations[a] for a in self.agents}
        infos: dict[str, dict[str, Any]] = {a: {} for a in self.agents}
        self.agents = [a for a in self.agents if not (terminations[a] or truncations[a])]
        return obs, rewards, terminations, truncations, infos


def relay_venv(copies: int = 1, **kwargs: Any) -> PettingZooVecEnv:
    return PettingZooVecEnv([functools.partial(Relay, **kwargs)] * copies)


@pytest.mark.parametrize("env_id", [SPREAD, REFERENCE])
def test_pettingzoo_api_test_passes_on_the_profiled_environments(env_id: str):
    config = load_config("safe", env_id)
    parallel_api_test(make_parallel_env(env_id, config.env_kwargs), num_cycles=100)
    parallel_api_test(FirstAgentWrapper(make_parallel_env(env_id, config.env_kwargs), lambda env: env), num_cycles=50)


def test_slots_are_agents_of_copies_and_observations_are_the_environments():
    venv = PettingZooVecEnv([functools.partial(make_parallel_env, SPREAD)] * 2)
    assert venv.num_envs == 6 and venv.observation_space.shape == (18,)
    venv.seed(5)
    obs: Any = venv.reset()
    for k, seed in enumerate((5, 8)):  # copy k is reset with the (k * agents)-th seed
        twin = make_parallel_env(SPREAD)
        twin_obs, _ = twin.reset(seed=seed)
        for i, agent in enumerate(twin.possible_agents):
            np.testing.assert_array_equal(obs[3 * k + i], twin_obs[agent])
    # get_attr and env_method reach the copy behind each slot (SuperSuit's VecEnv has neither)
    assert venv.get_attr("max_cycles") == [25] * 6
    states = venv.env_method("state", indices=[0, 3])
    assert not np.array_equal(states[0], states[1])


def test_truncation_is_marked_with_the_terminal_observation_and_episode_statistics():
    venv = relay_venv(length=3)
    venv.reset()
    for _ in range(2):
        _, _, dones, infos = venv.step(np.zeros(2, dtype=int))
        assert not dones.any() and "episode" not in infos[0]
    obs, _, dones, infos = venv.step(np.zeros(2, dtype=int))
    assert dones.all()
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"] is True
        np.testing.assert_array_equal(info["terminal_observation"], [3, i])
        assert info["episode"]["r"] == 3.0 and info["episode"]["l"] == 3
    assert infos[0]["team_episode"] == {"r": 6.0, "l": 3}
    np.testing.assert_array_equal(obs, [[0, 0], [0, 1]])  # the copy was reset


def test_an_agent_that_leaves_ends_its_slot_and_pads_until_the_team_ends():
    venv = relay_venv(length=4, leaves={"b": 2})
    venv.reset()
    venv.step(np.zeros(2, dtype=int))
    _, _, dones, infos = venv.step(np.zeros(2, dtype=int))  # b terminates
    assert dones.tolist() == [False, True]
    assert infos[1]["TimeLimit.truncated"] is False and infos[1]["episode"]["r"] == 2.0
    step: Any = venv.step(np.zeros(2, dtype=int))
    obs, rewards, dones, infos = step
    assert dones.tolist() == [False, True] and rewards.tolist() == [1.0, 0.0]
    np.testing.assert_array_equal(obs[1], [0, 0])
    assert "episode" not in infos[1]
    _, _, dones, infos = venv.step(np.zeros(2, dtype=int))
    assert dones.all() and infos[0]["team_episode"] == {"r": 6.0, "l": 4}


class BufferProbe(BaseCallback):
    """Keeps the rollout buffer's rewards and the values of the last observations after the first rollout."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.rewards = self.model.rollout_buffer.rewards.copy()  # type: ignore[attr-defined]


@pytest.mark.parametrize("adapter", ["sb3_safe", "supersuit"])
def test_a_truncation_bootstraps_from_the_next_states_value(adapter: str):
    """
    SB3 adds ``gamma * V(terminal_observation)`` to the reward of a step marked
    ``TimeLimit.truncated``; SuperSuit does not mark it, so its value target ends at the truncation.
    """
    make = functools.partial(Relay, length=4)
    venv = PettingZooVecEnv([make]) if adapter == "sb3_safe" else make_supersuit_env(make, 1)
    model = PPO("MlpPolicy", venv, n_steps=4, batch_size=8, n_epochs=1, gamma=0.9, seed=0)
    probe = BufferProbe()
    model.learn(8, callback=probe)  # two rollouts: the probe keeps the first (the update between changes V)
    terminal_values = np.zeros(2)
    model2 = PPO("MlpPolicy", PettingZooVecEnv([make]), n_steps=4, batch_size=8, n_epochs=1, gamma=0.9, seed=0)
    with th.no_grad():  # the policy before any update, as it was during the first rollout
        terminal = th.as_tensor(np.array([[4, 0], [4, 1]], dtype=np.float32))
        terminal_values = model2.policy.predict_values(terminal).numpy().ravel()
    np.testing.assert_allclose(probe.rewards[:3], 1.0)
    if adapter == "sb3_safe":
        np.testing.assert_allclose(probe.rewards[3], 1.0 + 0.9 * terminal_values, rtol=1e-5)
        assert not np.allclose(terminal_values, 0.0)
    else:
        np.testing.assert_allclose(probe.rewards[3], 1.0)


def test_seeding_through_the_model_reproduces_a_run():
    def run(seed: int) -> dict[str, th.Tensor]:
        venv = PettingZooVecEnv([functools.partial(make_parallel_env, SPREAD)] * 2)
        model = SafePPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=2, seed=seed)
        model.learn(384)
        return params(model)

    first = run(3)
    assert_same_parameters(first, run(3))
    assert not th.equal(first["action_net.weight"], run(4)["action_net.weight"])


def mappo_venv(copies: int = 1) -> PettingZooVecEnv:
    return PettingZooVecEnv([functools.partial(make_parallel_env, SPREAD)] * copies, centralized_critic=True, agent_id=True)


def test_the_centralized_critic_sees_the_global_state_and_the_actor_does_not():
    venv = mappo_venv()
    space: Any = venv.observation_space
    assert space["obs"].shape == (18 + 3,)
    assert space["state"].shape == (54 + 3,)  # MPE's state(): every agent's observation
    model = SafePPO(CentralizedCriticPolicy, venv, n_steps=16, batch_size=48, seed=0, normalize_value=True)
    obs: Any = venv.reset()
    np.testing.assert_array_equal(obs["obs"][:, -3:], np.eye(3))
    np.testing.assert_array_equal(obs["state"][:, -3:], np.eye(3))
    np.testing.assert_array_equal(obs["state"][0, :18], obs["obs"][0, :18])
    policy = model.policy
    tensors, _ = policy.obs_to_tensor(obs)

    def outputs(batch: dict[str, th.Tensor]) -> tuple[th.Tensor, th.Tensor]:
        with th.no_grad():
            return policy.get_distribution(batch).distribution.logits, policy.predict_values(batch)

    logits, values = outputs(tensors)
    new_logits, new_values = outputs({"obs": tensors["obs"], "state": tensors["state"] + 1.0})
    assert th.equal(logits, new_logits) and not th.allclose(values, new_values)
    new_logits, new_values = outputs({"obs": tensors["obs"] + 1.0, "state": tensors["state"]})
    assert not th.allclose(logits, new_logits) and th.equal(values, new_values)
    # the value branch is sized for the state, and is the critic's parameter group
    assert policy.mlp_extractor.value_net[0].in_features == 57
    assert policy.mlp_extractor.policy_net[0].in_features == 21


def test_a_mappo_model_saves_loads_and_predicts_from_the_agents_own_observation(tmp_path: Path):
    venv = mappo_venv()
    model = SafePPO(
        CentralizedCriticPolicy, venv, n_steps=16, batch_size=48, seed=0, normalize_value=True, critic_learning_rate=1e-3
    )
    model.learn(96)
    model.save(tmp_path / "mappo.zip")
    loaded = SafePPO.load(tmp_path / "mappo.zip", env=mappo_venv())
    assert isinstance(loaded.policy, CentralizedCriticPolicy)
    assert_same_parameters(params(model), params(loaded))
    assert [g["name"] for g in loaded.policy.optimizer.param_groups] == ["actor", "critic"]
    obs: Any = venv.reset()
    full, _ = loaded.predict(obs, deterministic=True)
    own, _ = loaded.predict(obs["obs"], deterministic=True)
    single, _ = loaded.predict(obs["obs"][1], deterministic=True)
    np.testing.assert_array_equal(full, own)
    assert int(single) == int(full[1])


def test_evaluation_counts_team_returns_of_whole_episodes():
    venv = relay_venv(copies=2, length=5)
    model = PPO("MlpPolicy", venv, seed=0)
    returns, lengths = evaluate_team(model, venv, n_eval_episodes=3)
    assert returns == [10.0, 10.0, 10.0] and lengths == [5, 5, 5]


@pytest.mark.parametrize(
    ("env_id", "overrides", "message"),
    [
        ("Pendulum-v1", {"centralized_critic": True}, "`centralized_critic` is for multi-agent environments"),
        (SPREAD, {"algo": "safe_recurrent_ppo", "policy": "MlpLstmPolicy"}, "not supported on multi-agent environments"),
        (SPREAD, {"pettingzoo_adapter": "supersuit"}, "needs pettingzoo_adapter: sb3_safe"),
        (SPREAD, {"env_wrapper": ["gymnasium.wrappers.ClipReward"]}, "`env_wrapper` wraps Gymnasium environments"),
    ],
)
def test_multiagent_profile_mistakes_are_one_line_errors(env_id: str, overrides: dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=message) as error:
        load_config("safe", env_id, overrides)
    assert "\n" not in str(error.value)


def test_heterogeneous_agents_and_unknown_modules_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"agent 'b' has observation space .* one shared policy needs the same spaces"):
        relay_venv(spaces_differ=True)
    with pytest.raises(ConfigError, match=r"cannot import 'mpe2\.no_such_env_v0'"):
        make_parallel_env("pettingzoo:mpe2.no_such_env_v0")
    with pytest.raises(ConfigError, match="has no parallel_env"):
        make_parallel_env("pettingzoo:mpe2")


TINY = {"n_envs": 2, "n_steps": 32, "batch_size": 96, "n_epochs": 2}


@pytest.mark.parametrize("env_id", [SPREAD, REFERENCE])
def test_short_training_runs_and_evaluates_by_team_return(tmp_path: Path, env_id: str):
    config = load_config("safe", env_id, {**TINY, "n_timesteps": 1536})
    result = train(config, seed=0, runs_root=tmp_path, eval_freq=768, n_eval_episodes=2)
    folder = RunFolder(result.run_dir)
    steps, means = folder.evaluations()
    assert steps == [768, 1536] and all(np.isfinite(means))
    assert np.isfinite(result.eval_mean)
    again = evaluate(result.run_dir, episodes=2)
    assert np.isfinite(again.mean)
    assert isinstance(result.model.policy, CentralizedCriticPolicy)


def test_a_nan_observation_in_one_agent_does_not_reach_the_parameters(tmp_path: Path):
    config = load_config("safe", SPREAD, {**TINY, "n_timesteps": 768})
    wrapper = make_fault_wrapper("non_finite", at_step=40, target="obs")
    result = train(config, seed=0, runs_root=tmp_path, env_wrapper=wrapper, eval_freq=768, n_eval_episodes=1)
    assert all(th.isfinite(p).all() for p in result.model.policy.parameters())
    events = RunFolder(result.run_dir).health_events()
    assert any(e.get("event") == "finding" and e.get("code") == "non_finite" for e in events)


def test_the_tuner_scores_a_multiagent_trial_by_the_team_returns_training_reports(tmp_path: Path):
    """One evaluation path: a trial's curve is the team-return evaluations that `train` writes for the same run."""
    import optuna

    from sb3_safe.tuning.objective import ObjectiveSettings, TrialObjective
    from sb3_safe.tuning.space import SearchSpace

    config = load_config("safe", SPREAD, TINY)
    settings = ObjectiveSettings(timesteps=1536, seeds_per_trial=1, n_evaluations=2, eval_episodes=2, last_evals=2)
    trial = optuna.trial.FixedTrial({})
    TrialObjective(config, SearchSpace(()), settings)(trial)  # type: ignore[arg-type]
    curve = trial.user_attrs["curve_seed0"]
    result = train(config.with_overrides({"n_timesteps": 1536}), seed=0, runs_root=tmp_path, eval_freq=768, n_eval_episodes=2)
    _, means = RunFolder(result.run_dir).evaluations()
    np.testing.assert_allclose(curve, means)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--env", "pettingzoo:mpe2.no_such_env_v0"], "cannot import 'mpe2.no_such_env_v0'"),
        (["--env", SPREAD, "--set", "centralized_critic=maybe"], "`centralized_critic`"),
        (["--env", SPREAD, "--set", "pettingzoo_adapter=rllib"], "`pettingzoo_adapter`"),
    ],
)
def test_multiagent_command_line_mistakes_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], expected: str
):
    from sb3_safe.cli import main

    runs = tmp_path / "runs"
    assert main(["train", "--runs-root", str(runs), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not runs.exists()


def test_a_mappo_baseline_checkpoint_resumes_under_the_safe_profile_with_its_weights(tmp_path: Path):
    from sb3_safe.build import build_run
    from sb3_safe.resume import read_saved

    baseline = load_config("baseline", SPREAD, {**TINY, "n_timesteps": 768})
    result = train(baseline, seed=0, runs_root=tmp_path, save_freq=384, eval_freq=768, n_eval_episodes=1)
    (step, checkpoint), *_ = RunFolder(result.run_dir).checkpoints()
    run = build_run(load_config("safe", SPREAD, TINY), seed=1, checkpoint=checkpoint)
    assert isinstance(run.model.policy, CentralizedCriticPolicy) and run.start_timesteps == step
    saved = read_saved(checkpoint).params["policy"]
    resumed = run.model.policy.state_dict()
    for name, tensor in saved.items():
        if not name.startswith("value_normalizer"):
            assert th.equal(tensor, resumed[name]), name
    assert [g["name"] for g in run.model.policy.optimizer.param_groups] == ["actor", "critic"]
    assert any("critic group" in change for change in run.resume_changes)
    run.close()


def test_team_eval_callback_writes_evaluations_and_the_best_model(tmp_path: Path):
    from sb3_safe.multiagent import TeamEvalCallback

    model = PPO("MlpPolicy", relay_venv(length=3), n_steps=6, batch_size=12, n_epochs=1, seed=0)
    callback = TeamEvalCallback(
        relay_venv(length=3), n_eval_episodes=2, eval_freq=3, log_path=str(tmp_path), best_model_save_path=str(tmp_path)
    )
    model.learn(12, callback=callback)
    data = np.load(tmp_path / "evaluations.npz")
    assert data["timesteps"].tolist() == [6, 12] and data["results"].tolist() == [[6.0, 6.0], [6.0, 6.0]]
    assert (tmp_path / "best_model.zip").is_file() and callback.last_mean_reward == 6.0
