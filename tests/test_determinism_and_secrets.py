"""Determinism (same seed, same machine, cached LLM: identical runs) and secrets (an API key
never reaches a file, the cache or the logs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import PPO
from test_llm_servers import GOOD, FaultServer, answer

from ultrarl.cli import main
from ultrarl.envs.rollout import load_trajectories

TIMESTEPS = 2048


def _refine(agent: Path, run_dir: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["refine", "CartPole-v1", "--agent", str(agent), "--method", "ultra-ra", "--timesteps",
                 str(TIMESTEPS), "--episodes", "1", "--eval-episodes", "5", "--seed", "3", "--llm", "local",
                 "--cache-dir", str(cache), "--run-dir", str(run_dir)])
    out = capsys.readouterr()
    assert code == 0, out.err


def test_same_seed_and_cached_llm_give_identical_runs(
    cartpole_agent_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deterministic, and checked here: the rollouts explained (env seeds, seeded policy sampling),
    the LLM's answers (the first run asks the real local model at temperature 0, the second reads
    the cache), the guidance table, PPO's updates on CPU (same seed, same thread count), the
    refined weights and the evaluation returns. Not deterministic, and not compared: wall times,
    latencies and the LLM usage counts (the second run has cache hits instead of calls)."""
    cache = tmp_path / "cache"
    _refine(cartpole_agent_path, tmp_path / "a", cache, capsys)
    _refine(cartpole_agent_path, tmp_path / "b", cache, capsys)
    a, b = tmp_path / "a", tmp_path / "b"

    usage_b = json.loads((b / "llm_usage.json").read_text())
    assert usage_b["calls"] == 0 and usage_b["cache_hits"] == 1
    for left, right in zip(load_trajectories(a / "trajectories.npz"), load_trajectories(b / "trajectories.npz")):
        np.testing.assert_array_equal(left.observations, right.observations)
        np.testing.assert_array_equal(left.actions, right.actions)
    assert (a / "explanations.jsonl").read_text() == (b / "explanations.jsonl").read_text()
    table_a, table_b = np.load(a / "guidance.npz"), np.load(b / "guidance.npz")
    assert sorted(table_a.files) == sorted(table_b.files)
    for name in table_a.files:
        np.testing.assert_array_equal(table_a[name], table_b[name], err_msg=name)
    params_a = PPO.load(a / "model.zip").policy.state_dict()
    params_b = PPO.load(b / "model.zip").policy.state_dict()
    for name in params_a:
        assert bool((params_a[name] == params_b[name]).all()), name
    eval_a, eval_b = json.loads((a / "eval.json").read_text()), json.loads((b / "eval.json").read_text())
    assert eval_a == eval_b
    curve_a, curve_b = (a / "episodes.csv").read_text(), (b / "episodes.csv").read_text()
    assert curve_a == curve_b
    modulation = [json.loads((d / "refine_summary.json").read_text())["modulation"] for d in (a, b)]
    assert modulation[0] == modulation[1]


FAKE_KEY = "sk-ultrarl-FAKE-9f8e7d6c5b4a39281706"


def _echo_key_then_fail(handler) -> None:  # type: ignore[no-untyped-def]
    """A server error that quotes the key back, as some servers do on auth trouble."""
    data = json.dumps({"error": {"message": f"upstream rejected key {FAKE_KEY}", "type": "server_error"}}).encode()
    handler.send_response(500)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def test_api_key_reaches_no_file_cache_or_log(cartpole_agent_path: Path, tmp_path: Path) -> None:
    server = FaultServer([_echo_key_then_fail], default=answer(json.dumps(GOOD)))
    try:
        env = {**os.environ, "OPENAI_API_KEY": FAKE_KEY, "ULTRARL_CACHE_DIR": str(tmp_path / "cache")}
        logs = []
        for command, run in (("explain", "explain"), ("refine", "refine")):
            extra = ["--method", "ultra-ra", "--timesteps", str(TIMESTEPS)] if command == "refine" else []
            result = subprocess.run(
                [sys.executable, "-m", "ultrarl", command, "CartPole-v1", "--agent", str(cartpole_agent_path),
                 "--llm", "openai:fault-model", "--llm-base-url", server.url, "--episodes", "2",
                 "--eval-episodes", "1", "--run-dir", str(tmp_path / run), *extra],
                env=env, capture_output=True, text=True, timeout=300,
            )
            assert result.returncode == 0, result.stderr
            logs.append(result.stdout + result.stderr)
    finally:
        server.close()
    # The key did reach the server (the test is not vacuous), and the server quoted it back.
    assert server.requests and all(r["auth"] == f"Bearer {FAKE_KEY}" for r in server.requests)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" or "cache" in p.parts for p in files), "the cache was written"
    assert any("events.out.tfevents" in p.name for p in files), "TensorBoard logs were written"
    for path in files:
        assert FAKE_KEY.encode() not in path.read_bytes(), path
        assert b"9f8e7d6c5b4a39281706" not in path.read_bytes(), path  # not even a fragment
    for log in logs:
        assert FAKE_KEY not in log and "9f8e7d6c5b4a39281706" not in log
