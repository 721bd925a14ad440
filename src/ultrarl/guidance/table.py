"""Stage 5, the guidance table: critical observations with their suggested action and implicit
reward, matched against live observations by nearest neighbour in a normalised space."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ultrarl.envs.rollout import Trajectory
from ultrarl.errors import UltraRLError
from ultrarl.explain.explainer import CriticalState

DEFAULT_EPSILON_QUANTILE = 0.9


@dataclass
class GuidanceTable:
    observations: np.ndarray  # (n, obs_dim) raw critical observations
    suggested_actions: np.ndarray  # (n,) int for discrete, (n, act_dim) float for continuous
    implicit_rewards: np.ndarray  # (n,) in [-1, 1]
    sources: np.ndarray  # (n, 2) episode, step
    obs_mean: np.ndarray  # per-dimension statistics of all collected observations
    obs_std: np.ndarray
    epsilon: float  # match radius in the normalised space
    reward_scale: float  # mean |r| per step of the collected data, scales the implicit reward

    def __len__(self) -> int:
        return int(len(self.implicit_rewards))

    def normalise(self, obs: np.ndarray) -> np.ndarray:
        return (np.asarray(obs, dtype=np.float64) - self.obs_mean) / self.obs_std

    @cached_property
    def _normalised_keys(self) -> np.ndarray:
        # Matching runs at every environment step: normalise the table once.
        return self.normalise(self.observations)

    def match(self, obs: np.ndarray) -> np.ndarray:
        """Index of the nearest table entry within epsilon for each row of ``obs``, else -1."""
        batch = self.normalise(np.asarray(obs).reshape(len(obs), -1))
        if len(self) == 0:
            return np.full(len(batch), -1, dtype=np.int64)
        distances = np.linalg.norm(batch[:, None, :] - self._normalised_keys[None, :, :], axis=-1)
        nearest = np.argmin(distances, axis=1)
        within = distances[np.arange(len(batch)), nearest] <= self.epsilon
        return np.where(within, nearest, -1)

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def from_explanations(
        cls,
        states: list[CriticalState],
        trajectories: list[Trajectory],
        epsilon: float | None = None,
        epsilon_quantile: float = DEFAULT_EPSILON_QUANTILE,
    ) -> "GuidanceTable":
        """Normalisation from all collected observations; epsilon, unless given, is the
        ``epsilon_quantile`` quantile of the distance between consecutive states, so a match
        means "about one step away from a critical state"."""
        by_episode = {t.episode: t for t in trajectories}
        all_obs = np.concatenate([t.observations for t in trajectories]).astype(np.float64)
        mean = all_obs.mean(axis=0)
        std = all_obs.std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)  # constant dimensions do not count in distances
        if epsilon is None:
            epsilon = calibrate_epsilon(trajectories, mean, std, epsilon_quantile)
        scale = reward_scale(trajectories)
        discrete = np.asarray(trajectories[0].actions).ndim == 1
        obs_dim = all_obs.shape[1]
        if states:
            observations = np.stack([by_episode[s.episode].observations[s.step] for s in states])
            suggested = np.asarray([s.suggested_action for s in states], dtype=np.int64 if discrete else np.float32)
        else:
            observations = np.zeros((0, obs_dim))
            act_dim = 0 if discrete else trajectories[0].actions.shape[1]
            suggested = np.zeros((0,) if discrete else (0, act_dim), dtype=np.int64 if discrete else np.float32)
        return cls(
            observations=observations.astype(np.float64),
            suggested_actions=suggested,
            implicit_rewards=np.asarray([s.implicit_reward for s in states], dtype=np.float64),
            sources=np.asarray([[s.episode, s.step] for s in states], dtype=np.int64).reshape(-1, 2),
            obs_mean=mean,
            obs_std=std,
            epsilon=float(epsilon),
            reward_scale=scale,
        )

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        np.savez(
            path,
            observations=self.observations,
            suggested_actions=self.suggested_actions,
            implicit_rewards=self.implicit_rewards,
            sources=self.sources,
            obs_mean=self.obs_mean,
            obs_std=self.obs_std,
            meta=np.asarray(json.dumps({"epsilon": self.epsilon, "reward_scale": self.reward_scale})),
        )

    @classmethod
    def load(cls, path: Path) -> "GuidanceTable":
        try:
            data = np.load(path, allow_pickle=False)
            meta = json.loads(str(data["meta"]))
            return cls(
                observations=data["observations"],
                suggested_actions=data["suggested_actions"],
                implicit_rewards=data["implicit_rewards"],
                sources=data["sources"],
                obs_mean=data["obs_mean"],
                obs_std=data["obs_std"],
                epsilon=float(meta["epsilon"]),
                reward_scale=float(meta["reward_scale"]),
            )
        except (OSError, KeyError, ValueError) as exc:
            raise UltraRLError(f"cannot read guidance table {path}: {exc}") from exc


def calibrate_epsilon(trajectories: list[Trajectory], mean: np.ndarray, std: np.ndarray, quantile: float) -> float:
    steps = [
        np.linalg.norm(np.diff((t.observations - mean) / std, axis=0), axis=1) for t in trajectories if t.length > 1
    ]
    if not steps:
        return 1.0
    return float(np.quantile(np.concatenate(steps), quantile))


def reward_scale(trajectories: list[Trajectory]) -> float:
    """Mean |reward| per step of the collected episodes (1.0 when all rewards are 0)."""
    rewards = np.concatenate([t.rewards for t in trajectories])
    return float(np.mean(np.abs(rewards))) or 1.0
