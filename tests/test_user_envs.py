"""A user's own environment, by ``module:EnvId`` and by ``--gym-packages``: every command, the
reset-based methods (snapshots by deep copy or by the get_state/set_state protocol) and the
bench on its process pool and on Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ultrarl import run_dir as files
from ultrarl.cli import main
from ultrarl.envs.factory import make_env
from ultrarl.envs.snapshot import snapshot_family, supports_snapshots

USER_ENVS = Path(__file__).parent / "user_envs"
TINY = ["--episodes", "2", "--eval-episodes", "2", "--mask-timesteps", "256", "--timesteps", "256",
        "--checkpoint-every", "0"]


@pytest.fixture(autouse=True)
def user_module_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(USER_ENVS))  # as if the user's package were installed


@pytest.fixture(scope="module")
def corridor_agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import sys

    sys.path.insert(0, str(USER_ENVS))
    path = tmp_path_factory.mktemp("corridor") / "agent.zip"
    assert main(["pretrain", "corridor_env:Corridor-v0", "--timesteps", "256", "--out", str(path)]) == 0
    sys.path.remove(str(USER_ENVS))
    return path


def test_module_env_id_through_refine_evaluate_and_fidelity(corridor_agent: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    env_id = "corridor_env:Corridor-v0"
    assert main(["refine", env_id, "--agent", str(corridor_agent), "--method", "rice", *TINY,
                 "--run-dir", str(tmp_path / "rice")]) == 0
    summary = json.loads((tmp_path / "rice" / files.SUMMARY).read_text())
    assert summary["reset_pool"] > 0  # snapshots of critical states to start episodes from
    assert yaml.safe_load((tmp_path / "rice" / files.CONFIG).read_text())["env_id"] == env_id
    capsys.readouterr()
    assert main(["evaluate", env_id, "--agent", str(tmp_path / "rice" / files.MODEL), "--episodes", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 2
    assert main(["fidelity", env_id, "--agent", str(corridor_agent), "--advisors", "random", "--episodes", "2",
                 "--fidelity-samples", "4", "--run-dir", str(tmp_path / "fidelity")]) == 0
    assert json.loads((tmp_path / "fidelity" / files.FIDELITY).read_text())["random"]["states"] == 6


def test_gym_packages_registers_plain_ids(corridor_agent: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "CorridorState-v0", "--agent", str(corridor_agent), "--episodes", "1",
                 "--gym-packages", "corridor_env"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "Corridor-v1", "--agent", str(corridor_agent)]) == 2
    assert "unknown environment id 'Corridor-v1'" in capsys.readouterr().err
    assert main(["evaluate", "Corridor-v0", "--agent", str(corridor_agent), "--gym-packages", "no_such_pkg"]) == 2
    err = capsys.readouterr().err
    assert "cannot import gym package 'no_such_pkg'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("env_id, family, restorable", [("corridor_env:Corridor-v0", "copy", True),
                                                        ("corridor_env:CorridorState-v0", "state_api", True),
                                                        ("corridor_env:CorridorGlobalRng-v0", "copy", False)])
def test_snapshots_of_user_environments(env_id: str, family: str, restorable: bool) -> None:
    env = make_env(env_id, seed=0)
    assert snapshot_family(env) == family
    env.close()
    assert supports_snapshots(env_id) is restorable


def test_unrestorable_env_is_a_clear_error_for_reset_methods(corridor_agent: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["refine", "corridor_env:CorridorGlobalRng-v0", "--agent", str(corridor_agent), "--method", "rice",
                 *TINY, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "get_state() and set_state(state)" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("backend", [["--workers", "2"], ["--backend", "ray"]], ids=["process-pool", "ray"])
def test_bench_runs_a_user_environment(tmp_path: Path, backend: list[str]) -> None:
    if "ray" in backend:
        pytest.importorskip("ray")
    config = {"name": "user-env", "envs": ["corridor_env:Corridor-v0"], "methods": ["ppo", "rice"], "seeds": [0],
              "pretrain_timesteps": 256, "refine_timesteps": 256, "eval_episodes": 2, "explain_episodes": 2,
              "settings": {"mask_timesteps": 256, "checkpoint_every": 0}}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    assert main(["bench", str(tmp_path / "bench.yaml"), "--out", str(tmp_path / "out"), *backend]) == 0
    rows = (tmp_path / "out" / files.RESULTS).read_text().splitlines()[1:]
    assert len(rows) == 2 and all(",done," in row for row in rows)


def test_a_worker_that_dies_fails_its_jobs_not_the_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pool worker killed mid-job (a crash in native code, the memory killer) fails the jobs it
    had not finished, with one line each; the bench ends with its usual summary, no traceback."""
    config = {"name": "crash", "envs": ["corridor_env:CorridorCrash-v0"], "methods": ["ppo"], "seeds": [0, 1],
              "pretrain_timesteps": 256, "refine_timesteps": 256, "eval_episodes": 2, "explain_episodes": 2}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    assert main(["bench", str(tmp_path / "bench.yaml"), "--out", str(tmp_path / "out"), "--workers", "2"]) == 1
    out, err = capsys.readouterr()
    assert out.count("a worker process died abruptly") == 2  # both agents' jobs; the runs then fail on their own
    assert "4 of 4 jobs failed" in err and "Traceback" not in out + err
    assert (tmp_path / "out" / files.RESULTS).exists()  # the report was still written


@pytest.mark.parametrize("method", [m for m in ("ppo", "ultra-a", "ultra-r", "ultra-ra", "statemask-r", "random",
                                                "oracle")])
def test_every_method_refines_on_a_user_environment(corridor_agent: Path, tmp_path: Path, method: str) -> None:
    """By --gym-packages and a plain id (rice runs by module:EnvId above); the LLM methods ask
    the embedded model through the generic describer; the oracle's expert is the agent itself."""
    run_dir = tmp_path / method
    assert main(["refine", "CorridorState-v0", "--gym-packages", "corridor_env", "--agent", str(corridor_agent),
                 "--method", method, "--expert", str(corridor_agent), *TINY, "--token-budget", "600",
                 "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / files.SUMMARY).read_text())
    assert summary["final_num_timesteps"] >= 256 and summary["method"] == method
    assert yaml.safe_load((run_dir / files.CONFIG).read_text())["gym_packages"] == "corridor_env"


def test_explain_on_a_user_environment(corridor_agent: Path, tmp_path: Path) -> None:
    assert main(["explain", "corridor_env:Corridor-v0", "--agent", str(corridor_agent), "--episodes", "1",
                 "--eval-episodes", "1", "--token-budget", "600", "--run-dir", str(tmp_path / "explain")]) == 0
    assert (tmp_path / "explain" / files.EXPLANATIONS).exists() and (tmp_path / "explain" / files.REPORT_HTML).exists()
