"""
``sb3-safe`` on VMAS transport seen in the goal's frame: is the frame what stops the policy finding the task?

Runs ``sb3-safe`` with its arguments after rotating every transport agent's observation and force so that +x points
from the package to the goal (the agent's own position stays in the world's frame, for the walls). In that frame
"push only from the far side" is a threshold on one input instead of a product of two. Not a product option: a
measurement for the profiles page.

Usage: ``python benchmarks/transport_goal_frame.py train --env vmas:transport --profile safe --seed 0 ...``
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import torch


def _frame(scenario: Any) -> tuple[torch.Tensor, torch.Tensor]:
    package = scenario.packages[0]
    towards_goal = package.goal.state.pos - package.state.pos
    e1 = towards_goal / (towards_goal.norm(dim=-1, keepdim=True) + 1e-6)
    return e1, torch.stack([-e1[:, 1], e1[:, 0]], dim=-1)


def _in_frame(vector: torch.Tensor, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
    return torch.stack([(vector * e1).sum(-1), (vector * e2).sum(-1)], dim=-1)


def observation(scenario: Any, agent: Any) -> torch.Tensor:
    """Transport's observation (position, velocity, package - goal, package - agent, package velocity, on goal)."""
    e1, e2 = _frame(scenario)
    package = scenario.packages[0]
    return torch.cat(
        [
            agent.state.pos,
            _in_frame(agent.state.vel, e1, e2),
            _in_frame(package.state.pos - package.goal.state.pos, e1, e2),
            _in_frame(package.state.pos - agent.state.pos, e1, e2),
            _in_frame(package.state.vel, e1, e2),
            package.on_goal.unsqueeze(-1),
        ],
        dim=-1,
    )


def process_action(scenario: Any, agent: Any) -> None:
    """The policy's force, given in the goal's frame, back in the world's."""
    e1, e2 = _frame(scenario)
    force = agent.action.u
    agent.action.u = (force[:, :1] * e1 + force[:, 1:2] * e2).clamp(-agent.u_range, agent.u_range)


@contextlib.contextmanager
def goal_frame() -> Iterator[None]:
    """Within it, ``vmas.make_env("transport")`` builds the scenario in the goal's frame (VMAS loads scenarios afresh)."""
    import vmas  # noqa: F401  (loads the scenarios module)

    scenarios: Any = sys.modules["vmas.scenarios"]
    load = scenarios.load

    def load_in_frame(name: str) -> Any:
        module = load(name)
        if name == "transport.py":
            module.Scenario.observation = observation
            module.Scenario.process_action = process_action
        return module

    scenarios.load = load_in_frame
    try:
        yield
    finally:
        scenarios.load = load


if __name__ == "__main__":
    from sb3_safe.cli import main

    with goal_frame():
        code = main(sys.argv[1:])
    sys.exit(code)
