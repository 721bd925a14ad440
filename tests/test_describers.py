"""Describers for every environment family, Pong from the RAM, prompts within the token budget,
``explain --dry-run`` and pictures of critical states."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from ultrarl.envs.factory import make_env
from ultrarl.envs.pong import pong_features_from_ram
from ultrarl.envs.rollout import Trajectory
from ultrarl.errors import UltraRLError
from ultrarl.explain.prompts import build_episode_prompt
from ultrarl.interpret.compress import TAIL_STEPS
from ultrarl.interpret.describer import StateDescriber

FAMILIES = {
    "Hopper-v5": "hopper",
    "Walker2d-v5": "walker2d",
    "HalfCheetah-v5": "halfcheetah",
    "Reacher-v5": "reacher",
    "Swimmer-v5": "swimmer",
    "Ant-v5": "ant",
    "InvertedPendulum-v5": "invertedpendulum",
    "InvertedDoublePendulum-v5": "inverteddoublependulum",
    "ultrarl/SparseHopper-v5": "sparsehopper",
    "ultrarl/SparseWalker2d-v5": "sparsewalker2d",
    "ultrarl/SparseHalfCheetah-v5": "sparsehalfcheetah",
    "CartPole-v1": "cartpole",
    "MountainCar-v0": "mountaincar",
    "MountainCarContinuous-v0": "mountaincarcontinuous",
    "Acrobot-v1": "acrobot",
    "Pendulum-v1": "pendulum",
    "ALE/Pong-v5": "pong",
    "ultrarl/PongPoint-v0": "pongpoint",
}


@pytest.mark.parametrize("env_id", list(FAMILIES))
def test_every_family_has_its_own_describer(env_id: str) -> None:
    env = make_env(env_id, seed=0)
    describer = StateDescriber(env_id, env.observation_space, env.action_space)
    assert describer.spec.family == FAMILIES[env_id], "fell back to the generic describer"
    obs, _ = env.reset(seed=0)
    next_obs, reward, *_ = env.step(env.action_space.sample())
    action = env.action_space.sample()
    line = describer.describe_step(1, next_obs, action, float(reward), obs)
    shown = [q for q in describer.spec.observation if q.shown]
    for quantity in shown:
        assert quantity.name in line
        assert quantity.unit == "" or quantity.unit in line
    if describer.discrete:
        assert describer.spec.action_names[int(action)] in line
    else:
        for name in describer.spec.action_names:
            assert name in describer.action_instructions()
    assert "Goal" in describer.context and "Reward" in describer.context
    if env_id.startswith("ultrarl/Sparse"):
        assert "SPARSE" in describer.context
    env.close()


def test_ant_contact_forces_are_matched_but_not_shown() -> None:
    env = make_env("Ant-v5")
    describer = StateDescriber("Ant-v5", env.observation_space, env.action_space)
    assert len(describer.spec.observation) == 105
    line = describer.describe_state(env.reset(seed=0)[0])
    assert "contact force" not in line and "torso height" in line
    assert "78 further values not shown" in describer.quantity_legend()


def test_pong_features_come_from_the_ram_with_velocities() -> None:
    ram0 = np.zeros(128, dtype=np.uint8)
    ram1 = np.zeros(128, dtype=np.uint8)
    ram0[[49, 54, 51, 50]] = [100, 120, 60, 110]
    ram1[[49, 54, 51, 50]] = [104, 117, 64, 112]
    features = pong_features_from_ram(ram1, ram0)
    np.testing.assert_allclose(features, [104, 117, 4, -3, 64, 112, 1])
    ram1[54] = 0  # the ball is not drawn between points: no position, no velocity
    np.testing.assert_allclose(pong_features_from_ram(ram1, ram0)[[0, 1, 2, 3, 6]], [0, 0, 0, 0, 0])


def test_pong_point_ends_at_the_first_point_with_reward_one_or_zero() -> None:
    env = make_env("ultrarl/PongPoint-v0")
    assert env.observation_space.shape == (7,)
    for seed in range(2):
        env.reset(seed=seed)
        rewards, done, info = [], False, {}
        while not done:
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
            rewards.append(reward)
            done = terminated or truncated
        assert terminated and info["point_won"] is not None
        assert set(rewards) <= {0.0, 1.0} and rewards[-1] == float(info["point_won"])
    env.close()


def test_generic_describer_takes_names_from_the_config() -> None:
    obs_space = gym.spaces.Box(-1, 1, (3,))
    act_space = gym.spaces.Discrete(2)
    describer = StateDescriber(
        "MyEnv-v0", obs_space, act_space, feature_names=["speed", "fuel", "altitude"],
        action_names=["coast", "burn"], context="Environment: a rocket. Goal: land.",
    )
    line = describer.describe_step(3, np.array([0.1, 0.2, 0.3]), 1, 0.0)
    assert "speed 0.10" in line and "altitude 0.30" in line and "burn (1)" in line
    assert describer.context.startswith("Environment: a rocket")
    plain = StateDescriber("MyEnv-v0", obs_space, act_space)
    assert plain.spec.family == "generic" and "x2 0.30" in plain.describe_state(np.array([0.1, 0.2, 0.3]))
    with pytest.raises(UltraRLError, match="2 feature names given for an observation of 3 values"):
        StateDescriber("MyEnv-v0", obs_space, act_space, feature_names=["a", "b"])


def _thousand_step_hopper(terminated: bool) -> Trajectory:
    """A real 1000-step Hopper episode (random torques; falls do not end it)."""
    env = gym.make("Hopper-v5", terminate_when_unhealthy=False)
    obs, _ = env.reset(seed=7)
    env.action_space.seed(7)
    observations, actions, rewards = [], [], []
    for _ in range(1000):
        action = env.action_space.sample()
        observations.append(obs)
        actions.append(action)
        obs, reward, *_ = env.step(action)
        rewards.append(reward)
    env.close()
    return Trajectory(0, np.array(observations, dtype=np.float32), np.array(actions), np.array(rewards),
                      terminated, seed=7)


@pytest.fixture(scope="module")
def smollm2_tokenizer():  # the local model's own tokenizer (llama.cpp, vocabulary of SmolLM2)
    from ultrarl.llm.local_backend import LocalLlamaBackend

    return LocalLlamaBackend().count_tokens


@pytest.mark.parametrize("budget", [1000, 3000, 6000])
@pytest.mark.parametrize("terminated", [True, False])
def test_a_1000_step_hopper_prompt_fits_the_budget_with_the_last_steps(smollm2_tokenizer, budget, terminated) -> None:
    trajectory = _thousand_step_hopper(terminated)
    env = gym.make("Hopper-v5")
    describer = StateDescriber("Hopper-v5", env.observation_space, env.action_space)
    prompt = build_episode_prompt(trajectory, describer, smollm2_tokenizer, k=3, token_budget=budget)
    # Recount what is actually sent, with the model's tokenizer, including the chat-template margin.
    sent = sum(smollm2_tokenizer(m["content"]) for m in prompt.messages)
    assert sent <= budget, f"{sent} tokens sent for a budget of {budget}"
    assert prompt.uncompressed_tokens > 10 * budget // 2  # it really had to compress
    user = prompt.messages[1]["content"]
    # The steps before the end come first; at the default budget and above, all TAIL_STEPS fit
    # (at 1000 tokens the instructions leave room for about two steps: the first and the last).
    tail = TAIL_STEPS if budget >= 3000 else 1
    for step in range(1000 - tail, 1000):
        assert f"step {step}: " in user
    assert "omitted" in user and ("step 0: " in user or budget < 3000)
    # Original step numbers, in order, and the schema only admits shown steps.
    shown = [int(line.split(":")[0].split()[1]) for line in user.splitlines() if line.startswith("step ")]
    assert shown == prompt.shown_steps == sorted(shown)
    assert prompt.schema["properties"]["critical_steps"]["items"]["properties"]["step"]["enum"] == shown


def test_dry_run_prints_prompts_and_calls_nothing(cartpole_agent_path: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "never"
    # An LLM server that does not exist: any call would fail, so success proves no call was made.
    result = subprocess.run(
        [sys.executable, "-m", "ultrarl.cli", "explain", "CartPole-v1", "--agent", str(cartpole_agent_path),
         "--episodes", "2", "--dry-run", "--llm", "openai:none", "--llm-base-url", "http://127.0.0.1:9/v1",
         "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("===== episode") == 2
    assert "push cart left" in result.stdout and "--- system ---" in result.stdout
    assert not run_dir.exists()


def test_frames_of_critical_states_are_rendered_offscreen(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    from ultrarl.envs.factory import make_vec_env
    from ultrarl.envs.rollout import collect_trajectories
    from ultrarl.explain.explainer import CriticalState
    from ultrarl.report.frames import save_critical_frames

    agent = PPO("MlpPolicy", make_vec_env("Hopper-v5"), seed=0, device="cpu")
    trajectories = collect_trajectories(agent, "Hopper-v5", 2, seed=3)
    states = [
        CriticalState(episode=t.episode, step=t.length - 1, rationale="fell", suggested_action=[0.0, 0.0, 0.0],
                      implicit_reward=-0.5, agent_action=[0.0, 0.0, 0.0], return_so_far=0.0, state_text="",
                      suggested_action_text="", agent_action_text="")
        for t in trajectories
    ]
    pictured, problems = save_critical_frames("Hopper-v5", trajectories, states, tmp_path / "frames")
    assert problems == []
    for state in pictured:
        assert state.frame is not None
        image = (tmp_path / state.frame).read_bytes()
        assert image.startswith(b"\x89PNG") and len(image) > 10_000
    # A recording the replay cannot reproduce is reported, not pictured wrongly.
    trajectories[0].observations[trajectories[0].length - 1] += 1.0
    _, problems = save_critical_frames("Hopper-v5", trajectories, states[:1], tmp_path / "frames2")
    assert problems and "diverged" in problems[0]
