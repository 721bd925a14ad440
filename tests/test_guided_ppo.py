"""The parts of ULTRA's modulation that must be exactly right."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnvWrapper

from ultrarl.envs.factory import make_vec_env
from ultrarl.guidance.table import GuidanceTable
from ultrarl.refine.guided_ppo import GuidedPPO, Modulation


class RecordingVecEnv(VecEnvWrapper):
    """Records what the environment really received and returned."""

    def __init__(self, venv):  # type: ignore[no-untyped-def]
        super().__init__(venv)
        self.executed: list[np.ndarray] = []
        self.env_rewards: list[np.ndarray] = []

    def reset(self):  # type: ignore[no-untyped-def]
        return self.venv.reset()

    def step_async(self, actions):  # type: ignore[no-untyped-def]
        self.executed.append(np.array(actions, copy=True))
        self.venv.step_async(actions)

    def step_wait(self):  # type: ignore[no-untyped-def]
        obs, rewards, dones, infos = self.venv.step_wait()
        self.env_rewards.append(np.array(rewards, copy=True))
        return obs, rewards, dones, infos


def _table(env_id: str, suggested: np.ndarray, radius: float, reward: float = 0.5) -> GuidanceTable:
    """A one-entry table centred on the reset state; ``radius`` decides how much it matches."""
    env = make_vec_env(env_id, n_envs=1, seed=0)
    obs = env.reset()
    env.close()
    dim = obs.shape[1]
    return GuidanceTable(
        observations=obs.astype(np.float64),
        suggested_actions=suggested[None],
        implicit_rewards=np.array([reward]),
        sources=np.array([[0, 0]]),
        obs_mean=np.zeros(dim),
        obs_std=np.ones(dim),
        epsilon=radius,
        reward_scale=1.0,
    )


def _collect(env_id: str, table: GuidanceTable, override: bool, shape: bool, n_envs: int = 2):
    env = RecordingVecEnv(make_vec_env(env_id, n_envs=n_envs, seed=0))
    model = GuidedPPO("MlpPolicy", env, n_steps=64, batch_size=32, seed=0, device="cpu")
    model.set_logger(Logger(None, []))
    model.set_modulation(
        Modulation(table, override_actions=override, shape_rewards=shape, override_prob=1.0, anneal_override=False)
    )
    _, callback = model._setup_learn(64 * n_envs, callback=None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=64)
    return model, env


@pytest.mark.parametrize(
    ("env_id", "suggested", "radius"),
    [
        ("CartPole-v1", np.array(1, dtype=np.int64), 0.5),  # discrete
        ("Pendulum-v1", np.array([1.7], dtype=np.float32), 1.0),  # continuous
    ],
)
def test_buffer_holds_executed_actions_with_their_log_probs(env_id: str, suggested: np.ndarray, radius: float) -> None:
    table = _table(env_id, suggested, radius)
    model, env = _collect(env_id, table, override=True, shape=False)
    buffer = model.rollout_buffer
    stats = model.modulation_stats.total
    assert 0 < stats["overridden"] < stats["steps"], "the test needs both overridden and free steps"

    executed = np.stack(env.executed)  # (n_steps, n_envs[, act_dim])
    stored = buffer.actions.reshape(executed.shape[0], executed.shape[1], -1)
    if env_id == "CartPole-v1":
        np.testing.assert_array_equal(stored[..., 0], executed)
    else:
        # PPO stores the sampled action and executes it clipped to the bounds.
        low, high = model.action_space.low, model.action_space.high
        np.testing.assert_allclose(np.clip(stored, low, high), executed, rtol=0, atol=1e-6)

    # Where the table matched, the executed action is the suggested one.
    obs = buffer.observations.reshape(-1, buffer.observations.shape[-1])
    matched = table.match(obs) >= 0
    flat_stored = stored.reshape(len(obs), -1)
    np.testing.assert_allclose(flat_stored[matched], np.broadcast_to(suggested.reshape(1, -1), (matched.sum(), flat_stored.shape[1])), atol=1e-6)
    assert matched.sum() == stats["overridden"]

    # Stored log-probabilities and values are those of the stored actions under the current policy.
    obs_t = th.as_tensor(obs)
    actions_t = th.as_tensor(buffer.actions.reshape(len(obs), -1))
    if env_id == "CartPole-v1":
        actions_t = actions_t.flatten()
    with th.no_grad():
        values, log_prob, _ = model.policy.evaluate_actions(obs_t, actions_t)
    np.testing.assert_allclose(buffer.log_probs.reshape(-1), log_prob.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(buffer.values.reshape(-1), values.flatten().numpy(), rtol=1e-5, atol=1e-5)


def test_implicit_reward_shapes_training_reward_only() -> None:
    table = _table("CartPole-v1", np.array(0, dtype=np.int64), radius=0.5, reward=-0.8)
    model, env = _collect("CartPole-v1", table, override=False, shape=True)
    buffer = model.rollout_buffer
    obs = buffer.observations.reshape(-1, buffer.observations.shape[-1])
    matched = table.match(obs) >= 0
    assert matched.any() and not matched.all()
    env_rewards = np.stack(env.env_rewards).reshape(-1)
    beta = model.modulation.beta_absolute  # type: ignore[union-attr]
    expected = env_rewards + np.where(matched, beta * -0.8, 0.0)
    np.testing.assert_allclose(buffer.rewards.reshape(-1), expected, rtol=1e-6)
    # No action was overridden in ULTRA-R.
    assert model.modulation_stats.total["overridden"] == 0
    # The Monitor (true return) saw only the environment's reward: CartPole pays exactly 1 per step.
    assert all(r == 1.0 for r in env_rewards)


def test_match_and_override_rates_are_logged() -> None:
    table = _table("CartPole-v1", np.array(1, dtype=np.int64), radius=0.5)
    model, _ = _collect("CartPole-v1", table, override=True, shape=True)
    logged = model.logger.name_to_value
    assert 0 < logged["refine/match_rate"] < 1
    assert logged["refine/override_rate"] == pytest.approx(logged["refine/match_rate"])
    assert logged["refine/implicit_reward_mean"] == pytest.approx(0.5)


def test_table_that_never_matches_changes_nothing() -> None:
    table = _table("CartPole-v1", np.array(1, dtype=np.int64), radius=1e-9)
    table.observations = table.observations + 100.0  # far from anything CartPole visits
    model, env = _collect("CartPole-v1", table, override=True, shape=True)
    assert model.modulation_stats.total["matched"] == 0
    assert model.logger.name_to_value["refine/match_rate"] == 0.0
    np.testing.assert_array_equal(model.rollout_buffer.rewards.reshape(-1), np.stack(env.env_rewards).reshape(-1))


def test_override_probability_anneals_to_zero() -> None:
    table = _table("CartPole-v1", np.array(1, dtype=np.int64), radius=0.5)
    env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
    model = GuidedPPO("MlpPolicy", env, n_steps=32, batch_size=32, seed=0, device="cpu")
    model.set_modulation(Modulation(table, True, False, override_prob=0.8, anneal_override=True))
    model._current_progress_remaining = 1.0
    assert model.current_override_prob() == pytest.approx(0.8)
    model._current_progress_remaining = 0.25
    assert model.current_override_prob() == pytest.approx(0.2)
