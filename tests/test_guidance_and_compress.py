"""Guidance-table matching and episode compression."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ultrarl.envs.rollout import Trajectory
from ultrarl.explain.explainer import CriticalState
from ultrarl.guidance.table import GuidanceSettings, GuidanceTable
from ultrarl.interpret.compress import compress_episode


def _trajectory(episode: int, length: int, dim: int = 3, seed: int = 0) -> Trajectory:
    rng = np.random.default_rng(seed + episode)
    obs = np.cumsum(rng.normal(size=(length, dim)), axis=0)  # a random walk: consecutive states are close
    return Trajectory(episode, obs.astype(np.float32), rng.uniform(-1, 1, (length, 2)).astype(np.float32),
                      np.ones(length), terminated=True, seed=episode)


def _state(episode: int, step: int, action: list[float], reward: float) -> CriticalState:
    return CriticalState(episode=episode, step=step, rationale="r", suggested_action=action, implicit_reward=reward,
                         agent_action=[0.0, 0.0], return_so_far=0.0, state_text="", suggested_action_text="",
                         agent_action_text="")


def test_match_radius_is_the_boundary_and_the_nearest_entry_wins(tmp_path: Path) -> None:
    trajectories = [_trajectory(0, 50), _trajectory(1, 50)]
    states = [_state(0, 10, [0.5, -0.5], 0.3), _state(1, 20, [1.0, 1.0], -0.7)]
    table = GuidanceTable.from_explanations(states, trajectories, GuidanceSettings(deduplicate=False))
    eps = table.epsilon
    assert eps > 0
    key0, key1 = table.normalise(table.observations)
    direction = np.array([1.0, 0.0, 0.0])
    inside = (key0 + 0.99 * eps * direction) * table.obs_std + table.obs_mean
    outside = (key0 + 1.01 * eps * direction) * table.obs_std + table.obs_mean
    towards_1 = (0.3 * key0 + 0.7 * key1) * table.obs_std + table.obs_mean  # nearer entry 1
    expected = [0, -1, 1 if np.linalg.norm(0.3 * (key1 - key0)) <= eps else -1]
    np.testing.assert_array_equal(table.match(np.stack([inside, outside, towards_1])), expected)
    table.save(tmp_path / "g.npz")
    loaded = GuidanceTable.load(tmp_path / "g.npz")
    np.testing.assert_array_equal(loaded.match(np.stack([inside, outside])), [0, -1])
    np.testing.assert_allclose(loaded.suggested_actions, table.suggested_actions)
    assert loaded.epsilon == table.epsilon and loaded.reward_scale == table.reward_scale


def test_epsilon_is_a_quantile_of_consecutive_distances() -> None:
    trajectories = [_trajectory(0, 200)]
    low = GuidanceTable.from_explanations([], trajectories, GuidanceSettings(epsilon_quantile=0.1))
    high = GuidanceTable.from_explanations([], trajectories, GuidanceSettings(epsilon_quantile=0.9))
    steps = np.linalg.norm(np.diff(high.normalise(trajectories[0].observations), axis=0), axis=1)
    assert low.epsilon == np.quantile(steps, 0.1) and high.epsilon == np.quantile(steps, 0.9)
    assert len(high) == 0 and (high.match(trajectories[0].observations[:5]) == -1).all()


def test_step_scale_gives_every_dimension_the_same_one_step_weight() -> None:
    """A fast dimension (100x the one-step change of the others) dominates the 'std' metric's
    one-step distances but not the 'step' metric's."""
    rng = np.random.default_rng(0)
    slow = np.cumsum(rng.normal(size=(400, 2)), axis=0)
    fast = rng.normal(scale=100.0, size=(400, 1))  # noise: large one-step changes, small range relative to them
    obs = np.concatenate([slow, fast], axis=1).astype(np.float32)
    trajectory = Trajectory(0, obs, np.zeros((400, 1), np.float32), np.ones(400), True, 0)
    shares = {}
    for scale in ("std", "step"):
        table = GuidanceTable.from_explanations([], [trajectory], GuidanceSettings(match_scale=scale))
        squared = np.diff(table.normalise(obs), axis=0) ** 2
        shares[scale] = squared[:, 2].sum() / squared.sum()
    assert shares["std"] > 0.9
    assert 0.2 < shares["step"] < 0.5


def test_near_duplicates_are_dropped_and_extension_adds_neighbours() -> None:
    trajectories = [_trajectory(0, 50)]
    states = [_state(0, 10, [0.5, -0.5], 0.3), _state(0, 10, [1.0, 1.0], -0.7), _state(0, 40, [0.0, 0.0], 0.0)]
    deduplicated = GuidanceTable.from_explanations(states, trajectories)
    assert [tuple(s) for s in deduplicated.sources] == [(0, 10), (0, 40)]
    extended = GuidanceTable.from_explanations(states[2:], trajectories,
                                               GuidanceSettings(extend_steps=2, deduplicate=False))
    np.testing.assert_array_equal(extended.observations, trajectories[0].observations[[40, 38, 39, 41, 42]])
    assert (extended.suggested_actions == 0.0).all()


def test_compression_fits_budget_and_keeps_the_end() -> None:
    n = 1000
    lines = [f"step {t}: torso height +1.00 m, torso pitch +0.01 rad; action: thigh +0.10; reward +1.00" for t in range(n)]
    rewards = np.ones(n)
    rewards[500] = -5.0  # a sharp drop must be kept
    actions = np.zeros((n, 3))
    count = lambda text: len(text.split())  # noqa: E731
    text, shown = compress_episode(lines, rewards, actions, budget_tokens=600, count_tokens=count)
    assert sum(count(line) + 1 for line in text.splitlines()) <= 600
    assert shown == sorted(shown)
    assert n - 1 in shown and n - 8 in shown and 0 in shown and 500 in shown
    assert "step 999:" in text and "omitted" in text
    assert f"step {shown[1]}:" in text  # original step numbers


def test_short_episode_is_not_compressed() -> None:
    lines = [f"step {t}: x" for t in range(5)]
    text, shown = compress_episode(lines, np.ones(5), np.zeros((5, 1)), 1000, lambda s: len(s))
    assert shown == list(range(5)) and "omitted" not in text
