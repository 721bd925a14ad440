"""Stuck or under-trained? ``pretrain --until-plateau`` stops when the evaluated return stops
improving, and ``ultrarl plateau`` measures what continued training still gains."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from ultrarl import run_dir as files
from ultrarl.cli import main
from ultrarl.report.bench_report import Pretraining, admission_checks

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
    assert record["stopped"] == stopped and record["timesteps"] == steps and record["smooth"] == 1
    assert [e["timestep"] for e in record["evaluations"]] == list(range(512, steps + 1, 512))
    assert record["best_return"] == max(e["mean"] for e in record["evaluations"])


def _stop_index(returns: list[float], smooth: int) -> int | None:
    """The 1-based evaluation at which a window-2, zero-margin plateau rule ends training."""
    from types import SimpleNamespace

    from ultrarl.refine.callbacks import PlateauStop

    stop = PlateauStop(window=2, margin=0.0, smooth=smooth)
    for i, mean in enumerate(returns, 1):
        stop.parent = SimpleNamespace(last_mean_reward=mean)  # the EvalCallback that just evaluated
        if not stop._on_step():
            return i
    return None


def test_a_smoothed_plateau_rule_rides_out_a_lucky_evaluation() -> None:
    """A rising run with one lucky evaluation (400): judged one by one, the two after it miss
    its bar and end training; judged as the mean of the last three, the run goes on until the
    trend flattens."""
    rising = [100.0, 200.0, 400.0, 300.0, 350.0, 380.0, 420.0, 440.0, 460.0]
    flat = [455.0, 450.0, 452.0, 449.0]
    assert _stop_index(rising + flat, smooth=1) == 5
    assert _stop_index(rising + flat, smooth=3) == 13  # means 451.7, 455.0 (the bar), 452.3, 450.3
    assert _stop_index(rising, smooth=3) is None


def test_keep_best_writes_the_evaluated_best_checkpoint(tmp_path: Path) -> None:
    """An evaluation at step 2048 j sees the policy after j - 1 updates (PPO updates after each
    2048-step rollout; evaluating takes no draw from the training streams), so the kept agent is
    weight for weight the agent trained for 2048 (j - 1) steps, or the untrained one."""
    import torch
    from stable_baselines3 import PPO

    from ultrarl.envs.factory import make_vec_env

    out = tmp_path / "best.zip"
    assert main(["pretrain", "CartPole-v1", "--timesteps", "6144", "--keep-best", "--plateau-eval-every", "2048",
                 "--plateau-eval-episodes", "3", "--seed", "3", "--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".pretrain.json").read_text())
    means = [e["mean"] for e in record["evaluations"]]
    assert record["stopped"] == "cap" and [e["timestep"] for e in record["evaluations"]] == [2048, 4096, 6144]
    assert record["kept_timestep"] == 2048 * (means.index(max(means)) + 1) and record["best_return"] == max(means)
    updates = record["kept_timestep"] // 2048 - 1
    if updates:
        reference_zip = tmp_path / "reference.zip"
        assert main(["pretrain", "CartPole-v1", "--timesteps", str(2048 * updates), "--seed", "3",
                     "--out", str(reference_zip)]) == 0
        reference = PPO.load(reference_zip, device="cpu")
    else:
        reference = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1, seed=3), seed=3, device="cpu")
    kept = PPO.load(out, device="cpu")
    for name, tensor in kept.policy.state_dict().items():
        assert torch.equal(tensor, reference.policy.state_dict()[name]), name
    final = tmp_path / "final.zip"  # without --keep-best: the last, after 3 updates (the kept has at most 2)
    assert main(["pretrain", "CartPole-v1", "--timesteps", "6144", "--seed", "3", "--out", str(final)]) == 0
    last = PPO.load(final, device="cpu").policy.state_dict()
    assert any(not torch.equal(t, last[n]) for n, t in kept.policy.state_dict().items())


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


def _make_agents(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/agents/make_agents.py``, the script that ships the benchmark's agents."""
    spec = importlib.util.spec_from_file_location("make_agents", AGENTS / "make_agents.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_agents", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_admission_takes_the_first_stuck_candidates_in_seed_order(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A benchmark's agents are the first candidates ``ultrarl plateau`` judges stuck: a candidate
    with no gap to the expert is not admitted, the stuck one after it is, the one after that is
    never made; a re-run reads the records; a changed candidate is checked again; the bench report
    lists every candidate and marks the grid's."""
    make_agents = _make_agents(monkeypatch)
    env_id = "MountainCarContinuous-v0"
    expert = AGENTS / "experts" / f"{env_id}.zip"
    sources = {0: expert, 1: AGENTS / env_id / "seed100.zip", 2: AGENTS / env_id / "seed101.zip"}
    folder = tmp_path / env_id
    folder.mkdir()
    made: list[int] = []

    def make(seed: int) -> Path:
        made.append(seed)
        out = folder / f"seed{seed}.zip"
        shutil.copyfile(sources[seed], out)
        return out

    rule = make_agents.Admission(candidates=3, admit=1, timesteps=2048, check_seeds="100,101", eval_episodes=2)
    assert make_agents.admit(rule, env_id, [0, 1, 2], make, expert) == [1]
    assert made == [0, 1]
    records = {seed: json.loads((folder / f"seed{seed}.plateau.json").read_text()) for seed in (0, 1)}
    assert records[0]["gap"] == 0.0 and records[0]["stuck"] is False  # the expert itself: nothing to close
    assert records[1]["gap"] > 80 and records[1]["stuck"] is True
    assert records[1]["agent_sha256"] == hashlib.sha256((folder / "seed1.zip").read_bytes()).hexdigest()
    assert (folder / records[1]["expert_path"]).resolve() == expert.resolve()  # relative to the agent's folder
    assert "--seeds 100,101 --seed 500 --eval-episodes 2" in records[1]["command"]

    def no_check(*_: object) -> None:
        raise AssertionError("checked again")

    monkeypatch.setattr(make_agents, "check_plateau", no_check)
    assert make_agents.admit(rule, env_id, [0, 1, 2], make, expert) == [1]  # from the records
    for changed in (dataclasses.replace(rule, timesteps=4096), dataclasses.replace(rule, eval_seed=501)):
        with pytest.raises(AssertionError, match="checked again"):  # another check than the record's
            make_agents.admit(changed, env_id, [0, 1, 2], make, expert)

    def lines(grid: list[int]) -> list[str]:
        checks = admission_checks({"envs": [env_id], "agents": {env_id: str(folder)}})
        return Pretraining({}, [], [], checks, {env_id: grid}).lines()

    rows = [line for line in lines([1]) if line.startswith(f"| {env_id} |")]
    assert [row.split(" | ")[1:3] for row in rows] == [["0", ""], ["1", "yes"]]
    assert rows[0].endswith("| not stuck |") and rows[1].endswith("| stuck |")
    assert f"{records[1]['before']:.1f} | {records[1]['expert']:.1f} |" in rows[1]
    assert not any(line.startswith("**Not admitted") for line in lines([1]))
    assert f"**Not admitted by a current check, yet in the grid:** {env_id} seed 0, {env_id} seed 2." in lines([0, 1, 2])
    sources[1] = sources[2]  # another agent under seed 1's name: its record is stale
    shutil.copyfile(sources[1], folder / "seed1.zip")
    assert any(line.endswith("| stuck (for another file) |") for line in lines([1]))
    assert f"**Not admitted by a current check, yet in the grid:** {env_id} seed 1." in lines([1])
    with pytest.raises(AssertionError, match="checked again"):
        make_agents.admit(rule, env_id, [0, 1, 2], make, expert)


STANDARD = yaml.safe_load((AGENTS.parent / "standard.yaml").read_text())


def test_the_report_names_the_shipped_folders_that_hold_no_check(tmp_path: Path) -> None:
    checked, unchecked = tmp_path / "checked", tmp_path / "unchecked"
    for folder in (checked, unchecked):
        folder.mkdir()
        (folder / "seed0.zip").write_bytes(b"agent")
    check = {"stuck": True, "agent_sha256": hashlib.sha256(b"agent").hexdigest(), "before": 1.0, "expert": 9.0,
             "gain": {"point": 0.1, "low": -0.2, "high": 0.4}, "runs": [{}, {}, {}], "stuck_fraction": 0.2, "gap": 8.0}
    (checked / f"seed0{files.ADMISSION_SUFFIX}").write_text(json.dumps(check))
    config = {"envs": ["A-v0", "B-v0", "C-v0"],
              "agents": {"A-v0": str(checked), "B-v0": str(unchecked), "C-v0": str(tmp_path / "gone")}}
    lines = Pretraining({}, [], [], admission_checks(config), {"A-v0": [0], "B-v0": [0], "C-v0": [0]}).lines()
    assert any(line.startswith("| A-v0 | 0 | yes |") and line.endswith("| stuck |") for line in lines)
    assert ("**Not checked at all** (no admission check in their shipped folders; whether their agents are stuck "
            "is not shown): B-v0.") in lines
    assert not any(line.startswith("**Not admitted") for line in lines)
    only_unchecked = {"envs": ["B-v0"], "agents": {"B-v0": str(unchecked)}}
    assert any(line.startswith("**Not checked at all**") for line in
               Pretraining({}, [], [], admission_checks(only_unchecked), {"B-v0": [0]}).lines())
    assert Pretraining({}, [], [], admission_checks({"envs": ["A-v0"]}), {"A-v0": [0]}).lines() == []


@pytest.mark.parametrize("env_id", STANDARD["envs"])  # every task: an unchecked one is not in the grid
def test_the_standard_benchmarks_seeds_are_its_admitted_candidates(env_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each task's seeds in standard.yaml are the first candidates its shipped records judge
    stuck, each record made for the shipped agent and expert, by the check that ADMISSION
    declares, over the benchmark's own budget and number of evaluation episodes."""
    make_agents = _make_agents(monkeypatch)
    task = {**STANDARD, **STANDARD["tasks"].get(env_id, {})}
    rule = make_agents.ADMISSION[env_id]
    assert (rule.timesteps, rule.eval_episodes) == (task["refine_timesteps"], task["eval_episodes"])
    monkeypatch.setattr(make_agents, "check_plateau", lambda *_: pytest.fail("a record does not hold"))
    repo = AGENTS.parents[1]
    admitted = make_agents.admit(rule, env_id, list(range(rule.candidates)),
                                 lambda seed: repo / STANDARD["agents"][env_id] / f"seed{seed}.zip",
                                 repo / STANDARD["experts"][env_id])
    assert task["seeds"] == admitted and len(admitted) == rule.admit
