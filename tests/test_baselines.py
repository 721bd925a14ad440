"""The baselines in the same harness (statemask-r, rice, random, oracle), RICE's machinery
(critical-state resets, RND) and verified suggestions, each on a tiny budget."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import PPO

from ultrarl.cli import main
from ultrarl.envs.factory import make_env, make_vec_env
from ultrarl.envs.rollout import collect_trajectories
from ultrarl.envs.snapshot import take_snapshot
from ultrarl.explain.explainer import CriticalState
from ultrarl.explain.fidelity import significant
from ultrarl.guidance.verify import VerifySettings, verify_suggestions
from ultrarl.refine.exploration import CriticalStateResets, RNDBonus


def _refine(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["refine", "CartPole-v1", "--timesteps", "2048", "--episodes", "3", "--eval-episodes", "2",
                 "--mask-timesteps", "1024", *args])
    out = capsys.readouterr()
    assert code == 0, out.err


def _progress_column(run_dir: Path, column: str) -> list[float]:
    with open(run_dir / "progress.csv") as f:
        return [float(r[column]) for r in csv.DictReader(f) if r.get(column)]


@pytest.mark.parametrize(
    ("method", "reset_prob", "rnd"), [("statemask-r", 1.0, 0.0), ("rice", 0.25, 0.01), ("random", 0.25, 0.01)]
)
def test_reset_baselines_refine_from_critical_states(
    method: str, reset_prob: float, rnd: float, cartpole_agent_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = tmp_path / method
    _refine(["--agent", str(cartpole_agent_path), "--method", method, "--run-dir", str(run_dir)], capsys)
    summary = json.loads((run_dir / "refine_summary.json").read_text())
    assert summary["final_num_timesteps"] == 2048
    assert (summary["reset_prob"], summary["rnd_weight"]) == (reset_prob, rnd)
    assert summary["reset_pool"] == 9  # k = 3 critical states x 3 episodes
    states = [json.loads(line) for line in (run_dir / "explanations.jsonl").read_text().splitlines()]
    assert len(states) == 9
    starts = _progress_column(run_dir, "refine/critical_start_rate")
    assert starts and (starts[-1] == 1.0 if method == "statemask-r" else 0.0 < starts[-1] < 1.0)
    if rnd > 0:
        assert _progress_column(run_dir, "refine/rnd_bonus_mean")[-1] != 0  # centred: either sign
    identify = json.loads((run_dir / "identify.json").read_text())
    if method == "random":
        assert all(s["rationale"].startswith("uniformly random") for s in states)
    else:
        assert identify["mask_train_wall_time_s"] > 0 and (run_dir / "mask_network.zip").exists()
        assert all(s["rationale"].startswith("mask network keeps") for s in states)
    assert json.loads((run_dir / "eval.json").read_text())["after"]["episodes"] == 2


def test_oracle_suggests_the_experts_actions_and_is_labelled(
    cartpole_agent_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ultrarl.pipeline import pretrain
    from ultrarl.settings import PretrainSettings

    expert_path = tmp_path / "expert.zip"
    pretrain(PretrainSettings(env_id="CartPole-v1", timesteps=4096, seed=1, out=str(expert_path)), progress_bar=False)
    run_dir = tmp_path / "oracle"
    _refine(["--agent", str(cartpole_agent_path), "--method", "oracle", "--expert", str(expert_path),
             "--run-dir", str(run_dir)], capsys)
    expert, agent = PPO.load(expert_path), PPO.load(cartpole_agent_path)
    trajectories = collect_trajectories(agent, "CartPole-v1", 3, seed=0)
    states = [json.loads(line) for line in (run_dir / "explanations.jsonl").read_text().splitlines()]
    assert states
    for state in states:
        obs = trajectories[state["episode"]].observations[state["step"]]
        assert state["suggested_action"] == int(expert.predict(obs, deterministic=True)[0])
        # The agent's deterministic action (not the sampled one) disagrees with the expert's.
        assert state["agent_action"] == int(agent.predict(obs, deterministic=True)[0])
        assert state["suggested_action"] != state["agent_action"]
        assert state["implicit_reward"] == -1.0
    assert "upper bound" in (run_dir / "report.md").read_text()
    assert json.loads((run_dir / "refine_summary.json").read_text())["modulation"]["matched"] > 0


def test_oracle_without_an_expert_is_a_clear_error(cartpole_agent_path: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["refine", "CartPole-v1", "--agent", str(cartpole_agent_path), "--method", "oracle",
                 "--run-dir", str(tmp_path / "r"), "--episodes", "1", "--eval-episodes", "1"])
    assert code == 2 and "needs --expert" in capsys.readouterr().err


def test_critical_state_resets_follow_p() -> None:
    env = make_env("CartPole-v1")
    obs, _ = env.reset(seed=0)
    for _ in range(10):
        obs, *_ = env.step(1)
    snapshot = take_snapshot(env, obs)
    always = CriticalStateResets(make_env("CartPole-v1"), [snapshot], reset_prob=1.0)
    assert np.array_equal(always.reset(seed=5)[0], obs) and always.critical_starts == 1
    never = CriticalStateResets(make_env("CartPole-v1"), [snapshot], reset_prob=0.0)
    assert not np.array_equal(never.reset(seed=5)[0], obs) and never.default_starts == 1
    mixed = CriticalStateResets(make_env("CartPole-v1"), [snapshot], reset_prob=0.25, seed=1)
    for _ in range(400):
        mixed.reset()
    assert 0.18 < mixed.critical_starts / 400 < 0.32
    # A resume restores the reset stream: the same choices as the uninterrupted wrapper from then on.
    resumed = CriticalStateResets(make_env("CartPole-v1"), [snapshot], reset_prob=0.25, seed=99)
    resumed.load_training_state(mixed.training_state())
    choices = [[np.array_equal(w.reset()[0], obs) for _ in range(50)] for w in (mixed, resumed)]
    assert choices[0] == choices[1] and any(choices[0]) and not all(choices[0])
    assert (resumed.critical_starts, resumed.default_starts) == (mixed.critical_starts, mixed.default_starts)


def test_rnd_bonus_falls_on_familiar_states_and_leaves_the_true_return() -> None:
    venv = make_vec_env("CartPole-v1", n_envs=1, seed=0)
    rnd = RNDBonus(venv, weight=0.5, seed=0, learning_rate=1e-3, batch_size=32)
    rnd.reset()
    familiar = np.zeros((64, 4))
    rnd.obs_stats.update(np.random.default_rng(0).normal(size=(256, 4)))
    first = rnd.novelty(familiar).mean()
    for _ in range(200):
        rnd._train(familiar)
    assert rnd.novelty(familiar).mean() < 0.2 * first
    shaped, true = [], []
    for _ in range(50):
        rnd.step_async(np.array([1]))
        _, reward, done, info = rnd.step_wait()
        shaped.append(float(reward[0]))
        if done[0]:
            true.append(info[0]["episode"]["r"])
    bonus = np.array(shaped) - 1.0  # CartPole pays 1 per step; the bonus is on top
    assert (bonus > 0).any() and (bonus < 0).any(), "a centred bonus: novel states above, familiar below"
    assert all(float(r).is_integer() for r in true)  # Monitor's return is the environment's own


def test_verify_keeps_only_suggestions_that_beat_the_agent(cartpole_agent_path: Path) -> None:
    agent = PPO.load(cartpole_agent_path)
    trajectories = collect_trajectories(agent, "CartPole-v1", 2, seed=0, keep_snapshots=True)
    t = trajectories[0]
    step = t.length - 2

    def state(action: int) -> CriticalState:
        return CriticalState(episode=0, step=step, rationale="r", suggested_action=action, implicit_reward=0.3,
                             agent_action=int(t.actions[step]), return_so_far=0.0, state_text="",
                             suggested_action_text="", agent_action_text="")

    same, other = state(int(t.actions[step])), state(1 - int(t.actions[step]))
    settings = VerifySettings(enabled=True, samples=16, horizon=10, z=2.0)
    kept, report = verify_suggestions([same, other], trajectories, agent, "CartPole-v1", settings)
    assert report.checked == 2 and report.kept + report.dropped == 2
    assert report.gaps[0] == 0.0  # common random numbers: the same action gives the same returns
    assert same not in kept
    for s in kept:
        assert s.implicit_reward < 0 and "verified" in s.rationale
    assert (report.gaps[1] > 0) == (len(kept) == 1) or len(kept) == 0


def test_verify_needs_a_significant_gain() -> None:
    """A noisy gain whose mean is positive but within z standard errors is not significant; a
    consistent one is."""
    noisy = np.array([5.0, -4.0, 6.0, -5.0, 4.0, -3.0, 2.0, -4.0, 3.0, -2.0, 1.0, -1.0, 2.0, -2.0, 1.0, -1.5])
    assert noisy.mean() > 0 and not significant(noisy, 2.0)
    consistent = np.full(16, 0.5) + np.linspace(-0.1, 0.1, 16)
    assert significant(consistent, 2.0)
    assert not significant(-consistent, 2.0)


def test_ultra_with_resets_verify_and_two_rounds_through_the_local_model(
    cartpole_agent_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "ultra"
    code = main(["refine", "CartPole-v1", "--agent", str(cartpole_agent_path), "--method", "ultra-ra",
                 "--reset-prob", "0.5", "--verify", "--rounds", "2", "--timesteps", "4096", "--episodes", "2",
                 "--eval-episodes", "2", "--run-dir", str(run_dir)])
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads((run_dir / "refine_summary.json").read_text())
    assert summary["rounds"] == 2 and summary["timesteps"] == 4096
    verify = json.loads((run_dir / "verify.json").read_text())
    assert verify["checked"] == verify["kept"] + verify["dropped"] > 0
    kept = [json.loads(line) for line in (run_dir / "explanations.jsonl").read_text().splitlines()]
    assert len(kept) == verify["kept"] and all("[verified: +" in s["rationale"] for s in kept)
    assert (run_dir / "rounds" / "1" / "explanations.jsonl").exists()
    with open(run_dir / "episodes.csv") as f:
        steps = [int(r["timestep"]) for r in csv.DictReader(f)]
    assert steps == sorted(steps) and steps[-1] > 2048  # round 2's episodes continue the curve


def test_rnd_state_survives_a_checkpoint(cartpole_agent_path: Path, tmp_path: Path) -> None:
    from ultrarl.refine.checkpoint import latest_checkpoint
    from ultrarl.refine.refiner import Refiner

    env = make_env("CartPole-v1")
    obs, _ = env.reset(seed=0)
    pool = [take_snapshot(env, obs)]
    options = dict(method="rice", initial_states=pool, reset_prob=0.25, rnd_weight=0.01, seed=0)
    refiner = Refiner(cartpole_agent_path, "CartPole-v1", **options)
    refiner.refine(4096, checkpoint_dir=tmp_path, checkpoint_every=2048)
    checkpoint = latest_checkpoint(tmp_path)
    assert checkpoint is not None and "rnd" in checkpoint.state
    resumed = Refiner(cartpole_agent_path, "CartPole-v1", **options).resume_from(checkpoint)
    probe = np.random.default_rng(1).normal(size=(8, 4))
    assert isinstance(resumed.env, RNDBonus)
    saved = RNDBonus(make_vec_env("CartPole-v1"), 0.01)
    saved.load_state(checkpoint.state["rnd"])
    np.testing.assert_allclose(resumed.env.novelty(probe), saved.novelty(probe))
    fresh = RNDBonus(make_vec_env("CartPole-v1"), 0.01, seed=0)
    assert not np.allclose(fresh.novelty(probe), resumed.env.novelty(probe))  # the trained predictor came back
