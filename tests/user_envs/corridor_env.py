"""A user's own environments, registered by importing this module (as a user's package would):
``corridor_env:Corridor-v0`` or ``--gym-packages corridor_env``.

- ``Corridor-v0``: walk right to the end of a slippery corridor (reward 1 there, -0.01 a step);
  no snapshot code: ultrarl deep-copies it.
- ``CorridorState-v0``: the same with ``get_state``/``set_state`` (the snapshot protocol).
- ``CorridorGlobalRng-v0``: slips with Python's global RNG, which no copy of the environment
  holds: restoring it does not replay, so it has no snapshots.
- ``CorridorCrash-v0``: kills its own process on reset inside a worker process (as a crash in
  native code would), never in the process that started the workers.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
from typing import Any

import gymnasium as gym
import numpy as np

LENGTH = 10


class Corridor(gym.Env):
    observation_space = gym.spaces.Box(0.0, float(LENGTH), shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)  # 0 left, 1 right

    def __init__(self) -> None:
        self.position = 0

    def _slip(self) -> bool:
        return bool(self.np_random.random() < 0.2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.position = 0
        return np.array([self.position], dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        move = 1 if int(action) == 1 else -1
        if self._slip():
            move = -move
        self.position = int(np.clip(self.position + move, 0, LENGTH))
        done = self.position == LENGTH
        return np.array([self.position], dtype=np.float32), 1.0 if done else -0.01, done, False, {}


class CorridorWithState(Corridor):
    def get_state(self) -> dict[str, Any]:
        return {"position": self.position, "rng": self.np_random.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        self.position = state["position"]
        self.np_random.bit_generator.state = state["rng"]


class CorridorGlobalRng(Corridor):
    def _slip(self) -> bool:
        return random.random() < 0.2


class CorridorCrash(Corridor):
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if multiprocessing.parent_process() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().reset(seed=seed, options=options)


for _id, _cls in (("Corridor-v0", Corridor), ("CorridorState-v0", CorridorWithState),
                  ("CorridorGlobalRng-v0", CorridorGlobalRng), ("CorridorCrash-v0", CorridorCrash)):
    if _id not in gym.registry:
        gym.register(_id, entry_point=_cls, max_episode_steps=50)
