"""Sparse-reward MuJoCo variants used by the refinement literature.

SparseHopper / SparseWalker2d: reward = x position of the torso, paid only where x > 0.6.
SparseHalfCheetah: reward = x position, paid only where x > 5. Everything else (observation,
termination, time limit) is the dense environment's.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym

SPARSE_VARIANTS: dict[str, tuple[str, float]] = {
    "ultrarl/SparseHopper-v5": ("Hopper-v5", 0.6),
    "ultrarl/SparseWalker2d-v5": ("Walker2d-v5", 0.6),
    "ultrarl/SparseHalfCheetah-v5": ("HalfCheetah-v5", 5.0),
}


class SparseXPositionReward(gym.Wrapper):
    """Replace the dense reward by the torso x position where it exceeds a threshold, else 0."""

    def __init__(self, env: gym.Env, threshold: float) -> None:
        super().__init__(env)
        self.threshold = threshold

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, dense_reward, terminated, truncated, info = self.env.step(action)
        x = float(self.env.unwrapped.data.qpos[0])  # type: ignore[attr-defined]
        info["dense_reward"] = float(dense_reward)
        reward = x if x > self.threshold else 0.0
        return obs, reward, terminated, truncated, info


def _make_sparse(base_id: str, threshold: float, **kwargs: Any) -> gym.Env:
    base = gym.make(base_id, **kwargs).unwrapped  # the registration adds its own TimeLimit
    return SparseXPositionReward(base, threshold)


def register_sparse_envs() -> None:
    for env_id, (base_id, threshold) in SPARSE_VARIANTS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=_make_sparse,
            max_episode_steps=1000,
            kwargs={"base_id": base_id, "threshold": threshold},
        )
