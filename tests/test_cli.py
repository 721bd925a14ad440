"""Bad input gets one line on stderr and exit code 2; good input works through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ultrarl.cli import main


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own errors
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _bad_inputs(tmp: Path, cartpole: Path) -> list[tuple[list[str], str]]:
    empty = tmp / "empty.zip"
    empty.write_bytes(b"")
    not_zip = tmp / "text.zip"
    not_zip.write_text("hello")
    truncated = tmp / "truncated.zip"
    truncated.write_bytes(cartpole.read_bytes()[:300])
    import zipfile

    foreign = tmp / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("readme.txt", "not a model")
    (tmp / "bad.yaml").write_text("unknown_key: 3\n")
    (tmp / "broken.yaml").write_text("episodes: [1, 2\n")
    (tmp / "negative.yaml").write_text("episodes: -1\n")
    (tmp / "names.yaml").write_text("feature_names: [a, b]\n")
    finished = tmp / "finished"
    finished.mkdir()
    (finished / "config.yaml").write_text("env_id: x\n")
    unfinished = tmp / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.started.yaml").write_text("env_id: x\n")
    # A full disk, for real: the temporary file of the save is a link to /dev/full (ENOSPC).
    (tmp / "full").mkdir()
    (tmp / "full" / "agent.zip.tmp").symlink_to("/dev/full")
    run = ["--run-dir", str(tmp / "run")]
    agent = ["--agent", str(cartpole)]
    return [
        (["evaluate", "NoSuchEnv-v0", "--agent", str(cartpole)], "unknown environment id"),
        (["evaluate", "CartPole-v2", "--agent", str(cartpole)], "Did you mean"),
        (["evaluate", "CartPole-v1", "--agent", str(tmp / "missing.zip")], "does not exist"),
        (["evaluate", "CartPole-v1", "--agent", str(empty)], "is empty"),
        (["evaluate", "CartPole-v1", "--agent", str(not_zip)], "not an SB3 model zip"),
        (["evaluate", "CartPole-v1", "--agent", str(truncated)], "not an SB3 model zip"),
        (["evaluate", "CartPole-v1", "--agent", str(foreign)], "cannot load agent"),
        (["evaluate", "Acrobot-v1", "--agent", str(cartpole)], "does not match"),
        (["evaluate", "CartPole-v1", "--agent", str(cartpole), "--episodes", "0"], "invalid setting eval_episodes"),
        (["refine", "CartPole-v1", "--agent", str(cartpole), "--method", "magic", *run], "unknown method"),
        (["refine", "CartPole-v1", "--agent", str(cartpole), "--timesteps", "-5", *run], "timesteps"),
        (["explain", "CartPole-v1", "--agent", str(cartpole), "--llm", "gpt9", *run], "invalid --llm"),
        (["explain", "CartPole-v1", "--agent", str(cartpole), "--config", str(tmp / "bad.yaml"), *run], "unknown_key"),
        (["explain", "CartPole-v1", "--agent", str(cartpole), "--config", str(tmp / "broken.yaml"), *run], "cannot read config"),
        (["pretrain", "CartPole-v1", "--timesteps", "0", "--out", str(tmp / "a.zip")], "invalid setting timesteps"),
        (["pretrain", "CartPole-v1", "--timesteps", "x", "--out", str(tmp / "a.zip")], "invalid int value"),
        (["teleport"], "invalid choice"),
        (["explain", "CartPole-v1", *agent, "--episodes", "0", *run], "invalid setting episodes"),
        (["explain", "CartPole-v1", *agent, "--token-budget", "10", *run], "invalid setting token_budget"),
        (["refine", "CartPole-v1", *agent, "--checkpoint-every", "-1", *run], "invalid setting checkpoint_every"),
        (["explain", "CartPole-v1", *agent, "--config", str(tmp / "negative.yaml"), *run], "invalid setting episodes"),
        (["explain", "CartPole-v1", *agent, "--config", str(tmp / "names.yaml"), "--dry-run"], "2 feature names given"),
        (["explain", "CartPole-v1", *agent, "--env-context", str(tmp / "nowhere.md"), "--dry-run"], "cannot read env_context"),
        (["explain", "CartPole-v1", *agent, "--llm", "local:gpt9", *run], "unknown local model"),
        (["explain", "CartPole-v1", *agent], "needs --run-dir"),
        (["refine", "CartPole-v1", *agent, "--method", "ppo", "--run-dir", str(finished)], "already holds a run"),
        (["refine", "CartPole-v1", *agent, "--method", "ppo", "--run-dir", str(unfinished)], "pass --resume"),
        (["refine", "CartPole-v1", *agent, "--resume", "--run-dir", str(finished)], "nothing to resume"),
        (["explain", "CartPole-v1", *agent, "--llm", "openai:test", "--llm-base-url", "http://127.0.0.1:9/v1",
          "--episodes", "1", "--eval-episodes", "1", "--no-cache", *run], "cannot reach the LLM server"),
        (["pretrain", "CartPole-v1", "--timesteps", "64", "--out", str(tmp / "full" / "agent.zip")],
         "No space left on device"),
    ]


def test_bad_inputs_give_one_line_and_exit_2(
    tmp_path: Path, cartpole_agent_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = _bad_inputs(tmp_path, cartpole_agent_path)
    assert len(cases) >= 20
    for args, expected in cases:
        code, _, err = _run_cli(args, capsys)
        assert code == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (args, err)
        assert lines[0].startswith("ultrarl: error:") and expected in lines[0], (args, lines[0])
        assert not (tmp_path / "run" / "config.yaml").exists(), "a refused run must not look like a run"
    assert not (tmp_path / "full" / "agent.zip").exists(), "a failed save must leave no zip that looks valid"


def test_unreachable_llm_server_is_one_line(tmp_path: Path, cartpole_agent_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ultrarl", "explain", "CartPole-v1", "--agent", str(cartpole_agent_path),
         "--llm", "openai:test", "--llm-base-url", "http://127.0.0.1:9/v1", "--episodes", "1",
         "--eval-episodes", "1", "--run-dir", str(tmp_path / "run"), "--no-cache"],
        capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OPENAI_API_KEY": "sk-test"},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ultrarl: error: cannot reach the LLM server")
    assert "Traceback" not in result.stderr


def test_evaluate_prints_json(cartpole_agent_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run_cli(["evaluate", "CartPole-v1", "--agent", str(cartpole_agent_path), "--episodes", "3"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["episodes"] == 3 and len(result["returns"]) == 3
    assert result["mean"] > 0 and result["std"] >= 0


def test_run_dir_holding_a_run_is_refused(tmp_path: Path, cartpole_agent_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("env_id: x\n")
    code, _, err = _run_cli(
        ["refine", "CartPole-v1", "--agent", str(cartpole_agent_path), "--method", "ppo", "--run-dir",
         str(tmp_path / "run")], capsys)
    assert code == 2 and "already holds a run" in err


def test_the_final_evaluation_is_the_last_one_made_during_refinement(
    cartpole_agent_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --eval-every, training ends with an evaluation of the final policy on the final
    evaluation's episodes: eval.json's "after" is that one, not a second run of it."""
    import csv

    import ultrarl.pipeline as pipeline
    from stable_baselines3 import PPO

    from ultrarl.evaluate.evaluation import evaluate_agent
    from ultrarl.stages import EVAL_SEED_OFFSET

    calls = []
    real = pipeline.evaluate
    monkeypatch.setattr(pipeline, "evaluate", lambda agent, settings: calls.append(1) or real(agent, settings))
    run_dir = tmp_path / "run"
    code, _, err = _run_cli(["refine", "CartPole-v1", "--agent", str(cartpole_agent_path), "--method", "ppo",
                             "--timesteps", "4096", "--eval-every", "2048", "--eval-episodes", "3", "--seed", "1",
                             "--run-dir", str(run_dir)], capsys)
    assert code == 0, err
    with open(run_dir / "evaluations.csv") as f:
        evaluations = list(csv.DictReader(f))
    assert [int(r["timestep"]) for r in evaluations] == [2048, 4096]
    assert len(calls) == 2  # the two during refinement; the last is the final policy's
    after = json.loads((run_dir / "eval.json").read_text())["after"]
    assert after["mean"] == float(evaluations[-1]["mean_return"]) and len(after["returns"]) == 3
    again = evaluate_agent(PPO.load(run_dir / "model.zip", device="cpu"), "CartPole-v1", 3, 1 + EVAL_SEED_OFFSET)
    assert after["returns"] == again.returns  # what a separate evaluation of the saved model gives


@pytest.mark.parametrize("command", [[], ["pretrain"], ["explain"], ["refine"], ["evaluate"], ["fidelity"],
                                     ["plateau"], ["bench"], ["report"], ["demo"]])
def test_every_help_page_prints(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """argparse %-formats help strings: a literal "95% CI" in one once made ``ultrarl --help`` a traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: ultrarl" in capsys.readouterr().out
