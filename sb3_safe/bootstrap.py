"""
:class:`BatchedBootstrap`: SB3's time-limit bootstrap in one forward pass for many copies.

When an episode ends by its time limit, SB3's ``collect_rollouts`` adds ``gamma * V(terminal
observation)`` to the step's reward, one copy at a time: an ``obs_to_tensor`` and a forward pass of
batch size 1 per truncated slot (SB3 issue #633). With 500 copies of a 4-agent task whose episodes
all end at the same time limit that is 2,000 forward passes in one step, more time than the
simulator takes for the whole rollout (measured: ``make bench-scale``).

The wrapper runs after the rollout's callbacks (where SB3 reads the step's locals) and, when a step
has at least ``min_slots`` truncated slots, computes their values in one batch, adds them to the
rewards the buffer will store and marks those slots done so that SB3's loop skips them. With fewer
slots it leaves them to SB3's loop: the values are the same up to float rounding of a batched
matrix product, and SB3's own numbers are kept where runs are small enough to compare bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

__all__ = ["MIN_SLOTS", "BatchedBootstrap"]

#: Truncated slots in one step from which their values are computed in one batch
MIN_SLOTS = 32


class BatchedBootstrap(BaseCallback):
    """
    Wrap a rollout's callback so that many time-limit bootstraps of one step take one forward pass.

    :param algorithm: The algorithm collecting the rollout (its policy and ``gamma``)
    :param callback: The rollout's callback, called first at every event
    :param min_slots: Fewest truncated slots in a step to batch (fewer: SB3's loop)
    """

    def __init__(self, algorithm: OnPolicyAlgorithm, callback: BaseCallback, min_slots: int = MIN_SLOTS) -> None:
        super().__init__()
        self.algorithm = algorithm
        self.callback = callback
        self.min_slots = min_slots
        self.checked = False

    def update_locals(self, locals_: dict[str, Any]) -> None:
        self.callback.update_locals(locals_)
        self.step_locals = locals_

    def on_rollout_start(self) -> None:
        self.checked = False  # the locals SB3 hands over are checked once per rollout, not at every step
        self.callback.on_rollout_start()

    def on_rollout_end(self) -> None:
        self.callback.on_rollout_end()

    def on_step(self) -> bool:
        if not self.callback.on_step():
            return False
        missing = (
            [] if getattr(self, "checked", False) else [k for k in ("dones", "rewards", "infos") if k not in self.step_locals]
        )
        self.checked = True
        if missing:
            raise RuntimeError(
                f"SB3's collect_rollouts no longer hands {', '.join(f'`{key}`' for key in missing)} to callbacks: the "
                "batched time-limit bootstrap reads and changes them there. Pin stable-baselines3 to a version sb3-safe "
                "supports, or report this to sb3-safe"
            )
        dones, infos, rewards = self.step_locals["dones"], self.step_locals["infos"], self.step_locals["rewards"]
        slots = [
            int(i)
            for i in np.flatnonzero(dones)
            if infos[i].get("terminal_observation") is not None and infos[i].get("TimeLimit.truncated", False)
        ]
        if len(slots) < self.min_slots:
            return True
        terminal = [infos[i]["terminal_observation"] for i in slots]
        stacked: Any = (
            {key: np.stack([obs[key] for obs in terminal]) for key in terminal[0]}
            if isinstance(terminal[0], dict)
            else np.stack(terminal)
        )
        policy = self.algorithm.policy
        with th.no_grad():
            values = policy.predict_values(policy.obs_to_tensor(stacked)[0]).flatten().cpu().numpy()
        for slot, value in zip(slots, values, strict=True):
            rewards[slot] += self.algorithm.gamma * value
            # Bootstrapped here: SB3's loop skips a slot not marked truncated. The slot's info is replaced by a copy
            # that says so, in the list SB3 reads next; the info dict the environment returned is left as it was.
            infos[slot] = {**infos[slot], "TimeLimit.truncated": False, "bootstrapped_value": float(value)}
        return True

    def _on_step(self) -> bool:
        return True
