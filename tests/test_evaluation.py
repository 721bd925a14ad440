"""Evaluation acts through ``DeterministicActor`` where it can: the same actions, bit for bit, as
SB3's ``predict(deterministic=True)``, so every evaluated return is what it was through SB3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecNormalize

from ultrarl.envs.factory import make_vec_env
from ultrarl.evaluate.evaluation import DeterministicActor, evaluate_agent
from ultrarl.refine.agent_files import NormalizedAgent
from ultrarl.refine.refiner import load_agent, load_checked_agent

AGENTS = Path(__file__).parents[1] / "benchmarks" / "agents"
SHIPPED = [("MountainCarContinuous-v0", "MountainCarContinuous-v0/seed0.zip"),  # Gaussian, clipped to the box
           ("ultrarl/PongPoint-v0", "ultrarl_PongPoint-v0/seed0.zip"),  # categorical
           ("Hopper-v5", "Hopper-v5/seed1.zip")]


def _observations(env_id: str, n: int) -> np.ndarray:
    """Observations the agent meets, and some far outside them (actions at the box's bounds)."""
    env = make_vec_env(env_id, n_envs=1, seed=3)
    observations = [env.reset()]
    for _ in range(n - 1):
        observations.append(env.step(np.array([env.action_space.sample()]))[0])
    env.close()
    seen = np.concatenate(observations)
    return np.concatenate([seen, 50.0 * seen[: n // 4]])


@pytest.mark.parametrize(("env_id", "path"), SHIPPED)
def test_the_actor_evaluates_shipped_agents_as_sb3s_predict_does(env_id: str, path: str) -> None:
    agent = load_checked_agent(AGENTS / path, env_id)
    actor = DeterministicActor.for_agent(agent)
    assert actor is not None
    for observation in _observations(env_id, 200):
        ours, _ = actor.predict(observation[None])
        theirs, _ = agent.predict(observation[None], deterministic=True)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    ours_result = evaluate_agent(agent, env_id, n_episodes=2, seed=10_000)
    env = make_vec_env(env_id, n_envs=1, seed=10_000)
    returns, lengths = evaluate_policy(agent, env, n_eval_episodes=2, deterministic=True, return_episode_rewards=True)
    assert ours_result.returns == [float(r) for r in returns] and ours_result.lengths == lengths


def test_the_actor_normalises_as_a_normalized_agent_does(cartpole_agent_path: Path) -> None:
    model = load_agent(cartpole_agent_path)
    statistics = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, seed=0), norm_reward=False)
    statistics.obs_rms.mean = np.array([0.5, -1.0, 0.05, 0.3])
    statistics.obs_rms.var = np.array([4.0, 0.25, 0.01, 2.0])
    agent = NormalizedAgent(model, statistics)
    actor = DeterministicActor.for_agent(agent)
    assert actor is not None and actor.normalization is statistics
    observations = _observations("CartPole-v1", 200)
    ours = [actor.predict(o[None])[0] for o in observations]
    theirs = [agent.predict(o[None], deterministic=True)[0] for o in observations]
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    bare = [DeterministicActor.for_agent(model).predict(o[None])[0] for o in observations]  # type: ignore[union-attr]
    assert not all(np.array_equal(a, b) for a, b in zip(ours, bare))  # the statistics change some actions


def test_other_agents_act_through_sb3(pendulum_agent_path: Path) -> None:
    """Where SB3's predict runs other operations, or could, the agent acts through it."""
    assert DeterministicActor.for_agent(SAC("MlpPolicy", "Pendulum-v1", seed=0, device="cpu")) is None
    assert DeterministicActor.for_agent(PPO("MlpPolicy", "Pendulum-v1", use_sde=True, seed=0, device="cpu")) is None

    class OwnPolicy(ActorCriticPolicy):  # may act otherwise (it could override any step)
        pass

    assert DeterministicActor.for_agent(PPO(OwnPolicy, "Pendulum-v1", seed=0, device="cpu")) is None

    class OwnPPO(PPO):
        def predict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return super().predict(*args, **kwargs)

    assert DeterministicActor.for_agent(OwnPPO("MlpPolicy", "Pendulum-v1", seed=0, device="cpu")) is None
    actor = DeterministicActor.for_agent(load_agent(pendulum_agent_path))
    assert actor is not None
    with pytest.raises(ValueError, match="deterministically"):
        actor.predict(np.zeros((1, 3)), deterministic=False)
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        actor.predict(np.zeros(3))  # one observation, not a batch: SB3 would squeeze the action
