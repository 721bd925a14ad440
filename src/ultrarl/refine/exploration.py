"""RICE's refinement machinery: a mixed initial-state distribution and an RND exploration bonus.

- ``CriticalStateResets``: an episode starts at a critical state (restored from a snapshot) with
  probability p, otherwise at the environment's default start. p is the probability of the
  *critical* start, as in the RICE paper (RICE's public code uses it the other way round).
- ``RNDBonus``: random network distillation. A fixed random target network and a trained
  predictor; the bonus is the predictor's error on the next observation (the terminal one when
  an episode ends, not the next episode's first), centred and divided by running statistics of
  the error, times λ (uncentred, the bonus was a near-constant +0.015 per step on Hopper: a
  reward offset, not exploration). It is added to the training reward only: the
  Monitor wrapper inside sees the environment's reward, so the true return is logged apart.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from ultrarl.envs.snapshot import Snapshot, restore_snapshot


class CriticalStateResets(gym.Wrapper):
    """Start an episode at a random critical state with probability ``reset_prob``."""

    def __init__(self, env: gym.Env, snapshots: list[Snapshot], reset_prob: float, seed: int = 0) -> None:
        super().__init__(env)
        self.snapshots = snapshots
        self.reset_prob = reset_prob
        self.rng = np.random.default_rng(seed)
        self.critical_starts = 0
        self.default_starts = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        if self.snapshots and self.rng.random() < self.reset_prob:
            snapshot = self.snapshots[int(self.rng.integers(len(self.snapshots)))]
            obs = restore_snapshot(self.env, snapshot)
            self.critical_starts += 1
            info = {**info, "critical_start": True}
        else:
            self.default_starts += 1
        return obs, info

    def training_state(self) -> dict[str, Any]:
        """Its random stream and counts, for an exact resume (``refine/training_state.py``)."""
        return {"rng": self.rng.bit_generator.state, "critical_starts": self.critical_starts,
                "default_starts": self.default_starts}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.critical_starts = state["critical_starts"]
        self.default_starts = state["default_starts"]


def _mlp(inputs: int, outputs: int) -> th.nn.Module:
    return th.nn.Sequential(th.nn.Linear(inputs, 64), th.nn.ReLU(), th.nn.Linear(64, 64), th.nn.ReLU(),
                            th.nn.Linear(64, outputs))


class RNDBonus(VecEnvWrapper):
    """Adds ``weight`` x normalised RND novelty of the next observation to the reward."""

    def __init__(self, venv: VecEnv, weight: float, seed: int = 0, learning_rate: float = 1e-4,
                 batch_size: int = 256) -> None:
        super().__init__(venv)
        obs_dim = int(np.prod(venv.observation_space.shape))
        generator = th.Generator().manual_seed(seed)
        self.target = _mlp(obs_dim, 32)
        self.predictor = _mlp(obs_dim, 32)
        for net in (self.target, self.predictor):
            for param in net.parameters():  # seeded, independent of the global torch RNG
                param.data = th.randn(param.shape, generator=generator) * (1.0 / max(param.shape[-1], 1)) ** 0.5
        self.target.requires_grad_(False)
        self.optimizer = th.optim.Adam(self.predictor.parameters(), lr=learning_rate)
        self.weight = weight
        self.batch_size = batch_size
        self.obs_stats = RunningMeanStd(shape=(obs_dim,))
        self.bonus_stats = RunningMeanStd(shape=())
        self._pending: list[np.ndarray] = []
        self.bonus_sum = 0.0
        self.bonus_count = 0

    def _normalise(self, obs: np.ndarray) -> th.Tensor:
        z = (obs - self.obs_stats.mean) / np.sqrt(self.obs_stats.var + 1e-8)
        return th.as_tensor(np.clip(z, -5, 5), dtype=th.float32)

    def novelty(self, obs: np.ndarray) -> np.ndarray:
        with th.no_grad():
            x = self._normalise(obs)
            return ((self.predictor(x) - self.target(x)) ** 2).mean(dim=1).numpy()

    def reset(self) -> Any:
        return self.venv.reset()

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        flat = np.array(obs, dtype=np.float64, copy=True).reshape(self.num_envs, -1)
        for i, done in enumerate(dones):  # the state the step reached, not the next reset's
            if done and infos[i].get("terminal_observation") is not None:
                flat[i] = np.asarray(infos[i]["terminal_observation"], dtype=np.float64).ravel()
        self.obs_stats.update(flat)
        novelty = self.novelty(flat)
        self.bonus_stats.update(novelty)
        bonus = self.weight * (novelty - self.bonus_stats.mean) / np.sqrt(self.bonus_stats.var + 1e-8)
        self.bonus_sum += float(bonus.sum())
        self.bonus_count += len(bonus)
        self._pending.append(flat)
        if sum(len(p) for p in self._pending) >= self.batch_size:
            self._train(np.concatenate(self._pending))
            self._pending = []
        return obs, rewards + bonus.astype(rewards.dtype), dones, infos

    def _train(self, batch: np.ndarray) -> None:
        x = self._normalise(batch)
        loss = ((self.predictor(x) - self.target(x)) ** 2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def state(self) -> str:
        """Predictor, optimiser and running statistics, for checkpoints (base64 of torch.save)."""
        buffer = io.BytesIO()
        th.save({
            "predictor": self.predictor.state_dict(), "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "obs_stats": (self.obs_stats.mean, self.obs_stats.var, self.obs_stats.count),
            "bonus_stats": (self.bonus_stats.mean, self.bonus_stats.var, self.bonus_stats.count),
            "pending": self._pending,  # the predictor's next batch, part-filled
        }, buffer)
        return base64.b64encode(buffer.getvalue()).decode()

    def load_state(self, encoded: str) -> None:
        data = th.load(io.BytesIO(base64.b64decode(encoded)), weights_only=False)
        self.predictor.load_state_dict(data["predictor"])
        self.target.load_state_dict(data["target"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.obs_stats.mean, self.obs_stats.var, self.obs_stats.count = data["obs_stats"]
        self.bonus_stats.mean, self.bonus_stats.var, self.bonus_stats.count = data["bonus_stats"]
        self._pending = list(data.get("pending", []))

    def pop_mean_bonus(self) -> float:
        mean = self.bonus_sum / self.bonus_count if self.bonus_count else 0.0
        self.bonus_sum, self.bonus_count = 0.0, 0
        return mean
