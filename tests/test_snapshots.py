"""Snapshot/restore per environment family: from a restored snapshot, the same action gives the
same observation and reward as the original run."""

from __future__ import annotations

import numpy as np
import pytest

from ultrarl.envs.factory import make_env
from ultrarl.envs.snapshot import require_snapshots, restore_snapshot, snapshot_family, take_snapshot

ENVS = ["Hopper-v5", "ultrarl/SparseWalker2d-v5", "HalfCheetah-v5", "Ant-v5", "Reacher-v5", "CartPole-v1",
        "Pendulum-v1", "MountainCar-v0", "Acrobot-v1", "ALE/Pong-v5", "ultrarl/PongPoint-v0"]


@pytest.mark.parametrize("env_id", ENVS)
def test_restore_then_same_actions_reproduce_the_run(env_id: str) -> None:
    env = make_env(env_id)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=1)
    for _ in range(15):
        obs, *_ = env.step(env.action_space.sample())
    snapshot = take_snapshot(env, obs)
    actions = [env.action_space.sample() for _ in range(10)]
    original = [env.step(a)[:3] for a in actions]
    # Restore into a *fresh* instance (as resets in a vectorised env do), after its own reset.
    other = make_env(env_id)
    other.reset(seed=99)
    restored_obs = restore_snapshot(other, snapshot)
    np.testing.assert_array_equal(restored_obs, obs)
    replay = [other.step(a)[:3] for a in actions]
    for (o1, r1, t1), (o2, r2, t2) in zip(original, replay):
        np.testing.assert_array_equal(o1, o2)
        assert r1 == r2 and t1 == t2
    env.close()
    other.close()


def test_time_limit_counter_is_restored() -> None:
    env = make_env("CartPole-v1")
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        obs, *_ = env.step(0)
    snapshot = take_snapshot(env, obs)
    assert snapshot.elapsed_steps == 5
    env.reset(seed=0)
    restore_snapshot(env, snapshot)
    assert env._elapsed_steps == 5  # type: ignore[attr-defined]


def test_environments_without_an_adapter_are_copied() -> None:
    """FrozenLake (toy text, slippery: its RNG matters) has no adapter: a deep copy replays it."""
    import gymnasium as gym

    if "ultrarl/NoAdapter-v0" not in gym.registry:
        gym.register("ultrarl/NoAdapter-v0", entry_point="gymnasium.envs.toy_text:FrozenLakeEnv")
    require_snapshots("ultrarl/NoAdapter-v0", "--method rice")  # no error
    env = make_env("ultrarl/NoAdapter-v0", seed=0)
    assert snapshot_family(env) == "copy"
    env.close()
