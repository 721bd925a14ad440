"""Rolling out an agent and keeping what the explanation stage needs, step by step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm

from ultrarl.envs.factory import make_env
from ultrarl.envs.snapshot import Snapshot, take_snapshot


@dataclass
class Trajectory:
    """One episode: arrays indexed by step (observation before the action, action, reward)."""

    episode: int
    observations: np.ndarray  # (T, obs_dim)
    actions: np.ndarray  # (T,) for discrete, (T, act_dim) for continuous
    rewards: np.ndarray  # (T,)
    terminated: bool  # ended by the environment (fall, goal), not by the time limit
    seed: int
    snapshots: list[Snapshot] | None = None  # per step, in memory only (resets, --verify)

    @property
    def length(self) -> int:
        return int(len(self.rewards))

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards))


def collect_trajectories(
    agent: BaseAlgorithm,
    env_id: str,
    n_episodes: int,
    seed: int,
    deterministic: bool = False,
    on_episode: Callable[[Trajectory], None] | None = None,
    keep_snapshots: bool = False,
) -> list[Trajectory]:
    """Roll out ``n_episodes`` episodes; episode i is reset with seed ``seed + i``.

    Stochastic by default: refinement rollouts sample from the policy too, so the states the
    LLM sees are the ones the guidance table will be matched against.
    """
    env = make_env(env_id)
    agent.set_random_seed(seed)
    trajectories: list[Trajectory] = []
    try:
        for episode in range(n_episodes):
            obs, _ = env.reset(seed=seed + episode)
            observations, actions, rewards, snapshots = [], [], [], []
            terminated = truncated = False
            while not (terminated or truncated):
                action, _ = agent.predict(obs, deterministic=deterministic)
                if keep_snapshots:
                    snapshots.append(take_snapshot(env, obs))
                observations.append(np.asarray(obs, dtype=np.float32).ravel())
                actions.append(np.asarray(action))
                obs, reward, terminated, truncated, _ = env.step(action)
                rewards.append(float(reward))
            trajectory = Trajectory(
                episode=episode,
                observations=np.stack(observations),
                actions=np.stack(actions),
                rewards=np.asarray(rewards, dtype=np.float64),
                terminated=bool(terminated),
                seed=seed + episode,
                snapshots=snapshots if keep_snapshots else None,
            )
            trajectories.append(trajectory)
            if on_episode is not None:
                on_episode(trajectory)
    finally:
        env.close()
    return trajectories


def env_action(action: object) -> int | np.ndarray:
    """An action as Gymnasium's ``step`` takes it: a Python int (discrete) or a float32 array,
    from a recorded numpy action or an LLM's JSON one."""
    arr = np.asarray(action)
    return int(arr.item()) if arr.ndim == 0 else arr.astype(np.float32, copy=False)


def save_trajectories(trajectories: list[Trajectory], path: Path) -> None:
    """All episodes in one npz: concatenated arrays plus per-episode offsets."""
    lengths = np.array([t.length for t in trajectories], dtype=np.int64)
    np.savez_compressed(
        path,
        observations=np.concatenate([t.observations for t in trajectories]),
        actions=np.concatenate([t.actions for t in trajectories]),
        rewards=np.concatenate([t.rewards for t in trajectories]),
        lengths=lengths,
        terminated=np.array([t.terminated for t in trajectories]),
        episodes=np.array([t.episode for t in trajectories]),
        seeds=np.array([t.seed for t in trajectories]),
    )


def load_trajectories(path: Path) -> list[Trajectory]:
    data = np.load(path)
    bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
    return [
        Trajectory(
            episode=int(data["episodes"][i]),
            observations=data["observations"][bounds[i] : bounds[i + 1]],
            actions=data["actions"][bounds[i] : bounds[i + 1]],
            rewards=data["rewards"][bounds[i] : bounds[i + 1]],
            terminated=bool(data["terminated"][i]),
            seed=int(data["seeds"][i]),
        )
        for i in range(len(data["lengths"]))
    ]
