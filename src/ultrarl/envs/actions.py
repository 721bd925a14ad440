"""Comparing actions in an action space's own units."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from ultrarl.envs.pong import PONG_REPRESENTATIVE_ACTIONS

# Discrete actions that act identically, by environment id: each index's class representative.
# Two actions of one class are the same action to every comparison (the oracle's ranking, the
# rating of the agent's own action by an expert).
EQUIVALENT_ACTIONS: dict[str, tuple[int, ...]] = {"ultrarl/PongPoint-v0": PONG_REPRESENTATIVE_ACTIONS}


def equivalent_actions(env_id: str) -> tuple[int, ...] | None:
    return EQUIVALENT_ACTIONS.get(env_id)


def uniform_action(action_space: spaces.Space, rng: np.random.Generator) -> int | np.ndarray:
    """One uniformly random action of ``action_space``, drawn from ``rng`` (not the space's own stream)."""
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.start) + int(rng.integers(int(action_space.n)))
    return rng.uniform(action_space.low, action_space.high).astype(action_space.dtype)  # type: ignore[attr-defined]


def action_distance(
    a: np.ndarray, b: np.ndarray, action_space: spaces.Space, equivalent: tuple[int, ...] | None = None
) -> np.ndarray:
    """Per row: 0 or 1 for discrete actions (same or not; with ``equivalent``, the same class);
    for boxes, the RMS over dimensions of the difference relative to each dimension's range,
    clipped to [0, 1]."""
    if isinstance(action_space, spaces.Discrete):
        a, b = np.asarray(a).ravel().astype(np.int64), np.asarray(b).ravel().astype(np.int64)
        if equivalent is not None:
            a, b = np.asarray(equivalent)[a], np.asarray(equivalent)[b]
        return (a != b).astype(np.float64)
    span = np.asarray(action_space.high - action_space.low, dtype=np.float64)  # type: ignore[attr-defined]
    diff = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) / span
    return np.clip(np.sqrt(np.mean(diff.reshape(len(diff), -1) ** 2, axis=1)), 0.0, 1.0)


def rate_action(
    own: np.ndarray, suggested: np.ndarray, action_space: spaces.Space, equivalent: tuple[int, ...] | None = None
) -> np.ndarray:
    """An expert's rating of the agent's own actions in [-1, 1]: +1 where it equals the
    suggestion, falling linearly with the distance to -1 (discrete: a different action)."""
    return 1.0 - 2.0 * action_distance(own, suggested, action_space, equivalent)
