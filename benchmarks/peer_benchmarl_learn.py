"""
The peer's learning runs for ``make bench-vmas``: BenchMARL's MAPPO (TorchRL) on a VMAS task, one seed, an
agent-step budget, deterministic evaluations on a fixed schedule. Runs in the peer's virtual environment
(``make bench-scale``'s ``PEER_VENV``), never in the project's; it does not import sb3_safe.

Two recipes:

- ``matched``: sb3-safe's update shape (``--copies`` copies x ``--steps`` steps per batch, 10 epochs, minibatches
  of 1,000 frames, 64x64 Tanh actor and critic) with BenchMARL's fine-tuned VMAS rates (lr 5e-5, gamma 0.9).
- ``tuned``: BenchMARL's fine-tuned VMAS configuration (``fine_tuned/vmas/conf/config.yaml`` in its repository):
  60,000 frames per batch from 600 copies, 45 minibatch iterations of 4,096 frames, gamma 0.9, lr 5e-5, its
  default 256x256 Tanh MLP and MAPPO settings (clip 0.2, GAE lambda 0.9, entropy 0, tanh-normal actions).

A frame steps every agent of a copy: a budget of ``agent_steps`` is ``agent_steps / n_agents`` frames. The task's
options come from the caller (``--task-kwargs``, JSON), so both sides train on the same task. Per-agent episode
returns are computed as BenchMARL logs them (each rollout cut at its first done, reward summed over time, mean
over agents). Seconds are wall-clock from the start of ``Experiment.run`` (collection, training and evaluation).

Writes a JSON file: ``{"recipe", "task", "seed", "config", "evaluations": [{"agent_steps", "seconds",
"returns"}...], "seconds"}``.

Usage: ``peer-venv/bin/python benchmarks/peer_benchmarl_learn.py --task balance --task-kwargs '{"n_agents": 4}'
--seed 0 --agent-steps 10000000 --evaluations 10 --episodes 20 --out peer.json``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from benchmarl.algorithms import MappoConfig
from benchmarl.environments import VmasTask
from benchmarl.experiment import Experiment, ExperimentConfig
from benchmarl.experiment.callback import Callback
from benchmarl.models.mlp import MlpConfig

RECIPES: dict[str, dict[str, Any]] = {
    "matched": {
        "minibatch_iters": 10,
        "minibatch_size": 1000,
        "num_cells": [64, 64],
        "lr": 5e-5,
        "gamma": 0.9,
    },
    "tuned": {
        "frames_per_batch": 60_000,
        "copies": 600,
        "minibatch_iters": 45,
        "minibatch_size": 4096,
        "num_cells": [256, 256],
        "lr": 5e-5,
        "gamma": 0.9,
    },
}


class EvaluationRecorder(Callback):  # type: ignore[misc]
    """Per-agent episode returns and wall-clock seconds at every evaluation."""

    def __init__(self, frames_to_agent_steps: int) -> None:
        super().__init__()
        self.frames_to_agent_steps = frames_to_agent_steps
        self.start = time.perf_counter()
        self.rows: list[dict[str, Any]] = []

    def on_evaluation_end(self, rollouts: list[Any]) -> None:
        returns = []
        for rollout in rollouts:
            done = rollout.get(("next", "done")).reshape(rollout.batch_size[0], -1).any(-1)
            ends = done.nonzero(as_tuple=True)[0]
            length = int(ends[0]) + 1 if ends.numel() else rollout.batch_size[0]
            reward = rollout.get(("next", "agents", "reward"))[:length]
            returns.append(float(reward.sum(0).mean()))
        self.rows.append(
            {
                "agent_steps": int(self.experiment.total_frames) * self.frames_to_agent_steps,
                "seconds": time.perf_counter() - self.start,
                "returns": returns,
            }
        )


def run(
    task_name: str,
    task_kwargs: dict[str, Any],
    recipe: str,
    seed: int,
    agent_steps: int,
    evaluations: int,
    episodes: int,
    shape_of_matched: tuple[int, int] = (500, 50),
) -> dict[str, Any]:
    torch.set_num_threads(1)
    copies, steps = shape_of_matched
    shape = {"frames_per_batch": copies * steps, "copies": copies, **RECIPES[recipe]}
    n_agents = int(task_kwargs["n_agents"])
    frames = shape["frames_per_batch"]
    iterations = max(1, round(agent_steps / n_agents / frames))
    config = ExperimentConfig.get_from_yaml()
    config.sampling_device = config.train_device = config.buffer_device = "cpu"
    config.gamma = shape["gamma"]
    config.lr = shape["lr"]
    config.on_policy_collected_frames_per_batch = frames
    config.on_policy_n_envs_per_worker = shape["copies"]
    config.on_policy_n_minibatch_iters = shape["minibatch_iters"]
    config.on_policy_minibatch_size = shape["minibatch_size"]
    config.max_n_frames = frames * iterations
    config.evaluation = True
    config.evaluation_interval = frames * max(1, iterations // evaluations)
    config.evaluation_episodes = episodes
    config.evaluation_deterministic_actions = True
    config.loggers = []
    config.create_json = True  # BenchMARL evaluates only when something logs; the JSON goes to a scratch folder
    config.checkpoint_interval = 0
    config.checkpoint_at_end = False
    config.render = False
    config.save_folder = tempfile.mkdtemp()
    task = getattr(VmasTask, task_name.upper()).get_from_yaml()
    task.config.update(task_kwargs)
    model = MlpConfig.get_from_yaml()
    model.num_cells = list(shape["num_cells"])
    recorder = EvaluationRecorder(n_agents)
    experiment = Experiment(
        task=task,
        algorithm_config=MappoConfig.get_from_yaml(),
        model_config=model,
        critic_model_config=model,
        seed=seed,
        config=config,
        callbacks=[recorder],
    )
    recorder.start = time.perf_counter()
    experiment.run()
    return {
        "recipe": recipe,
        "task": task_name,
        "task_kwargs": task_kwargs,
        "seed": seed,
        "config": {**shape, "iterations": iterations, "evaluation_interval_frames": config.evaluation_interval},
        "evaluations": recorder.rows,
        "seconds": time.perf_counter() - recorder.start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--task", required=True, choices=["balance", "navigation", "transport"])
    parser.add_argument("--task-kwargs", default="{}", help="the task's options, JSON (n_agents required)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="matched")
    parser.add_argument("--copies", type=int, default=500, help="matched: copies of the task")
    parser.add_argument("--steps", type=int, default=50, help="matched: steps of each copy per batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--agent-steps", type=int, default=10_000_000)
    parser.add_argument("--evaluations", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = run(
        args.task,
        json.loads(args.task_kwargs),
        args.recipe,
        args.seed,
        args.agent_steps,
        args.evaluations,
        args.episodes,
        (args.copies, args.steps),
    )
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text(json.dumps(result, indent=1))
    partial.replace(args.out)


if __name__ == "__main__":
    main()
