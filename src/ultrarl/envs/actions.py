"""Comparing actions in an action space's own units."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces


def action_distance(a: np.ndarray, b: np.ndarray, action_space: spaces.Space) -> np.ndarray:
    """Per row: 0 or 1 for discrete actions (same or not); for boxes, the RMS over dimensions of
    the difference relative to each dimension's range, clipped to [0, 1]."""
    if isinstance(action_space, spaces.Discrete):
        return (np.asarray(a).ravel() != np.asarray(b).ravel()).astype(np.float64)
    span = np.asarray(action_space.high - action_space.low, dtype=np.float64)  # type: ignore[attr-defined]
    diff = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) / span
    return np.clip(np.sqrt(np.mean(diff.reshape(len(diff), -1) ** 2, axis=1)), 0.0, 1.0)


def rate_action(own: np.ndarray, suggested: np.ndarray, action_space: spaces.Space) -> np.ndarray:
    """An expert's rating of the agent's own actions in [-1, 1]: +1 where it equals the
    suggestion, falling linearly with the distance to -1 (discrete: a different action)."""
    return 1.0 - 2.0 * action_distance(own, suggested, action_space)
