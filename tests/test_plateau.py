"""Stuck or under-trained? ``pretrain --until-plateau`` stops when the evaluated return stops
improving, and ``ultrarl plateau`` measures what continued training still gains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ultrarl.cli import main

AGENTS = Path(__file__).resolve().parents[1] / "benchmarks" / "agents"


@pytest.mark.parametrize(("margin", "window", "stopped", "steps"), [(50.0, 2, "plateau", 3 * 512), (0.0, 50, "cap", 2048)])
def test_pretraining_stops_at_a_plateau_and_records_its_curve(tmp_path: Path, margin: float, window: int,
                                                              stopped: str, steps: int) -> None:
    """A margin no evaluation can beat: the first evaluation sets the best, ``window`` more
    without improvement end training. No margin and a long window: the step cap ends it."""
    out = tmp_path / "agent.zip"
    assert main(["pretrain", "CartPole-v1", "--timesteps", "2048", "--until-plateau", "--plateau-eval-every", "512",
                 "--plateau-eval-episodes", "2", "--plateau-window", str(window), "--plateau-margin", str(margin),
                 "--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".pretrain.json").read_text())
    assert record["stopped"] == stopped and record["timesteps"] == steps
    assert [e["timestep"] for e in record["evaluations"]] == list(range(512, steps + 1, 512))
    assert record["best_return"] == max(e["mean"] for e in record["evaluations"])


def test_plateau_check_finds_the_shipped_mountaincar_agent_stuck(tmp_path: Path) -> None:
    run_dir = tmp_path / "plateau"
    assert main(["plateau", "MountainCarContinuous-v0", "--agent", str(AGENTS / "MountainCarContinuous-v0/seed100.zip"),
                 "--expert", str(AGENTS / "experts/MountainCarContinuous-v0.zip"), "--timesteps", "2048",
                 "--seeds", "100,101", "--eval-episodes", "3", "--run-dir", str(run_dir)]) == 0
    result = json.loads((run_dir / "plateau.json").read_text())
    assert [r["seed"] for r in result["runs"]] == [100, 101]
    gains = [r["after"] - result["before"] for r in result["runs"]]
    assert result["gain"]["point"] == pytest.approx(sum(gains) / 2) and [r["gain"] for r in result["runs"]] == gains
    assert abs(result["gain"]["high"]) < 1.0  # it stands still however it is trained
    assert result["gap"] > 80 and result["stuck"] is True  # it stands still; the expert reaches the flag


def test_plateau_needs_two_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plateau", "CartPole-v1", "--agent", "a.zip", "--seeds", "3", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--seeds needs at least 2 seeds" in err and len(err.strip().splitlines()) == 1
