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
        [100, 106, 2, 1, 100, 100, 1],  # the ball 6 px below the paddle's y (y grows downwards): stay
    ], dtype=np.float32)
    assert pong_tracking_action(observations).tolist() == [PONG_FIRE, PONG_DOWN, PONG_UP, PONG_NOOP]


def test_the_pumping_controller_pushes_along_the_velocity() -> None:
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


def test_pong_actions_that_act_alike_are_one_action_to_the_oracle_and_its_ratings() -> None:
    """The game serves by itself and the FIRE variants move as RIGHT/LEFT: from one snapshot each
    action gives exactly what its representative gives, so an agent's RIGHTFIRE where the expert
    says RIGHT is no disagreement (PPO agents use the FIRE variants a lot)."""
    from gymnasium.spaces import Discrete

    from ultrarl.envs.actions import action_distance, equivalent_actions, rate_action
    from ultrarl.envs.factory import make_env
    from ultrarl.envs.snapshot import restore_snapshot, take_snapshot
    from ultrarl.explain.oracle import ranked_steps

    representatives = equivalent_actions(PONG)
    env = make_env(PONG)
    observation, _ = env.reset(seed=3)
    for action in np.random.default_rng(0).integers(0, 6, 30):
        observation, *_ = env.step(int(action))
    snapshot = take_snapshot(env, observation)

    def play(action: int) -> np.ndarray:
        restore_snapshot(env, snapshot)
        return np.array([env.step(action)[0] for _ in range(20)])

    for action in range(6):
        assert np.array_equal(play(action), play(representatives[action]))
    assert not np.array_equal(play(2), play(3))
    space = Discrete(6)
    assert action_distance(np.array([4, 5, 1, 4]), np.array([2, 3, 0, 3]), space, representatives).tolist() == [0, 0, 0, 1]
    assert rate_action(np.array([4, 4]), np.array([2, 3]), space, representatives).tolist() == [1.0, -1.0]
    assert action_distance(np.array([4]), np.array([2]), space).tolist() == [1.0]  # other environments: as before
    # Every discrete disagreement ties at 1: the oracle's k steps are drawn among them, not the first k.
    ties = np.ones(100)
    assert sorted(ranked_steps(ties, True, seed=0)[:3]) != [0, 1, 2]
    assert ranked_steps(ties, True, seed=0).tolist() == ranked_steps(ties, True, seed=0).tolist()
    assert ranked_steps(np.array([0.2, 0.9, 0.5]), False, seed=0).tolist() == [1, 2, 0]


def test_the_mountaincar_expert_is_made_again_to_float_precision(tmp_path: Path) -> None:
    """The demo fits its expert on every fresh run directory: it must be the shipped one, bit for
    bit on the kind of CPU that made the shipped file; on another, the fit's float kernels round
    differently (weights 1e-4 apart on an Intel Xeon with AVX-512, against the AMD EPYC's file),
    far below what another recipe, seed or target would change."""
    import torch as th

    from ultrarl.experts import pumping_expert

    pumping_expert(tmp_path / "expert.zip")
    made = PPO.load(tmp_path / "expert.zip", device="cpu").policy.state_dict()
    shipped = PPO.load(AGENTS / "experts" / "MountainCarContinuous-v0.zip", device="cpu").policy.state_dict()
    assert made.keys() == shipped.keys() and all(th.allclose(made[k], shipped[k], rtol=0, atol=1e-3) for k in made)
