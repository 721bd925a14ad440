"""Stage 5, the guidance table: critical observations with their suggested action and implicit
reward, matched against live observations by nearest neighbour in a normalised space."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ultrarl.envs.rollout import Trajectory
from ultrarl.errors import UltraRLError
from ultrarl.explain.explainer import CriticalState
from ultrarl.run_dir import write_bytes_atomic


class GuidanceSettings(BaseModel):
    """How critical states become table entries and how live states match them."""

    model_config = ConfigDict(extra="forbid")

    epsilon: float | None = Field(None, gt=0, description="match radius in the normalised space; unset: calibrated")
    epsilon_quantile: float = Field(
        0.9, gt=0, le=1, description="calibration: this quantile of the distance between consecutive states"
    )
    match_scale: Literal["step", "std"] = Field(
        "step",
        description="per-dimension scale of the matching metric: 'step' (std of one-step changes, ours) or 'std' "
        "(std of the values; fast angular velocities then dominate)",
    )
    extend_steps: int = Field(
        0, ge=0, description="also enter the states up to this many steps before and after each critical step (ours)"
    )
    deduplicate: bool = Field(True, description="drop entries within the match radius of an earlier entry")


@dataclass
class GuidanceTable:
    observations: np.ndarray  # (n, obs_dim) raw critical observations
    suggested_actions: np.ndarray  # (n,) int for discrete, (n, act_dim) float for continuous
    implicit_rewards: np.ndarray  # (n,) in [-1, 1], the rating of the agent's own action there
    sources: np.ndarray  # (n, 2) episode, step
    obs_mean: np.ndarray  # per-dimension centre of all collected observations
    obs_std: np.ndarray  # per-dimension scale of the matching metric (see GuidanceSettings.match_scale)
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
        return self.lookup(obs)[0]

    def lookup(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each row of ``obs``: the nearest entry within epsilon (else -1), and the nearest
        entry at any distance (-1: empty table), from one distance computation."""
        nearest, distance = self._nearest(obs)
        return np.where(distance <= self.epsilon, nearest, -1), nearest

    def _nearest(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = self.normalise(np.asarray(obs).reshape(len(obs), -1))
        if len(self) == 0:
            return np.full(len(batch), -1, dtype=np.int64), np.full(len(batch), np.inf)
        distances = np.linalg.norm(batch[:, None, :] - self._normalised_keys[None, :, :], axis=-1)
        nearest = np.argmin(distances, axis=1)
        return nearest, distances[np.arange(len(batch)), nearest]

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def from_explanations(
        cls, states: list[CriticalState], trajectories: list[Trajectory], settings: GuidanceSettings | None = None
    ) -> "GuidanceTable":
        """Centre and scale from all collected observations; epsilon, unless set, is the
        ``epsilon_quantile`` quantile of the distance between consecutive states, so a match
        means "about one step away from a critical state"."""
        settings = settings or GuidanceSettings()
        all_obs = np.concatenate([t.observations for t in trajectories]).astype(np.float64)
        mean = all_obs.mean(axis=0)
        scale = _metric_scale(trajectories, all_obs, settings.match_scale)
        epsilon = settings.epsilon or calibrate_epsilon(trajectories, mean, scale, settings.epsilon_quantile)
        entries = _entries(states, trajectories, settings.extend_steps)
        discrete = np.asarray(trajectories[0].actions).ndim == 1
        act_shape = () if discrete else trajectories[0].actions.shape[1:]
        table = cls(
            observations=np.asarray([obs for obs, _ in entries], dtype=np.float64).reshape(-1, all_obs.shape[1]),
            suggested_actions=np.asarray([s.suggested_action for _, s in entries],
                                         dtype=np.int64 if discrete else np.float32).reshape(-1, *act_shape),
            implicit_rewards=np.asarray([s.implicit_reward for _, s in entries], dtype=np.float64),
            sources=np.asarray([[s.episode, s.step] for _, s in entries], dtype=np.int64).reshape(-1, 2),
            obs_mean=mean,
            obs_std=scale,
            epsilon=float(epsilon),
            reward_scale=reward_scale(trajectories),
        )
        return table.deduplicated() if settings.deduplicate else table

    def deduplicated(self) -> "GuidanceTable":
        """The table without entries within epsilon of an earlier one (consecutive steps of one
        episode otherwise crowd the table with near-copies of the same advice)."""
        keys = self._normalised_keys
        kept: list[int] = []
        for i in range(len(self)):
            if not kept or np.min(np.linalg.norm(keys[kept] - keys[i], axis=1)) > self.epsilon:
                kept.append(i)
        index = np.asarray(kept, dtype=np.int64)
        return GuidanceTable(
            self.observations[index], self.suggested_actions[index], self.implicit_rewards[index],
            self.sources[index], self.obs_mean, self.obs_std, self.epsilon, self.reward_scale,
        )

    def summary(self) -> dict[str, float]:
        return {"entries": len(self), "epsilon": self.epsilon, "reward_scale": self.reward_scale}

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            observations=self.observations,
            suggested_actions=self.suggested_actions,
            implicit_rewards=self.implicit_rewards,
            sources=self.sources,
            obs_mean=self.obs_mean,
            obs_std=self.obs_std,
            meta=np.asarray(json.dumps({"epsilon": self.epsilon, "reward_scale": self.reward_scale})),
        )
        write_bytes_atomic(path, buffer.getvalue())

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


def _metric_scale(trajectories: list[Trajectory], all_obs: np.ndarray, kind: str) -> np.ndarray:
    """Per-dimension scale of the matching metric. 'step' divides each dimension by the std of
    its one-step changes, so every dimension moves about one unit per step: with 'std', fast
    dimensions (Hopper's angular velocities) made up ~96% of the squared one-step distance."""
    if kind == "step":
        diffs = [np.diff(t.observations.astype(np.float64), axis=0) for t in trajectories if t.length > 1]
        values = np.concatenate(diffs) if diffs else all_obs
    else:
        values = all_obs
    std = values.std(axis=0)
    return np.where(std > 1e-8, std, 1.0)  # constant dimensions do not count in distances


def _entries(
    states: list[CriticalState], trajectories: list[Trajectory], extend_steps: int
) -> list[tuple[np.ndarray, CriticalState]]:
    """(observation, advice) pairs: each critical step, and with ``extend_steps`` its neighbours
    in the same episode carrying the same advice."""
    by_episode = {t.episode: t for t in trajectories}
    entries = []
    for state in states:
        trajectory = by_episode[state.episode]
        low, high = max(0, state.step - extend_steps), min(trajectory.length - 1, state.step + extend_steps)
        order = [state.step] + [s for s in range(low, high + 1) if s != state.step]  # the critical step first
        entries += [(trajectory.observations[step], state) for step in order]
    return entries


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
