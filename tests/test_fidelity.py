"""``ultrarl fidelity``: the counterfactual measurements on states whose answer is known, and the
command end to end (every kind of advisor, the embedded LLM included), cached and resumed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import PPO

from ultrarl import run_dir as files
from ultrarl.cli import main
from ultrarl.envs.factory import make_env
from ultrarl.envs.snapshot import Snapshot
from ultrarl.explain.fidelity import advisor_arm, fixed_arm, paired_gains, random_arm, significant
from ultrarl.pipeline import pretrain
from ultrarl.settings import PretrainSettings

LEFT, RIGHT = 0, 1


def _cartpole(angle: float, angular_velocity: float) -> Snapshot:
    state = np.array([0.0, 0.0, angle, angular_velocity])
    return Snapshot("classic", {"state": state, "steps_beyond_terminated": None}, state.astype(np.float32), 0)


def test_paired_rollouts_rate_the_corrective_push_and_the_perturbation(cartpole_agent_path: Path) -> None:
    """A pole falling right: pushing left ends the episode sooner than pushing right (the correction).
    Random actions hurt there, not at an upright, still pole. Equal arms differ by exactly 0
    (common random numbers)."""
    env, agent = make_env("CartPole-v1"), PPO.load(cartpole_agent_path, device="cpu")
    falling, upright = _cartpole(0.12, 0.5), _cartpole(0.0, 0.0)
    gains = paired_gains(env, agent, falling, fixed_arm(RIGHT), fixed_arm(LEFT), 8, 50, seed=0)
    assert significant(gains, 2.0) and not significant(-gains, 2.0)
    same = paired_gains(env, agent, falling, fixed_arm(RIGHT, LEFT), fixed_arm(RIGHT, LEFT), 8, 50, seed=0)
    assert np.all(same == 0.0)
    drop_falling = paired_gains(env, agent, falling, fixed_arm(RIGHT), random_arm(env.action_space, 5), 16, 50, 0)
    drop_upright = paired_gains(env, agent, upright, fixed_arm(RIGHT), random_arm(env.action_space, 5), 16, 50, 0)
    assert drop_falling.mean() > drop_upright.mean() + 1.0
    env.close()


def test_a_followed_advisor_is_asked_at_every_state_it_reaches(cartpole_agent_path: Path) -> None:
    """Advice followed for A steps: a live advisor sees the states its own actions lead to. A
    balancing controller held for 40 steps from a falling pole beats one corrective push, which
    beats the agent's own push the wrong way."""
    env, agent = make_env("CartPole-v1"), PPO.load(cartpole_agent_path, device="cpu")
    falling = _cartpole(0.12, 0.5)
    seen: list[np.ndarray] = []

    def balance(obs: np.ndarray) -> np.ndarray:  # push towards the side the pole falls to
        seen.append(np.array(obs[0], copy=True))
        return (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)

    held = paired_gains(env, agent, falling, advisor_arm(balance, 40), fixed_arm(LEFT), 4, 60, seed=0)
    single = paired_gains(env, agent, falling, fixed_arm(RIGHT), fixed_arm(LEFT), 4, 60, seed=0)
    assert len(seen) == 4 * 40 and len({tuple(o) for o in seen}) == 40  # a new state at each step (the pairs agree)
    assert held.mean() > single.mean() > 0
    env.close()


@pytest.fixture(scope="module")
def cartpole_expert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("expert") / "expert.zip"
    pretrain(PretrainSettings(env_id="CartPole-v1", timesteps=4096, seed=1, out=str(path)), progress_bar=False)
    return path


def _fidelity(agent: Path, expert: Path, run_dir: Path, *extra: str) -> int:
    cache = run_dir.parent / "llm-cache"  # this test's own: the first run really asks the model
    return main(["fidelity", "CartPole-v1", "--agent", str(agent), "--expert", str(expert),
                 "--advisors", "ultra-ra,random,rice,oracle", "--episodes", "3", "--critical-steps", "2",
                 "--mask-timesteps", "512", "--fidelity-samples", "4", "--fidelity-horizon", "20",
                 "--token-budget", "700", "--llm", "local", "--cache-dir", str(cache), "--run-dir", str(run_dir), *extra])


def test_fidelity_of_four_advisors_cached_and_resumed(cartpole_agent_path: Path, cartpole_expert: Path,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The embedded LLM, random steps, the mask network and the expert on the same episodes; a
    re-run asks the LLM nothing and writes the same table; a killed run resumes advisor by advisor."""
    assert _fidelity(cartpole_agent_path, cartpole_expert, tmp_path / "a") == 0
    table = json.loads((tmp_path / "a" / files.FIDELITY).read_text())
    assert list(table) == ["ultra-ra", "random", "rice", "oracle"]
    for advisor in ("random", "rice"):
        assert table[advisor]["states"] == 6 and "criticality" in table[advisor]
    assert table["oracle"]["states"] >= 1  # where the expert's action differs from the agent's
    assert "advice_gain" in table["oracle"] and "advice_gain" not in table["random"]
    assert all("random_gain" in table[a] for a in table)  # the control of the advice, at every advisor's states
    assert "gain_over_random" in table["oracle"] and "gain_over_random" not in table["rice"]
    rows = [json.loads(line) for line in (tmp_path / "a" / "oracle" / files.FIDELITY_STATES).read_text().splitlines()]
    assert len(rows) == table["oracle"]["states"] and all({"rationale", "suggested_action", "fidelity"} <= set(row) for row in rows)
    assert all(row["fidelity"]["helps"] in (True, False) for row in rows)
    assert "| ultra-ra |" in (tmp_path / "a" / files.FIDELITY_MD).read_text()

    assert json.loads((tmp_path / "a" / "ultra-ra" / files.LLM_USAGE).read_text())["calls"] > 0
    assert _fidelity(cartpole_agent_path, cartpole_expert, tmp_path / "b") == 0
    assert json.loads((tmp_path / "b" / "ultra-ra" / files.LLM_USAGE).read_text())["calls"] == 0
    assert _without_timings(tmp_path / "b") == _without_timings(tmp_path / "a")

    # Killed after three advisors: the fourth is measured again, the others read back.
    (tmp_path / "b" / files.CONFIG).unlink()
    shutil.rmtree(tmp_path / "b" / "oracle")
    (tmp_path / "b" / "rice" / files.MASK_NETWORK).unlink()  # a finished advisor is not redone
    capsys.readouterr()
    assert _fidelity(cartpole_agent_path, cartpole_expert, tmp_path / "b", "--resume") == 0
    out = capsys.readouterr().out
    assert "rice: measured before" in out and "oracle: identifying" in out
    assert not (tmp_path / "b" / "rice" / files.MASK_NETWORK).exists()
    assert _without_timings(tmp_path / "b") == _without_timings(tmp_path / "a")


def _without_timings(run_dir: Path) -> dict[str, dict[str, object]]:
    table = json.loads((run_dir / files.FIDELITY).read_text())
    return {advisor: {k: v for k, v in row.items() if not k.endswith("wall_time_s")} for advisor, row in table.items()}


@pytest.mark.parametrize("advisors, message", [("ppo", "identifies no critical state"),
                                               ("random,bogus", "unknown method 'bogus'")])
def test_bad_advisors_are_one_line_errors(cartpole_agent_path: Path, tmp_path: Path, advisors: str, message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["fidelity", "CartPole-v1", "--agent", str(cartpole_agent_path), "--advisors", advisors,
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
