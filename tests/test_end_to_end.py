"""Through the real embedded model (llama.cpp + SmolLM2 from PyPI), on tiny budgets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from stable_baselines3 import PPO

from ultrarl.settings import RefineSettings
from ultrarl.explain.explainer import read_explanations
from ultrarl.guidance.table import GuidanceTable
from ultrarl.pipeline import refine_agent


def _cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "ultrarl", *args], capture_output=True, text=True, timeout=600,
        env={**os.environ, "ULTRARL_CACHE_DIR": str(cache)},
    )


def test_explain_then_refine_through_the_local_model(tmp_path: Path, cartpole_agent_path: Path) -> None:
    cache = tmp_path / "cache"
    common = ["--agent", str(cartpole_agent_path), "--episodes", "2", "--seed", "3", "--token-budget", "700",
              "--eval-episodes", "2"]
    first = _cli("explain", "CartPole-v1", *common, "--run-dir", str(tmp_path / "e1"), cache=cache)
    assert first.returncode == 0, first.stderr
    usage = json.loads((tmp_path / "e1" / "llm_usage.json").read_text())
    assert usage["calls"] >= 2 and usage["cache_hits"] == 0 and usage["prompt_tokens"] > 0
    for name in ("config.yaml", "explanations.jsonl", "guidance.npz", "eval.json", "llm_usage.json",
                 "explain_progress.csv", "trajectories.npz", "report.md", "manifest.json"):
        assert (tmp_path / "e1" / name).is_file(), name
    states = read_explanations(tmp_path / "e1" / "explanations.jsonl")
    for state in states:  # whatever the model said, what reached the file is valid
        assert state.suggested_action in (0, 1) and -1 <= state.implicit_reward <= 1
    table = GuidanceTable.load(tmp_path / "e1" / "guidance.npz")
    # De-duplication keeps the first of entries within the radius: a subset, none lost unmatched.
    assert 0 < len(table) <= len(states)
    assert {tuple(src) for src in table.sources} <= {(s.episode, s.step) for s in states}

    # The same explain again: answered from the cache, identical explanations.
    second = _cli("explain", "CartPole-v1", *common, "--run-dir", str(tmp_path / "e2"), cache=cache)
    assert second.returncode == 0, second.stderr
    usage2 = json.loads((tmp_path / "e2" / "llm_usage.json").read_text())
    assert usage2["calls"] == 0 and usage2["cache_hits"] == usage["calls"] - usage["reasks"] - usage["failed_episodes"]
    assert (tmp_path / "e1" / "explanations.jsonl").read_text() == (tmp_path / "e2" / "explanations.jsonl").read_text()

    refine = _cli("refine", "CartPole-v1", *common, "--method", "ultra-ra", "--timesteps", "512",
                  "--run-dir", str(tmp_path / "r"), cache=cache)
    assert refine.returncode == 0, refine.stderr
    run = tmp_path / "r"
    evaluation = json.loads((run / "eval.json").read_text())
    assert set(evaluation["before"]) >= {"mean", "std", "episodes"} and evaluation["after"]["episodes"] == 2
    assert PPO.load(run / "model.zip").num_timesteps >= 512
    progress = (run / "progress.csv").read_text().splitlines()
    assert "refine/match_rate" in progress[0] and "charts/episodic_return" in progress[0]
    assert yaml.safe_load((run / "config.yaml").read_text())["method"] == "ultra-ra"
    assert json.loads((run / "llm_usage.json").read_text())["calls"] == 0  # all from the cache


def test_refiner_api_save_load(tmp_path: Path, pendulum_agent_path: Path) -> None:
    settings = RefineSettings(env_id="Pendulum-v1", agent=str(pendulum_agent_path), episodes=1, timesteps=256,
                              token_budget=600, eval_episodes=1, llm={"cache_dir": str(tmp_path / "cache")})
    outcome = refine_agent(settings, tmp_path, progress_bar=False)
    from ultrarl.refine import Refiner

    outcome.refiner.save(tmp_path / "again.zip")
    loaded = Refiner.load(tmp_path / "again.zip", "Pendulum-v1")
    obs = np.zeros(3, dtype=np.float32)
    np.testing.assert_allclose(
        loaded.model.predict(obs, deterministic=True)[0], outcome.refiner.model.predict(obs, deterministic=True)[0]
    )


@pytest.mark.slow
def test_demo_runs_within_budget(tmp_path: Path) -> None:
    result = _cli("demo", "--run-dir", str(tmp_path / "demo"), cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["wall_time_s"] < 360
    rows = ("before", "after_ppo", "after_ultra_ra", "after_oracle_offline", "after_oracle")
    assert all(summary[key]["episodes"] == 20 for key in rows)
    # The story the demo tells: the agent is stuck, good advice moves it through ULTRA's own channel,
    # and the embedded model's poor advice does not leave it worse.
    assert summary["before"]["mean"] < 1.0 and summary["after_oracle"]["mean"] > 80.0
    assert summary["after_oracle_offline"]["mean"] > 50.0
    assert summary["after_ultra_ra"]["mean"] >= summary["before"]["mean"] - 1.0
