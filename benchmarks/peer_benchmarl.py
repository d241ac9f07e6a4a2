"""
The peer: BenchMARL's MAPPO (TorchRL) on the same VMAS task with the same update shape as sb3-safe's
block, for ``make bench-scale``. Runs in a virtual environment of its own (``scripts/peer-venv``),
never in the project's: BenchMARL brings its own TorchRL. It does not import sb3_safe.

Matched settings: VMAS ``transport`` (4 agents, ``max_steps`` 100, ``package_mass`` 5), ``copies``
environments, ``copies * 50`` frames per batch (a frame steps every agent of a copy: 100,000 agent
samples per update at 500 copies), 10 epochs, minibatches of 1,000 frames (4,000 agent samples),
64x64 actor and critic, CPU, one torch thread. Evaluation, checkpoints and loggers are off.

Prints one JSON line: ``{"copies": ..., "agent_steps_per_s": ..., "seconds_per_update": ...}``.

Usage: ``peer-venv/bin/python benchmarks/peer_benchmarl.py [--copies 500] [--updates 3]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from benchmarl.algorithms import MappoConfig
from benchmarl.environments import VmasTask
from benchmarl.experiment import Experiment, ExperimentConfig
from benchmarl.models.mlp import MlpConfig


def run(copies: int, updates: int, steps_per_copy: int = 50) -> dict[str, float]:
    torch.set_num_threads(1)
    frames = copies * steps_per_copy
    config = ExperimentConfig.get_from_yaml()
    config.sampling_device = config.train_device = config.buffer_device = "cpu"
    config.on_policy_collected_frames_per_batch = frames
    config.on_policy_n_envs_per_worker = copies
    config.on_policy_n_minibatch_iters = 10
    config.on_policy_minibatch_size = min(1000, frames)
    config.max_n_frames = frames * updates
    config.evaluation = False
    config.loggers = []
    config.create_json = False
    config.checkpoint_interval = 0
    config.render = False
    config.save_folder = tempfile.mkdtemp()
    task = VmasTask.TRANSPORT.get_from_yaml()
    task.config.update({"max_steps": 100, "n_agents": 4, "package_mass": 5})
    model = MlpConfig.get_from_yaml()
    model.num_cells = [64, 64]
    algorithm = MappoConfig.get_from_yaml()
    experiment = Experiment(
        task=task, algorithm_config=algorithm, model_config=model, critic_model_config=model, seed=0, config=config
    )
    start = time.perf_counter()
    experiment.run()
    seconds = time.perf_counter() - start
    agents = 4
    return {
        "copies": copies,
        "agent_steps_per_s": frames * updates * agents / seconds,
        "seconds_per_update": seconds / updates,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--copies", type=int, default=500)
    parser.add_argument("--updates", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.copies, args.updates)))
