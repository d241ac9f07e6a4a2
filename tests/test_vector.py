"""Gymnasium's VectorEnv and envpool as SB3 VecEnvs (``--vec-env gymnasium|gymnasium-async|envpool``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

from sb3_safe.cli import main
from sb3_safe.vector import make_batched_env
from tests.algorithms import assert_same_parameters, params
from tests.extras import require

envpool = require("envpool", "batched")


def run(venv: VecEnv, steps: int, seed: int = 0) -> tuple[list[tuple[float, int]], np.ndarray, list[np.ndarray]]:
    """Fixed actions (a sine per copy): every finished episode's (return, length), the last observations, terminal ones."""
    venv.seed(seed)
    obs = venv.reset()
    episodes, terminals = [], []
    for t in range(steps):
        actions = np.sin(0.1 * t + np.arange(venv.num_envs))[:, None].astype(np.float32)
        obs, _, dones, infos = venv.step(actions)
        for i in np.flatnonzero(dones):
            episodes.append((float(infos[i]["episode"]["r"]), int(infos[i]["episode"]["l"])))
            terminals.append(infos[i]["terminal_observation"])
    assert isinstance(obs, np.ndarray)
    return episodes, obs, terminals


@pytest.mark.parametrize("kind", ["gymnasium", "gymnasium-async"])
def test_gymnasiums_vector_env_steps_like_dummyvecenv(kind: str):
    expected = run(make_vec_env("Pendulum-v1", n_envs=3, seed=0), 450)
    got = run(make_batched_env(kind, "Pendulum-v1", 3, seed=0), 450)
    assert len(got[0]) == len(expected[0]) == 6
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-5)
    np.testing.assert_allclose(np.array(got[2]), np.array(expected[2]), rtol=1e-5)


def test_envpool_makes_no_transition_at_its_reset_step():
    """
    envpool resets on the step after a done: reward 0, the action ignored. The adapter resets the finished
    copy at once, so its stream is envpool's with that step left out, and every episode is 200 steps long.
    """
    raw = envpool.make("Pendulum-v1", env_type="gymnasium", num_envs=1, seed=5)
    raw.reset()
    rewards: list[float] = []
    terminal: list[np.ndarray] = []
    t = 0
    while len(rewards) < 450:
        action = np.sin(0.1 * len(rewards) + np.arange(1))[:, None].astype(np.float32)
        obs, reward, terminated, truncated, _ = raw.step(action)
        t += 1
        rewards.append(float(reward[0]))
        if terminated[0] or truncated[0]:
            terminal.append(obs[0])
            obs, reward, *_ = raw.step(action)  # the fake transition: the first observation, reward 0
            assert reward[0] == 0.0
    episodes, _, terminals = run(make_batched_env("envpool", "Pendulum-v1", 1, seed=5), 450, seed=5)
    assert [length for _, length in episodes] == [200, 200]
    np.testing.assert_allclose([r for r, _ in episodes], [sum(rewards[:200]), sum(rewards[200:400])], rtol=1e-5)
    np.testing.assert_allclose(np.array(terminals), np.array(terminal[:2]), rtol=1e-6)


class Probe(BaseCallback):
    """During the first rollout: each step's raw rewards and infos; at its end, the buffer's rewards and V(terminal)."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[np.ndarray] = []
        self.infos: list[list[dict[str, Any]]] = []

    def _on_step(self) -> bool:
        if not hasattr(self, "buffered"):
            self.raw.append(self.locals["rewards"].copy())  # SB3 adds the bootstrap after the callback
            self.infos.append(self.locals["infos"])
        return True

    def _on_rollout_end(self) -> None:
        if hasattr(self, "buffered"):
            return
        self.buffered = self.model.rollout_buffer.rewards.copy()  # type: ignore[attr-defined]
        self.values: dict[tuple[int, int], float] = {}
        for t, infos in enumerate(self.infos):
            for i, info in enumerate(infos):
                if "terminal_observation" in info:
                    obs = self.model.policy.obs_to_tensor(info["terminal_observation"])[0]
                    with th.no_grad():
                        policy: Any = self.model.policy
                        self.values[t, i] = float(policy.predict_values(obs)[0, 0])


@pytest.mark.parametrize("kind", ["gymnasium", "envpool"])
def test_a_time_limit_bootstraps_from_the_terminal_observations_value(kind: str):
    """Through SB3's own rollout: the reward stored at a truncation is r + gamma * V(terminal observation)."""
    model = PPO("MlpPolicy", make_batched_env(kind, "Pendulum-v1", 2, seed=0), n_steps=256, batch_size=64, gamma=0.9, seed=0)
    probe = Probe()
    model.learn(512, callback=probe)
    assert sorted(probe.values) == [(199, 0), (199, 1)]
    for (t, i), value in probe.values.items():
        assert probe.infos[t][i]["TimeLimit.truncated"] is True
        assert probe.buffered[t, i] == pytest.approx(probe.raw[t][i] + 0.9 * value, rel=1e-5)
    np.testing.assert_array_equal(probe.buffered[:199], np.stack(probe.raw[:199]))


@pytest.mark.parametrize("kind", ["gymnasium", "envpool"])
def test_seeding_through_the_model_reproduces_a_run(kind: str):
    def train(seed: int) -> dict[str, th.Tensor]:
        model = PPO("MlpPolicy", make_batched_env(kind, "Pendulum-v1", 2, seed=0), n_steps=64, batch_size=64, seed=seed)
        model.learn(256)
        return params(model)

    first = train(3)
    assert_same_parameters(first, train(3))
    assert not th.equal(first["action_net.weight"], train(4)["action_net.weight"])


def test_envpool_without_the_environment_is_one_line_and_no_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = main(["train", "--env", "CartPoleNoVel-v1", "--vec-env", "envpool", "--runs-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "envpool has no environment 'CartPoleNoVel-v1'" in err and "--vec-env gymnasium" in err
    assert not any(tmp_path.iterdir())


def test_training_with_a_batched_env_writes_a_run(tmp_path: Path):
    code = main(
        [
            "train",
            "--env",
            "Pendulum-v1",
            "--vec-env",
            "gymnasium",
            "--timesteps",
            "2048",
            "--set",
            "n_steps=256",
            "--runs-root",
            str(tmp_path),
            "--eval-freq",
            "2048",
        ]
    )
    assert code == 0
    (run_dir,) = (tmp_path / "Pendulum-v1").iterdir()
    assert (run_dir / "model.zip").is_file()


@pytest.mark.parametrize("copies", [40, 8])
def test_safeppo_bootstraps_many_time_limits_in_one_pass_with_sb3s_values(copies: int):
    """
    40 copies end their episodes together at step 200: SafePPO computes the 40 values in one forward pass
    (sb3_safe.bootstrap); with 8 it leaves them to SB3's loop. Either way each stored reward is
    r + gamma * V(terminal observation), V as SB3 computes it for one observation.
    """
    from sb3_safe import SafePPO

    model = SafePPO("MlpPolicy", make_batched_env("gymnasium", "Pendulum-v1", copies, seed=0), n_steps=256, gamma=0.9, seed=0)
    probe = Probe()
    model.learn(256 * copies, callback=probe)
    assert sorted(probe.values) == [(199, i) for i in range(copies)]
    batched = [bool(probe.infos[199][i].get("bootstrapped_value") is not None) for i in range(copies)]
    assert all(batched) if copies >= 32 else not any(batched)
    for (t, i), value in probe.values.items():
        assert probe.buffered[t, i] == pytest.approx(probe.raw[t][i] + 0.9 * value, rel=1e-5)


def test_without_envpool_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    import sys

    from sb3_safe.errors import ConfigError

    monkeypatch.setitem(sys.modules, "envpool", None)
    with pytest.raises(ConfigError, match=r"pip install 'sb3-safe\[batched\]'"):
        make_batched_env("envpool", "Pendulum-v1", 2, seed=0)
