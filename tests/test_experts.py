"""The oracle's experts: scripted controllers fitted as PPO policies (``ultrarl.experts``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from stable_baselines3 import PPO

from ultrarl.evaluate.evaluation import evaluate_agent
from ultrarl.experts import (
    PONG_DOWN, PONG_FIRE, PONG_NOOP, PONG_UP, controller_states, pong_expert, pong_tracking_action, pumping_action,
)

AGENTS = Path(__file__).parents[1] / "benchmarks" / "agents"
PONG = "ultrarl/PongPoint-v0"


def test_the_pong_controller_serves_then_follows_the_ball() -> None:
    # features: ball x, ball y, ball vx, ball vy, own paddle y, opponent paddle y, ball in play
    observations = np.array([
        [0, 0, 0, 0, 100, 100, 0],  # no ball: serve
        [100, 150, 2, 1, 100, 100, 1],  # ball below the paddle (y grows downwards): down
        [100, 50, 2, 1, 100, 100, 1],  # above: up
        [100, 106, 2, 1, 100, 100, 1],  # at the aim point (6 px above the paddle's y): stay
    ], dtype=np.float32)
    assert pong_tracking_action(observations).tolist() == [PONG_FIRE, PONG_DOWN, PONG_UP, PONG_NOOP]
    assert pumping_action(np.array([[-0.5, 0.01], [-0.5, -0.01]])).ravel().tolist() == [1.0, -1.0]


def test_the_fitted_pong_expert_acts_as_its_controller_on_states_it_was_not_fitted_on(tmp_path: Path) -> None:
    expert = pong_expert(tmp_path / "expert.zip", seed=3, episodes=20)
    assert PPO.load(tmp_path / "expert.zip", device="cpu").action_space.n == 6
    held_out = controller_states(PONG, pong_tracking_action, 5, 0.25, seed=777)
    predicted, _ = expert.predict(held_out, deterministic=True)
    assert np.mean(predicted == pong_tracking_action(held_out)) > 0.85


def test_the_shipped_pong_expert_wins_more_points_than_the_shipped_agent() -> None:
    """The oracle is an upper bound only if its expert is better than the agent it advises."""
    expert = PPO.load(AGENTS / "experts" / "ultrarl_PongPoint-v0.zip", device="cpu")
    agent = PPO.load(AGENTS / "ultrarl_PongPoint-v0" / "seed0.zip", device="cpu")
    expert_rate = evaluate_agent(expert, PONG, 40, 30_000).mean
    agent_rate = evaluate_agent(agent, PONG, 40, 30_000).mean
    assert expert_rate >= 0.3 and expert_rate > agent_rate + 0.15, (expert_rate, agent_rate)
