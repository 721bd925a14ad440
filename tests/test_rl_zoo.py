"""Agents from RL Zoo run folders: a policy trained on VecNormalize'd observations is rolled out,
evaluated and refined through its statistics, and its refined model keeps them."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ENV = "Pendulum-v1"


# A tiny budget for each algorithm, with normalize: true (RL Zoo's own Pendulum settings otherwise).
ZOO_TRAIN = {"ppo": ["-n", "2048", "--hyperparams", "normalize:True", "n_steps:512"],
             "sac": ["-n", "600", "--hyperparams", "normalize:True", "learning_starts:200"]}


# SAC's run (RL Zoo training, two off-policy refinements) is the longest of the default suite's
# tests: behind the slow marker. PPO's covers the statistics path by default, and
# test_off_policy.py refines SAC agents by every method family.
@pytest.fixture(scope="module", params=["ppo", pytest.param("sac", marks=pytest.mark.slow)])
def zoo_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``rl_zoo3 train`` with ``normalize: true`` on a tiny budget: the folder RL Zoo writes."""
    pytest.importorskip("rl_zoo3")
    algo = request.param
    root = tmp_path_factory.mktemp(f"zoo-{algo}")
    subprocess.run([sys.executable, "-m", "rl_zoo3.train", "--algo", algo, "--env", ENV, "-f", str(root / "logs"),
                    "--seed", "0", "--eval-freq", "-1", *ZOO_TRAIN[algo]], check=True, capture_output=True, timeout=600)
    run = root / "logs" / algo / f"{ENV}_1"
    assert (run / f"{ENV}.zip").is_file() and (run / ENV / "vecnormalize.pkl").is_file()
    return run


def _ultrarl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ultrarl", *args], capture_output=True, text=True, timeout=600)


def _evaluate(agent: Path, seed: int = 7) -> list[float]:
    done = _ultrarl("evaluate", ENV, "--agent", str(agent), "--episodes", "4", "--seed", str(seed))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["returns"]


def test_evaluation_applies_the_folders_normalisation_as_rl_zoo_does(zoo_run: Path, tmp_path: Path) -> None:
    from rl_zoo3.utils import create_test_env, get_saved_hyperparams
    from stable_baselines3.common.evaluation import evaluate_policy

    from ultrarl.refine.refiner import load_agent

    ours = _evaluate(zoo_run)
    # RL Zoo's own evaluation of the same agent (its enjoy script's environment), same seed.
    hyperparams, stats_path = get_saved_hyperparams(str(zoo_run / ENV))
    env = create_test_env(ENV, n_envs=1, stats_path=stats_path, seed=7, should_render=False, hyperparams=hyperparams)
    zoo, _ = evaluate_policy(load_agent(zoo_run / f"{ENV}.zip"), env, n_eval_episodes=4,
                             deterministic=True, return_episode_rewards=True)
    np.testing.assert_allclose(ours, zoo, rtol=1e-5)
    # The same zip without its statistics acts on raw observations: other actions, other returns.
    bare = tmp_path / "bare" / "agent.zip"
    bare.parent.mkdir()
    shutil.copy(zoo_run / f"{ENV}.zip", bare)
    raw = _evaluate(bare)
    assert np.abs(np.asarray(raw) - np.asarray(ours)).max() > 1.0, (raw, ours)


def test_refinement_trains_through_the_statistics_and_saves_them(zoo_run: Path, tmp_path: Path) -> None:
    loaded = pickle.loads((zoo_run / ENV / "vecnormalize.pkl").read_bytes())
    saved = {}
    for name, extra in (("updated", ()), ("frozen", ("--freeze-normalization",))):
        run_dir = tmp_path / name
        done = _ultrarl("refine", ENV, "--agent", str(zoo_run), "--method", "ppo", "--timesteps", "1024",
                        "--eval-episodes", "3", "--seed", "0", "--run-dir", str(run_dir), *extra)
        assert done.returncode == 0, done.stderr
        saved[name] = pickle.loads((run_dir / "vecnormalize.pkl").read_bytes())
        # ultrarl evaluate finds the statistics beside the refined zip: the refine's own evaluation.
        after = json.loads((run_dir / "eval.json").read_text())["after"]
        assert _evaluate(run_dir / "model.zip", seed=after["seed"])[:3] == pytest.approx(after["returns"], rel=1e-6)
    np.testing.assert_array_equal(saved["frozen"].obs_rms.mean, loaded.obs_rms.mean)
    assert saved["frozen"].obs_rms.count == loaded.obs_rms.count
    assert saved["updated"].obs_rms.count == pytest.approx(loaded.obs_rms.count + 1024, abs=2)


def test_a_normalised_folder_without_statistics_is_one_line(zoo_run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "run"
    shutil.copytree(zoo_run, broken)
    (broken / ENV / "vecnormalize.pkl").unlink()
    done = _ultrarl("evaluate", ENV, "--agent", str(broken))
    assert done.returncode == 2 and "says the agent was trained with normalize" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
