"""
Environments sb3-safe registers with Gymnasium on import, for its recurrent and masked profiles.

- **Partially observed variants** (rl-baselines3-zoo's ids and convention): ``CartPoleNoVel-v1``,
  ``PendulumNoVel-v1``, ``MountainCarContinuousNoVel-v0``, ``LunarLanderNoVel-v3``. The
  velocity entries of the observation are set to zero (the observation keeps its shape, as in
  rl-zoo's ``MaskVelocityWrapper``, so models trained there load here): a memoryless policy
  cannot tell where things are going, a recurrent one can.
- **A small task with invalid actions**: ``MaskedMaze-v0`` (:class:`MaskedMaze`), for
  ``MaskablePPO``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["NO_VELOCITY", "MaskVelocity", "MaskedMaze"]

#: Partially observed id -> (the full id, indices of the velocities in its observation)
NO_VELOCITY: dict[str, tuple[str, tuple[int, ...]]] = {
    "CartPoleNoVel-v1": ("CartPole-v1", (1, 3)),
    "PendulumNoVel-v1": ("Pendulum-v1", (2,)),
    "MountainCarContinuousNoVel-v0": ("MountainCarContinuous-v0", (1,)),
    "LunarLanderNoVel-v3": ("LunarLander-v3", (2, 3, 5)),
}


class MaskVelocity(gym.ObservationWrapper[np.ndarray, Any, np.ndarray]):
    """
    Zero the velocity entries of an observation.

    :param env: The environment
    :param indices: Positions of the velocities in the observation vector
    """

    def __init__(self, env: gym.Env[np.ndarray, Any], indices: tuple[int, ...]) -> None:
        super().__init__(env)
        shape = env.observation_space.shape
        assert shape is not None, "MaskVelocity needs a Box observation space"
        self.mask = np.ones(shape, dtype=np.float32)
        self.mask[list(indices)] = 0.0

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """:return: The observation with its velocities set to zero"""
        return (observation * self.mask).astype(observation.dtype)


def make_no_velocity(env_id: str, **kwargs: Any) -> gym.Env[np.ndarray, Any]:
    """:return: The full environment of a partially observed id (:data:`NO_VELOCITY`), its velocities zeroed"""
    base, indices = NO_VELOCITY[env_id]
    return MaskVelocity(gym.make(base, **kwargs), indices)


class MaskedMaze(gym.Env[np.ndarray, np.int64]):
    """
    Reach the far corner of a small maze whose walls change every episode; moves into a wall or
    off the grid are invalid.

    Observation: the agent's cell (one-hot) and the wall map, ``2 * size * size`` floats. Actions:
    up, down, left, right. :meth:`action_masks` gives the valid moves (sb3-contrib's convention,
    read by ``MaskablePPO``); an invalid move taken anyway leaves the agent where it is. Reward:
    +1 at the goal, -0.01 per step; episodes end at the goal or after ``4 * size * size`` steps.
    Every maze has a path (walls are redrawn until breadth-first search finds one).

    :param size: Side of the grid
    :param wall_fraction: Share of the cells that are walls
    """

    metadata = {"render_modes": ["rgb_array"]}  # noqa: RUF012 - Gymnasium declares it an instance attribute
    MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))

    def __init__(self, size: int = 6, wall_fraction: float = 0.25, render_mode: str | None = None) -> None:
        super().__init__()
        self.render_mode = render_mode
        self.size = size
        self.wall_fraction = wall_fraction
        self.observation_space = spaces.Box(0.0, 1.0, shape=(2 * size * size,), dtype=np.float32)
        self.action_space = spaces.Discrete(4)
        self.max_steps = 4 * size * size
        self.walls = np.zeros((size, size), dtype=bool)
        self.position = (0, 0)
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a new maze with a path from the start corner to the goal corner."""
        super().reset(seed=seed)
        while True:
            walls = self.np_random.random((self.size, self.size)) < self.wall_fraction
            walls[0, 0] = walls[-1, -1] = False
            if self._reachable(walls):
                break
        self.walls, self.position, self.steps = walls, (0, 0), 0
        return self._observation(), {}

    def _reachable(self, walls: np.ndarray) -> bool:
        seen, queue = {(0, 0)}, deque([(0, 0)])
        while queue:
            cell = queue.popleft()
            if cell == (self.size - 1, self.size - 1):
                return True
            for nxt in self._neighbours(cell, walls):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return False

    def _neighbours(self, cell: tuple[int, int], walls: np.ndarray) -> list[tuple[int, int]]:
        out = []
        for dr, dc in self.MOVES:
            r, c = cell[0] + dr, cell[1] + dc
            if 0 <= r < self.size and 0 <= c < self.size and not walls[r, c]:
                out.append((r, c))
        return out

    def _target(self, action: int) -> tuple[int, int] | None:
        dr, dc = self.MOVES[action]
        r, c = self.position[0] + dr, self.position[1] + dc
        if 0 <= r < self.size and 0 <= c < self.size and not self.walls[r, c]:
            return r, c
        return None

    def action_masks(self) -> np.ndarray:
        """:return: Which of the four moves are valid now"""
        return np.array([self._target(a) is not None for a in range(4)], dtype=bool)

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move (an invalid move stays put); +1 and the end at the goal, -0.01 otherwise."""
        target = self._target(int(action))
        if target is not None:
            self.position = target
        self.steps += 1
        goal = self.position == (self.size - 1, self.size - 1)
        reward = 1.0 if goal else -0.01
        return self._observation(), reward, goal, self.steps >= self.max_steps and not goal, {}

    def render(self) -> np.ndarray:
        """:return: The maze as an RGB image, 8 pixels per cell (walls black, agent blue, goal green)"""
        image = np.full((self.size, self.size, 3), 255, dtype=np.uint8)
        image[self.walls] = 0
        image[-1, -1] = (0, 160, 0)
        image[self.position] = (0, 0, 255)
        return np.kron(image, np.ones((8, 8, 1), dtype=np.uint8))

    def _observation(self) -> np.ndarray:
        agent = np.zeros((self.size, self.size), dtype=np.float32)
        agent[self.position] = 1.0
        return np.concatenate([agent.ravel(), self.walls.astype(np.float32).ravel()])


def register() -> None:
    """Register the environments above with Gymnasium (idempotent)."""
    for env_id in NO_VELOCITY:
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="sb3_safe.tasks:make_no_velocity", kwargs={"env_id": env_id})
    if "MaskedMaze-v0" not in gym.registry:
        gym.register("MaskedMaze-v0", entry_point="sb3_safe.tasks:MaskedMaze")


register()
