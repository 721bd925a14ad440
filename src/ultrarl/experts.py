"""Experts for the oracle advisor: scripted controllers fitted as SB3 PPO policies.

The oracle needs an expert that ``PPO.load`` reads, like any agent. Where a task has a known good
controller, the expert is a PPO policy network fitted to it by supervised learning, which takes
seconds instead of the hours of RL it would take on 2 cores:

- ``MountainCarContinuous-v0``: energy pumping, a = sign(velocity); it reaches the flag from every
  start. Fitted on states drawn over the whole state box.
- ``ultrarl/PongPoint-v0``: the paddle follows the ball, keeping it a few pixels below the
  paddle's y (45% of points won against the built-in opponent on the points it was chosen on;
  a policy that never returns the ball wins none). Fitted on the states of the controller's own
  points, played with some random actions so that the states off its path are covered too, on
  reset seeds no evaluation uses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import PPO

from ultrarl.envs.factory import make_env, make_vec_env
from ultrarl.envs.pong import PONG_FEATURES
from ultrarl.run_dir import write_model

EXPERT_SEED = 10_000
FIT_STEPS, FIT_BATCH, FIT_LR = 3000, 256, 1e-3

# Pong (RAM features of ``envs.pong``; y grows downwards): the paddle moves until the ball is
# this many pixels below the paddle's y, within the dead band. Chosen on seeds 5000-5059 (24
# variants of this offset, the dead band and aiming at where the ball will be, 60 points each),
# never on evaluation seeds.
PONG_BALL_BELOW_PADDLE, PONG_DEAD_BAND = 6.0, 3.0
PONG_NOOP, PONG_FIRE, PONG_UP, PONG_DOWN = 0, 1, 2, 3  # indices of envs.pong.PONG_ACTION_NAMES
PONG_FIT_EPISODES, PONG_EXPLORATION = 300, 0.25
FIT_RESET_SEEDS = 1_000_000  # episodes an expert is fitted on start here: far from every evaluation seed
_BALL_Y, _PADDLE_Y, _IN_PLAY = (next(i for i, (name, _) in enumerate(PONG_FEATURES) if name == wanted)
                                for wanted in ("ball y", "own paddle y", "ball in play"))


def pumping_action(observations: np.ndarray) -> np.ndarray:
    """MountainCar's energy pumping: full throttle in the direction of the velocity."""
    return np.where(observations[:, 1:] >= 0, 1.0, -1.0).astype(np.float32)


def pong_tracking_action(observations: np.ndarray) -> np.ndarray:
    """Pong: serve when no ball is in play, else move the paddle towards the aim point."""
    ball_y, paddle_y, in_play = observations[:, _BALL_Y], observations[:, _PADDLE_Y], observations[:, _IN_PLAY] > 0
    error = ball_y - PONG_BALL_BELOW_PADDLE - paddle_y
    move = np.where(error > PONG_DEAD_BAND, PONG_DOWN, np.where(error < -PONG_DEAD_BAND, PONG_UP, PONG_NOOP))
    return np.where(in_play, move, PONG_FIRE).astype(np.int64)


def fit_policy(expert: PPO, observations: np.ndarray, actions: np.ndarray, rng: np.random.Generator) -> PPO:
    """Fit ``expert``'s policy to (observation, action) pairs, minibatches drawn by ``rng``: the
    clipped mean to a Box action (squared error), the logits to a Discrete one (cross-entropy)."""
    optimiser = th.optim.Adam(expert.policy.parameters(), lr=FIT_LR)
    discrete = isinstance(expert.action_space, gym.spaces.Discrete)
    for _ in range(FIT_STEPS):
        index = rng.integers(len(observations), size=FIT_BATCH)
        distribution = expert.policy.get_distribution(th.as_tensor(observations[index])).distribution
        target = th.as_tensor(actions[index])
        if discrete:
            loss = th.nn.functional.cross_entropy(distribution.logits, target)
        else:
            loss = ((th.clamp(distribution.mean, -1, 1) - target) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return expert


def pumping_expert(out: Path, seed: int = EXPERT_SEED) -> PPO:
    """The MountainCarContinuous-v0 expert: a PPO policy whose mean action is energy pumping."""
    expert = PPO("MlpPolicy", make_vec_env("MountainCarContinuous-v0", seed=seed), seed=seed, device="cpu",
                 policy_kwargs={"log_std_init": -3.0})
    rng = np.random.default_rng(seed)
    observations = np.stack([rng.uniform(-1.2, 0.6, 20_000), rng.uniform(-0.07, 0.07, 20_000)],
                            axis=1).astype(np.float32)
    write_model(out, fit_policy(expert, observations, pumping_action(observations), rng))
    return expert


def controller_states(env_id: str, controller: Callable[[np.ndarray], np.ndarray], episodes: int,
                      exploration: float, seed: int) -> np.ndarray:
    """Observations of ``episodes`` played by ``controller``, each action replaced by a uniformly
    random one with probability ``exploration``."""
    env = make_env(env_id)
    env.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    visited: list[np.ndarray] = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            visited.append(observation)
            action = controller(observation[None])[0]
            if rng.random() < exploration:
                action = env.action_space.sample()
            observation, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    env.close()
    return np.asarray(visited, dtype=np.float32)


def pong_expert(out: Path, seed: int = EXPERT_SEED, episodes: int = PONG_FIT_EPISODES) -> PPO:
    """The ultrarl/PongPoint-v0 expert: a PPO policy (ReLU network: the inputs are pixel
    coordinates, which saturate tanh units) fitted to the tracking controller."""
    env_id = "ultrarl/PongPoint-v0"
    expert = PPO("MlpPolicy", make_vec_env(env_id, seed=seed), seed=seed, device="cpu",
                 policy_kwargs={"activation_fn": th.nn.ReLU})
    observations = controller_states(env_id, pong_tracking_action, episodes, PONG_EXPLORATION, FIT_RESET_SEEDS + seed)
    write_model(out, fit_policy(expert, observations, pong_tracking_action(observations), np.random.default_rng(seed)))
    return expert


# The experts this project can make without RL, by environment id.
EXPERT_MAKERS: dict[str, Callable[[Path], PPO]] = {
    "MountainCarContinuous-v0": pumping_expert,
    "ultrarl/PongPoint-v0": pong_expert,
}
