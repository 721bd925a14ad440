"""StateMask / RICE explanation: a mask network that learns where the agent's action matters.

The mask network is a policy over {0: keep the agent's action, 1: blind it (a random action)},
trained with PPO on the agent's environment with reward r_env + α·[blinded]. It learns to blind
wherever that costs no return, so the states it does *not* blind are the critical ones:
importance(s) = P(keep | s). StateMask-R and RICE reset refinement episodes to the most
important states of the agent's own episodes; ``random`` picks states uniformly instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger

from ultrarl.envs.actions import uniform_action
from ultrarl.envs.factory import make_vec_env
from ultrarl.envs.rollout import Trajectory

KEEP, BLIND = 0, 1


class MaskedAgentEnv(gym.Wrapper):
    """The agent acts; the mask network's action decides whether its action is replaced by a
    uniformly random one. Reward: the environment's plus ``alpha`` per blinded step."""

    def __init__(self, env: gym.Env, agent: PPO, alpha: float, seed: int = 0) -> None:
        super().__init__(env)
        self.agent = agent
        self.alpha = alpha
        self.agent_action_space = env.action_space
        self.action_space = gym.spaces.Discrete(2)
        self.rng = np.random.default_rng(seed)
        self._obs: Any = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._obs, info = self.env.reset(**kwargs)
        return self._obs, info

    def _random_action(self) -> Any:
        return uniform_action(self.agent_action_space, self.rng)

    def step(self, mask_action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if int(mask_action) == BLIND:
            action = self._random_action()
        else:
            action, _ = self.agent.predict(self._obs, deterministic=False)
        self._obs, reward, terminated, truncated, info = self.env.step(action)
        return self._obs, float(reward) + self.alpha * int(mask_action), terminated, truncated, info


@dataclass
class MaskNetwork:
    model: PPO
    train_wall_time_s: float
    timesteps: int

    def importance(self, observations: np.ndarray) -> np.ndarray:
        """P(keep the agent's action | s) for each observation: high = critical."""
        obs_tensor, _ = self.model.policy.obs_to_tensor(np.asarray(observations, dtype=np.float32))
        with th.no_grad():
            distribution = self.model.policy.get_distribution(obs_tensor)
            probs = distribution.distribution.probs  # type: ignore[union-attr]
        return probs[:, KEEP].cpu().numpy()


def train_mask_network(agent: PPO, env_id: str, timesteps: int, alpha: float = 0.01, seed: int = 0) -> MaskNetwork:
    """Train the mask network with SB3 PPO (default hyperparameters) for ``timesteps`` steps."""
    start = time.perf_counter()
    env = make_vec_env(env_id, n_envs=1, seed=seed,
                       wrapper=lambda env, rank: MaskedAgentEnv(env, agent, alpha, seed=seed + rank))
    mask = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0)
    mask.set_logger(Logger(None, []))
    mask.learn(total_timesteps=timesteps)
    env.close()
    return MaskNetwork(mask, time.perf_counter() - start, timesteps)


def critical_steps_by_mask(mask: MaskNetwork, trajectory: Trajectory, k: int) -> list[int]:
    """The ``k`` steps of an episode the mask network least wants to blind."""
    scores = mask.importance(trajectory.observations)
    return sorted(int(i) for i in np.argsort(-scores, kind="stable")[:k])


def random_critical_steps(trajectory: Trajectory, k: int, rng: np.random.Generator) -> list[int]:
    return sorted(int(i) for i in rng.choice(trajectory.length, size=min(k, trajectory.length), replace=False))
