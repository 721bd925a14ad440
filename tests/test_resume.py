"""A refinement killed with SIGKILL resumes from its latest checkpoint: the total number of steps
is the requested budget and finished work (explain stage, LLM calls, trained steps) is not redone."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from stable_baselines3 import PPO

from ultrarl.refine.checkpoint import latest_checkpoint, write_checkpoint

TOTAL = 6 * 2048  # a multiple of PPO's rollout (n_steps 2048), so the budget is met exactly


def _refine_cmd(agent: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "ultrarl", "refine", "CartPole-v1", "--agent", str(agent), "--method", "ultra-ra",
        "--timesteps", str(TOTAL), "--checkpoint-every", "2048", "--episodes", "1", "--eval-episodes", "2",
        "--run-dir", str(run_dir), *extra,
    ]


def test_sigkill_then_resume_meets_the_budget_without_redoing_work(cartpole_agent_path: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "ULTRARL_CACHE_DIR": str(tmp_path / "cache")}
    process = subprocess.Popen(_refine_cmd(cartpole_agent_path, run_dir), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 400
    checkpoint = None
    while time.monotonic() < deadline and process.poll() is None:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is not None and checkpoint.timesteps >= 2 * 2048:
            break
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()}"
    kill_time = time.perf_counter()
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and TOTAL > checkpoint.timesteps >= 4096
    assert not (run_dir / "config.yaml").exists()
    explain_files = {name: (run_dir / name).stat().st_mtime_ns for name in ("trajectories.npz", "guidance.npz")}

    # Without --resume the unfinished run is not silently replaced.
    refused = subprocess.run(_refine_cmd(cartpole_agent_path, run_dir), env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "unfinished run; pass --resume" in refused.stderr

    resumed = subprocess.run(_refine_cmd(cartpole_agent_path, run_dir, "--resume"), env=env,
                             capture_output=True, text=True, timeout=400)
    resume_wall = time.perf_counter() - kill_time
    assert resumed.returncode == 0, resumed.stderr
    assert "identification read from" in resumed.stdout
    summary = json.loads((run_dir / "refine_summary.json").read_text())
    assert summary["resumed_from"] == checkpoint.timesteps
    assert summary["final_num_timesteps"] == TOTAL == PPO.load(run_dir / "model.zip").num_timesteps
    # The explain stage was not redone: same files, no LLM call in the resumed process.
    assert {n: (run_dir / n).stat().st_mtime_ns for n in explain_files} == explain_files
    assert json.loads((run_dir / "llm_usage.json").read_text())["calls"] >= 1  # the first process's calls
    # progress.csv holds every rollout exactly once, across the kill.
    with open(run_dir / "progress.csv") as f:
        steps = [int(float(r["time/total_timesteps"])) for r in csv.DictReader(f) if r["time/total_timesteps"]]
    assert steps == sorted(set(steps)) and steps[-1] == TOTAL
    # The learning curve continues: the episodes before the kill are kept, timesteps increase.
    with open(run_dir / "episodes.csv") as f:
        curve = [int(r["timestep"]) for r in csv.DictReader(f)]
    assert curve == sorted(curve) and curve[0] <= checkpoint.timesteps < curve[-1]
    assert (run_dir / "config.yaml").exists() and not (run_dir / "checkpoints").exists()
    print(f"resume: killed at >= {checkpoint.timesteps} steps; resumed run took {resume_wall:.1f} s")

    finished = subprocess.run(_refine_cmd(cartpole_agent_path, run_dir, "--resume"), env=env,
                              capture_output=True, text=True)
    assert finished.returncode == 2 and "has finished; there is nothing to resume" in finished.stderr


def test_a_crash_during_a_checkpoint_save_keeps_the_previous_one(cartpole_agent_path: Path, tmp_path: Path) -> None:
    model = PPO.load(cartpole_agent_path)
    model.num_timesteps = 2048
    write_checkpoint(tmp_path, model, {"episodes": []})

    class DiskFull(OSError):
        pass

    def broken_save(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise DiskFull(28, "No space left on device")

    model.num_timesteps = 4096
    model.save = broken_save  # type: ignore[method-assign]
    with pytest.raises(DiskFull):
        write_checkpoint(tmp_path, model, {"episodes": []})
    checkpoint = latest_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.timesteps == 2048
    assert PPO.load(checkpoint.model_path).num_timesteps == 2048
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


@pytest.fixture(scope="module")
def hopper_agents(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A barely trained Hopper agent (episodes of tens of steps: a checkpoint falls mid-episode)
    and a second one as the oracle's expert."""
    from ultrarl.pipeline import pretrain
    from ultrarl.settings import PretrainSettings

    root = tmp_path_factory.mktemp("hopper")
    paths = root / "agent.zip", root / "expert.zip"
    for seed, path in enumerate(paths):
        pretrain(PretrainSettings(env_id="Hopper-v5", timesteps=2048, seed=seed, out=str(path)), progress_bar=False)
    return paths


def _hopper_cmd(agent: Path, expert: Path, method: str, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ultrarl", "refine", "Hopper-v5", "--agent", str(agent), "--method", method,
            "--expert", str(expert), "--timesteps", str(3 * 2048), "--checkpoint-every", "2048", "--episodes", "2",
            "--eval-episodes", "3", "--mask-timesteps", "2048", "--seed", "3", "--eval-every", "2048",
            "--run-dir", str(run_dir), *extra]


# oracle: live advisor, guided segments, supervised term; rice: resets + RND (the reset stream and
# the RND predictor each round-trip in test_baselines.py by default; the whole run behind the slow
# marker, for the default run's time)
@pytest.mark.parametrize("method", [pytest.param("rice", marks=pytest.mark.slow), "oracle"])
def test_sigkill_and_resume_ends_with_the_uninterrupted_runs_weights(
    hopper_agents: tuple[Path, Path], tmp_path: Path, method: str
) -> None:
    agent, expert = hopper_agents
    env = {**os.environ, "ULTRARL_CACHE_DIR": str(tmp_path / "cache")}
    straight = subprocess.run(_hopper_cmd(agent, expert, method, tmp_path / "straight"), env=env,
                              capture_output=True, text=True, timeout=400)
    assert straight.returncode == 0, straight.stderr

    run_dir = tmp_path / "killed"
    process = subprocess.Popen(_hopper_cmd(agent, expert, method, run_dir), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and process.poll() is None and latest_checkpoint(run_dir) is None:
        time.sleep(0.02)
    assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()}"
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and 2048 <= checkpoint.timesteps < 3 * 2048
    resumed = subprocess.run(_hopper_cmd(agent, expert, method, run_dir, "--resume"), env=env,
                             capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr

    summary = json.loads((run_dir / "refine_summary.json").read_text())
    assert summary["resumed_from"] == checkpoint.timesteps and summary["exact_resume"] is True
    expected = PPO.load(tmp_path / "straight" / "model.zip").policy.state_dict()
    got = PPO.load(run_dir / "model.zip").policy.state_dict()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), f"{method}: parameter {name} differs after the resume"
    assert (run_dir / "eval.json").read_text() == (tmp_path / "straight" / "eval.json").read_text()
    with open(run_dir / "episodes.csv") as f, open(tmp_path / "straight" / "episodes.csv") as g:
        assert f.read() == g.read()  # the learning curve too: the episode in progress at the kill included
    # The evaluations during refinement too: those before the kill come from the checkpoint.
    evaluations = (run_dir / "evaluations.csv").read_text()
    assert evaluations == (tmp_path / "straight" / "evaluations.csv").read_text()
    with open(run_dir / "evaluations.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["timestep"]) for r in rows] == [2048, 4096, 6144]
    final = json.loads((run_dir / "eval.json").read_text())["after"]
    assert float(rows[-1]["mean_return"]) == pytest.approx(final["mean"])  # the last one is the final evaluation

    # Evaluating during refinement changes nothing in training: without it, the same weights.
    command = _hopper_cmd(agent, expert, method, tmp_path / "plain")
    flag = command.index("--eval-every")
    plain = subprocess.run(command[:flag] + command[flag + 2:], env=env, capture_output=True, text=True, timeout=400)
    assert plain.returncode == 0, plain.stderr
    assert not (tmp_path / "plain" / "evaluations.csv").exists()
    unevaluated = PPO.load(tmp_path / "plain" / "model.zip").policy.state_dict()
    for name, tensor in expected.items():
        assert torch.equal(tensor, unevaluated[name]), f"{method}: evaluations changed parameter {name}"
    assert (tmp_path / "plain" / "eval.json").read_text() == (tmp_path / "straight" / "eval.json").read_text()
