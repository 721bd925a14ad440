"""SAC and TD3 agents refined with ULTRA's modulation: the replay buffer holds the executed
actions and the shaped rewards, the logged return is the environment's, and every method runs
from the command line on a MuJoCo task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import DQN, SAC, TD3
from stable_baselines3.common.logger import Logger

from test_guided_ppo import RecordingVecEnv, _table
from ultrarl.cli import main
from ultrarl.envs.factory import make_vec_env
from ultrarl.refine.guided_off_policy import GuidedDQN, GuidedSAC, GuidedTD3
from ultrarl.refine.modulation import Modulation, ModulationSettings
from ultrarl.refine.supervised import SupervisedTerm


@pytest.mark.parametrize("cls", [GuidedSAC, GuidedTD3])
def test_replay_buffer_holds_executed_suggestions_and_shaped_rewards(cls: type) -> None:
    """Override probability 0.5 on Pendulum, a table that matches everywhere: overridden steps
    store the suggestion (scaled to [-1, 1]) and the environment's reward; the others store the
    agent's own action and reward + β·r_LLM; Monitor's returns are the environment's."""
    table = _table("Pendulum-v1", np.array([1.5], dtype=np.float32), radius=100.0, reward=-1.0)
    settings = ModulationSettings(override_prob=0.5, anneal_override=False, bc_weight=0.0)
    env = RecordingVecEnv(make_vec_env("Pendulum-v1", n_envs=1, seed=0))
    model = cls("MlpPolicy", env, learning_starts=10_000, seed=0, device="cpu",
                modulation=Modulation(table, True, True, settings))
    model.set_logger(Logger(None, []))
    model.learn(400)
    n = model.replay_buffer.pos
    executed = np.concatenate(env.executed)[:n, 0]
    env_rewards = np.concatenate(env.env_rewards)[:n]
    stored_actions = model.replay_buffer.actions[:n, 0, 0]
    stored_rewards = model.replay_buffer.rewards[:n, 0]
    overridden = np.isclose(executed, 1.5)
    stats = model.modulation.stats.total
    assert stats["matched"] == n and 0 < stats["overridden"] == overridden.sum() < n
    np.testing.assert_allclose(stored_actions[overridden], 0.75, rtol=1e-6)  # 1.5 of [-2, 2], scaled
    np.testing.assert_allclose(stored_actions[~overridden], executed[~overridden] / 2.0, rtol=1e-5)
    np.testing.assert_allclose(stored_rewards[overridden], env_rewards[overridden], rtol=1e-6)
    np.testing.assert_allclose(stored_rewards[~overridden] - env_rewards[~overridden],
                               -model.modulation.beta_absolute, rtol=1e-5)
    monitor_returns = [info["r"] for info in model.ep_info_buffer]
    assert monitor_returns and monitor_returns[0] == pytest.approx(env_rewards[:200].sum(), rel=1e-5)


@pytest.fixture(scope="module")
def off_policy_agents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A SAC and a TD3 agent on Hopper-v5 (a few hundred steps: sub-optimal), and a SAC expert."""
    root = tmp_path_factory.mktemp("off_policy")
    paths = {}
    for name, cls, seed in (("sac", SAC, 0), ("td3", TD3, 0), ("expert", SAC, 1)):
        model = cls("MlpPolicy", "Hopper-v5", learning_starts=100, buffer_size=5_000, seed=seed, device="cpu")
        model.learn(300)
        paths[name] = root / f"{name}.zip"
        model.save(paths[name])
    return paths


@pytest.mark.parametrize("algorithm", ["sac", "td3"])
@pytest.mark.parametrize("method", ["ppo", "oracle", "ultra-ra"])
def test_off_policy_agents_refine_with_every_method_family(
    off_policy_agents: dict[str, Path], tmp_path: Path, algorithm: str, method: str
) -> None:
    run_dir = tmp_path / "run"
    code = main(["refine", "Hopper-v5", "--agent", str(off_policy_agents[algorithm]), "--method", method,
                 "--expert", str(off_policy_agents["expert"]), "--timesteps", "300", "--episodes", "1",
                 "--eval-episodes", "2", "--token-budget", "1000", "--run-dir", str(run_dir), "--seed", "0"])
    assert code == 0
    summary = json.loads((run_dir / "refine_summary.json").read_text())
    assert summary["final_num_timesteps"] == 300
    refined = (SAC if algorithm == "sac" else TD3).load(run_dir / "model.zip", device="cpu")
    original = (SAC if algorithm == "sac" else TD3).load(off_policy_agents[algorithm], device="cpu")
    moved = [not np.array_equal(a.detach().numpy(), b.detach().numpy())
             for a, b in zip(refined.actor.parameters(), original.actor.parameters())]
    assert any(moved), "refinement trained the actor"
    if method == "oracle":
        assert summary["modulation"]["matched"] > 0


def test_dqn_stores_executed_suggestions_explores_at_its_final_epsilon_and_refines(tmp_path: Path) -> None:
    """CartPole: a table that matches everywhere, override probability 1 (annealed): the buffer
    holds the suggested action where it ran; the refinement explores with ε = the agent's final ε
    (its schedule would restart at 1.0); the CLI refines a DQN zip with ultra-ra and continued training."""
    agent = DQN("MlpPolicy", "CartPole-v1", learning_starts=100, buffer_size=5_000, seed=0, device="cpu")
    agent.learn(500)
    path = tmp_path / "dqn.zip"
    agent.save(path)
    table = _table("CartPole-v1", np.array(1, dtype=np.int64), radius=100.0)
    env = RecordingVecEnv(make_vec_env("CartPole-v1", n_envs=1, seed=0))
    settings = ModulationSettings(override_prob=0.5, anneal_override=False, bc_weight=1.0)
    model = GuidedDQN.load(path, env=env, device="cpu", modulation=Modulation(table, True, True, settings))
    model.set_logger(Logger(None, []))
    model.learn(300)
    assert model.exploration_schedule(1.0) == pytest.approx(agent.exploration_final_eps)  # from the first step
    assert agent.exploration_schedule(1.0) == pytest.approx(agent.exploration_initial_eps) != agent.exploration_final_eps
    n = model.replay_buffer.pos
    executed = np.concatenate(env.executed)[:n]
    np.testing.assert_array_equal(model.replay_buffer.actions[:n, 0, 0], executed)
    assert 0 < model.modulation.stats.total["overridden"] < n
    for method in ("ppo", "ultra-ra"):
        assert main(["refine", "CartPole-v1", "--agent", str(path), "--method", method, "--timesteps", "300",
                     "--episodes", "1", "--eval-episodes", "2", "--token-budget", "800",
                     "--run-dir", str(tmp_path / method)]) == 0
        assert DQN.load(tmp_path / method / "model.zip").num_timesteps == 300


def test_off_policy_supervised_steps_count_every_replayed_transition(monkeypatch: pytest.MonkeyPatch) -> None:
    """With two environments, each row of the replay buffer holds two transitions: the supervised
    term is sized against all of them, after each gradient phase."""
    calls: list[tuple[int, int, int]] = []
    steps_after = SupervisedTerm.steps_after

    def recording(term: SupervisedTerm, rl_steps: int, rl_samples: int) -> int:
        calls.append((rl_steps, rl_samples, model.replay_buffer.pos))
        return steps_after(term, rl_steps, rl_samples)

    monkeypatch.setattr(SupervisedTerm, "steps_after", recording)
    table = _table("CartPole-v1", np.array(1, dtype=np.int64), radius=0.5)
    settings = ModulationSettings(bc_weight=1.0, bc_anneal=False)
    model = GuidedDQN("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), learning_starts=32,
                      train_freq=4, gradient_steps=2, seed=0, device="cpu",
                      modulation=Modulation(table, True, False, settings))
    model.set_logger(Logger(None, []))
    model.learn(200)
    assert calls and model.supervised.memory.size > 0
    for rl_steps, rl_samples, rows in calls:
        assert rl_steps == 2 and rl_samples == 2 * rows
