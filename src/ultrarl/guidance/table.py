"""Stage 5, the guidance table: critical observations with their suggested action and implicit
reward, matched against live observations by nearest neighbour in a normalised space."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ultrarl.envs.actions import action_distance
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
    plan_steps: int = Field(
        128, ge=1, description="longest plan of an advice (steps, the suggested action included): how long advice "
                               "given once is followed from a matched state (ours; 1: the suggested action alone)"
    )


@dataclass
class GuidanceTable:
    """The advice of one identification, as refinement reads it.

    An entry's *plan* is the action sequence the advisor gave for the critical state: the
    suggested action first, then the further actions it said to take (``plan_lengths`` of them in
    all). Advice given once lasts: refinement executes the whole plan from a matched state.
    """

    observations: np.ndarray  # (n, obs_dim) raw critical observations
    suggested_actions: np.ndarray  # (n,) int for discrete, (n, act_dim) float for continuous
    implicit_rewards: np.ndarray  # (n,) in [-1, 1], the rating of the agent's own action there
    sources: np.ndarray  # (n, 2) episode, step
    obs_mean: np.ndarray  # per-dimension centre of all collected observations
    obs_std: np.ndarray  # per-dimension scale of the matching metric (see GuidanceSettings.match_scale)
    epsilon: float  # match radius in the normalised space
    reward_scale: float  # mean |r| per step of the collected data, scales the implicit reward
    rated_actions: np.ndarray | None = None  # (n, ...) the agent's own action that implicit_rewards rates
    plans: np.ndarray | None = None  # (n, max plan length, ...) each entry's plan, padded with its last action
    plan_lengths: np.ndarray | None = None  # (n,) actions in each plan (>= 1)

    def __post_init__(self) -> None:
        # A table without plans (one from before plans, or built by hand) advises one step per entry.
        if self.plans is None or self.plan_lengths is None:
            self.plans = self.suggested_actions[:, None].copy()
            self.plan_lengths = np.ones(len(self.suggested_actions), dtype=np.int64)
        if self.rated_actions is None:
            self.rated_actions = self.suggested_actions.copy()

    def __len__(self) -> int:
        return int(len(self.implicit_rewards))

    def plan_actions(self, entries: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The action at ``positions`` of each entry's plan (the last one past its end)."""
        assert self.plans is not None and self.plan_lengths is not None
        return self.plans[entries, np.minimum(positions, self.plan_lengths[entries] - 1)]

    def rate(self, entries: np.ndarray, actions: np.ndarray, action_space: gym.Space) -> np.ndarray:
        """The implicit reward of the actions taken now at the entries' states: the advisor rated
        its rated action ``implicit_rewards`` and implicitly rates its suggestion +1; an action in
        between is rated by its distance to the suggestion, relative to the rated action's
        (linear, clipped to [-1, 1]). A discrete action other than the suggestion gets the rating,
        and so does every action where the rated action is the suggestion."""
        assert self.rated_actions is not None
        rating = self.implicit_rewards[entries]
        suggested = self.suggested_actions[entries]
        to_suggestion = action_distance(actions, suggested, action_space)
        rated_to_suggestion = action_distance(self.rated_actions[entries], suggested, action_space)
        informative = rated_to_suggestion > 1e-6  # a rated action equal to the suggestion: its rating alone
        if isinstance(action_space, gym.spaces.Discrete):
            return np.where(informative & (to_suggestion == 0), 1.0, rating)
        slope = (1.0 - rating) / np.maximum(rated_to_suggestion, 1e-6)
        return np.where(informative, np.clip(1.0 - slope * to_suggestion, -1.0, 1.0), rating)

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
        dtype = np.int64 if discrete else np.float32
        plans, lengths = _plans([s for _, s in entries], settings.plan_steps, dtype, act_shape)
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
            rated_actions=np.asarray([s.agent_action for _, s in entries], dtype=dtype).reshape(-1, *act_shape),
            plans=plans,
            plan_lengths=lengths,
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
        return self.subset(index)

    def subset(self, index: np.ndarray) -> "GuidanceTable":
        """The table of the entries ``index``."""
        assert self.rated_actions is not None and self.plans is not None and self.plan_lengths is not None
        return GuidanceTable(
            self.observations[index], self.suggested_actions[index], self.implicit_rewards[index],
            self.sources[index], self.obs_mean, self.obs_std, self.epsilon, self.reward_scale,
            self.rated_actions[index], self.plans[index], self.plan_lengths[index],
        )

    def summary(self) -> str:
        """One line for people: entries, plan lengths, match radius."""
        if len(self) == 0:
            return "empty"
        assert self.plan_lengths is not None
        return (f"{len(self)} entries, plans of {int(self.plan_lengths.min())}-{int(self.plan_lengths.max())} steps, "
                f"match radius {self.epsilon:.3g}")

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
            rated_actions=self.rated_actions,
            plans=self.plans,
            plan_lengths=self.plan_lengths,
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
                **{name: data[name] for name in ("rated_actions", "plans", "plan_lengths") if name in data.files},
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


def _plans(states: list[CriticalState], plan_steps: int, dtype: type, act_shape: tuple[int, ...]
           ) -> tuple[np.ndarray, np.ndarray]:
    """Each state's plan (its suggested action, then its further plan), cut at ``plan_steps``, as
    one array padded with each plan's last action, and the plans' lengths."""
    sequences = [[s.suggested_action, *s.plan][:plan_steps] for s in states]
    longest = max((len(seq) for seq in sequences), default=1)
    plans = np.zeros((len(states), longest, *act_shape), dtype=dtype)
    for row, seq in enumerate(sequences):
        actions = np.asarray(seq, dtype=dtype).reshape(len(seq), *act_shape)
        plans[row, :len(seq)] = actions
        plans[row, len(seq):] = actions[-1]
    return plans, np.asarray([len(seq) for seq in sequences], dtype=np.int64)


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
