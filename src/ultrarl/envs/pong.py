"""ALE Pong from the RAM: the features a person (and an LLM) can read, and single-point episodes.

RAM addresses (the Atari 2600 Pong cartridge): ball x 49, ball y 54, the agent's (right, green)
paddle y 51, the opponent's paddle y 50. y grows downwards; the ball moves towards the agent
when its x grows. Between points the ball is not drawn and its y reads 0. Velocities are the
change since the previous observation (one agent step = 4 frames in v5).

``ultrarl/PongPoint-v0`` ends the episode at the first point: reward 1 when the agent wins the
point, 0 when it loses it, which is how the refinement literature measures Pong (win rate).
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

RAM_BALL_X, RAM_BALL_Y, RAM_OWN_PADDLE_Y, RAM_OPPONENT_PADDLE_Y = 49, 54, 51, 50

PONG_FEATURES: tuple[tuple[str, str], ...] = (
    ("ball x", "px"),
    ("ball y", "px"),
    ("ball x velocity", "px/step"),
    ("ball y velocity", "px/step"),
    ("own paddle y", "px"),
    ("opponent paddle y", "px"),
    ("ball in play", ""),
)
# Pong's minimal action set, in index order. RIGHT moves the agent's paddle up, LEFT down.
PONG_ACTION_NAMES: tuple[str, ...] = (
    "stay (NOOP)",
    "stay and serve (FIRE)",
    "move paddle up (RIGHT)",
    "move paddle down (LEFT)",
    "move paddle up and serve (RIGHTFIRE)",
    "move paddle down and serve (LEFTFIRE)",
)
# Actions that act identically, as the representative of each one's class: the game serves by
# itself, so FIRE does nothing, and RIGHTFIRE/LEFTFIRE move as RIGHT/LEFT (measured: from the
# same snapshot, each pair gives identical observations, and so does a random action sequence
# against its representatives). PPO agents use the FIRE variants freely; an expert does not.
PONG_REPRESENTATIVE_ACTIONS = (0, 0, 2, 3, 2, 3)
POINT_MAX_STEPS = 2000  # a point rarely lasts 400 agent steps; this only stops a stuck rally


def pong_features_from_ram(ram: np.ndarray, previous_ram: np.ndarray | None = None) -> np.ndarray:
    """The 7 features of ``PONG_FEATURES`` from one RAM observation (and the one before)."""
    ram = np.asarray(ram).astype(np.float64).ravel()
    in_play = ram[RAM_BALL_Y] > 0 and ram[RAM_BALL_X] > 0
    velocity = np.zeros(2)
    if previous_ram is not None:
        previous = np.asarray(previous_ram).astype(np.float64).ravel()
        if in_play and previous[RAM_BALL_Y] > 0 and previous[RAM_BALL_X] > 0:
            velocity = ram[[RAM_BALL_X, RAM_BALL_Y]] - previous[[RAM_BALL_X, RAM_BALL_Y]]
    return np.array(
        [
            ram[RAM_BALL_X] if in_play else 0.0,
            ram[RAM_BALL_Y] if in_play else 0.0,
            velocity[0],
            velocity[1],
            ram[RAM_OWN_PADDLE_Y],
            ram[RAM_OPPONENT_PADDLE_Y],
            float(in_play),
        ]
    )


class PongPointEnv(gym.Wrapper):
    """One point of ALE Pong; observation = the RAM features above (float32)."""

    def __init__(self, **ale_kwargs: Any) -> None:
        env = gym.make("ALE/Pong-v5", obs_type="ram", max_episode_steps=None, **ale_kwargs).unwrapped
        super().__init__(env)
        self.observation_space = gym.spaces.Box(low=-256.0, high=256.0, shape=(len(PONG_FEATURES),), dtype=np.float32)
        self._previous_ram: np.ndarray | None = None

    def _observe(self, ram: np.ndarray) -> np.ndarray:
        features = pong_features_from_ram(ram, self._previous_ram)
        self._previous_ram = np.array(ram, copy=True)
        return features.astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        ram, info = self.env.reset(seed=seed, options=options)
        self._previous_ram = None
        return self._observe(ram), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        ram, reward, terminated, truncated, info = self.env.step(action)
        point_over = float(reward) != 0.0
        info["point_won"] = float(reward) > 0 if point_over else None
        return self._observe(ram), (1.0 if float(reward) > 0 else 0.0), bool(terminated or point_over), truncated, info


def register_pong_envs() -> None:
    if "ultrarl/PongPoint-v0" in gym.registry:
        return
    gym.register(id="ultrarl/PongPoint-v0", entry_point=PongPointEnv, max_episode_steps=POINT_MAX_STEPS)
