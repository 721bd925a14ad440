"""``ultrarl bench``: a grid on a local process pool and on Ray, resumable, failures reported and
isolated, and a report with rliable estimates and plots rebuilt from disk."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ultrarl.cli import main
from ultrarl.report.bench_report import RunRow, paired_differences

TINY = {
    "name": "tiny",
    "envs": ["CartPole-v1"],
    "methods": ["none", "ppo", "random",
                # valid settings that fail at run time: the API key's variable is not set
                {"name": "broken", "method": "ultra-ra",
                 "settings": {"llm": {"model": "openai:none", "api_key_env": "ULTRARL_UNSET_KEY"}}}],
    "seeds": [0, 1],
    "pretrain_timesteps": 1024,
    "refine_timesteps": 2048,
    "eval_episodes": 2,
    "explain_episodes": 2,
}


def _bench(tmp_path: Path, config: dict, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["bench", str(path), "--out", str(tmp_path / "out"), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_local_grid_is_resumable_isolates_failures_and_reports(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = _bench(tmp_path, TINY, capsys, "--workers", "2")
    assert code == 1 and "2 of 10 jobs failed" in err  # 2 agents + 8 runs; the broken method fails
    assert "broken seed 0: failed" in out and "ULTRARL_UNSET_KEY" in out
    bench = tmp_path / "out"
    assert len(list((bench / "agents" / "CartPole-v1").glob("*.zip"))) == 2  # one agent per seed, shared
    with open(bench / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and sum(r["status"] == "done" for r in rows) == 6
    # The same agent, evaluated the same way: "none" reports the before of every method's run.
    for seed in (0, 1):
        none = json.loads((bench / "runs/CartPole-v1/none" / f"seed{seed}" / "eval.json").read_text())
        ppo = json.loads((bench / "runs/CartPole-v1/ppo" / f"seed{seed}" / "eval.json").read_text())
        assert none["after"]["returns"] == ppo["before"]["returns"]
    estimates = json.loads((bench / "estimates.json").read_text())
    for method in ("none", "ppo", "random"):
        e = estimates["per_env"]["CartPole-v1"][method]
        assert e["low"] <= e["point"] <= e["high"]
    assert set(estimates["prob_improvement_over_ppo"]) == {"none", "random"}
    report = (bench / "report.md").read_text()
    assert "Interquartile mean" in report and "Probability of improvement" in report and "curve_CartPole-v1.png" in report
    assert "performance_profile.png" in report and (bench / "performance_profile.png").stat().st_size > 0
    assert "Plateau evidence" in report  # ppo's gain over the agent as it is
    page = (bench / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page
    # Again: finished runs are found on disk and skipped, nothing is recomputed.
    stamps = {p: p.stat().st_mtime_ns for p in bench.glob("runs/*/*/*/eval.json")}
    code, out, _ = _bench(tmp_path, TINY, capsys)
    assert code == 1 and out.count(": skipped") == 8
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # The report is rebuilt from disk alone.
    (bench / "report.md").unlink()
    assert main(["report", str(bench)]) == 0 and (bench / "report.md").exists()


def test_grid_on_ray(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("ray")
    config = {**TINY, "methods": ["none", "ppo"], "seeds": [0]}
    code, out, err = _bench(tmp_path, config, capsys, "--backend", "ray")
    assert code == 0, err
    assert out.count(": done") == 3  # 1 agent, 2 runs
    assert json.loads((tmp_path / "out/runs/CartPole-v1/ppo/seed0/eval.json").read_text())["after"]["episodes"] == 2


def test_only_runs_the_named_methods(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = {**TINY, "methods": ["none", "ppo"], "seeds": [0]}
    code, out, err = _bench(tmp_path, config, capsys, "--only", "ppo")
    assert code == 0, err
    assert out.count(": done") == 2 and "ppo seed 0: done" in out  # the agent and the ppo run
    assert not (tmp_path / "out/runs/CartPole-v1/none").exists()
    assert [m["name"] for m in yaml.safe_load((tmp_path / "out/bench.yaml").read_text())["methods"]] == ["none", "ppo"]
    assert "| CartPole-v1 | none | 0 |" in (tmp_path / "out/report.md").read_text()  # the grid, with what exists
    code, _, err = _bench(tmp_path, config, capsys, "--only", "ppo,magic")
    assert code == 2 and "--only names methods the bench config does not have: magic" in err
    assert len(err.strip().splitlines()) == 1


def test_tasks_run_in_parts_report_together(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``--envs`` runs some tasks of a grid; a task with no run directory here (it ran elsewhere)
    keeps its rows from the bench's ``results.csv``, said so in the report; a task that ran here
    reports its runs alone: a run's own eval.json wins over a row, a deleted run is missing."""
    config = {**TINY, "envs": ["CartPole-v1", "Acrobot-v1"], "methods": ["none", "ppo"], "seeds": [0],
              "tasks": {"Acrobot-v1": {"seeds": [3]}}}
    code, out, err = _bench(tmp_path, config, capsys, "--envs", "CartPole-v1", "--only", "ppo")
    assert code == 0, err
    assert out.count(": done") == 2 and "Acrobot" not in out  # CartPole's agent and its ppo run
    code, out, err = _bench(tmp_path, config, capsys, "--envs", "CartPole-v1")
    assert code == 0, err
    assert out.count(": skipped") == 2 and out.count(": done") == 1  # the none run
    bench = tmp_path / "out"
    first = _results(bench)
    assert first[("Acrobot-v1", "ppo")]["status"] == "missing" and first[("CartPole-v1", "ppo")]["status"] == "done"
    # CartPole's runs move away (it ran on another machine); Acrobot runs here.
    shutil.rmtree(bench / "runs" / "CartPole-v1")
    code, out, err = _bench(tmp_path, config, capsys, "--envs", "Acrobot-v1")
    assert code == 0, err
    assert "CartPole" not in out
    merged = _results(bench)
    assert merged[("CartPole-v1", "ppo")] == first[("CartPole-v1", "ppo")]  # the recorded row, as it was
    assert merged[("Acrobot-v1", "ppo")]["status"] == "done" and merged[("Acrobot-v1", "ppo")]["seed"] == "3"
    report = (bench / "report.md").read_text()
    assert "2 of 4 runs are reported from `results.csv` without their run directories (tasks: CartPole-v1" in report
    assert "| CartPole-v1 | ppo | 1 |" in report and "| Acrobot-v1 | ppo | 1 |" in report
    assert "curve_Acrobot-v1.png" in report and "curve_CartPole-v1.png" not in report  # no runs here to draw
    # Where a task ran here, its runs are the truth: an edited row does not survive, a deleted run is missing.
    results_csv = bench / "results.csv"
    after = json.loads((bench / "runs/Acrobot-v1/ppo/seed3/eval.json").read_text())["after"]["mean"]
    results_csv.write_text(results_csv.read_text().replace(merged[("Acrobot-v1", "ppo")]["after"], "12345.0"))
    shutil.rmtree(bench / "runs/Acrobot-v1/none")
    assert main(["report", str(bench)]) == 0
    rebuilt = _results(bench)
    assert float(rebuilt[("Acrobot-v1", "ppo")]["after"]) == after
    assert rebuilt[("Acrobot-v1", "none")]["status"] == "missing"
    for flag, names, line in (("--envs", "Pong", "--envs names environments the bench config does not have: Pong"),
                              ("--envs", ",", "--envs names nothing")):
        code, _, err = _bench(tmp_path, config, capsys, flag, names)
        assert code == 2 and line in err and len(err.strip().splitlines()) == 1


def test_evaluations_during_refinement_give_a_second_score(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """With ``eval_every``, each refining run evaluates the policy during refinement; results.csv
    holds the mean of its last 3 evaluations beside the final iterate's return, and the report a
    second paired table on it. A results.csv from before that column still reads."""
    config = {**TINY, "methods": ["none", "ppo", "random"], "refine_timesteps": 3 * 2048,
              "settings": {"eval_every": 2048}}
    code, _, err = _bench(tmp_path, config, capsys, "--workers", "2")
    assert code == 0, err
    bench = tmp_path / "out"
    rows = _results(bench)
    assert rows[("CartPole-v1", "none")]["after_last"] == ""  # nothing refined, nothing evaluated during it
    for seed in (0, 1):
        with open(bench / f"runs/CartPole-v1/random/seed{seed}/evaluations.csv") as f:
            means = [float(r["mean_return"]) for r in csv.DictReader(f)]
        assert len(means) == 3
        with open(bench / "results.csv") as f:
            row = next(r for r in csv.DictReader(f) if r["method"] == "random" and r["seed"] == str(seed))
        assert float(row["after_last"]) == pytest.approx(np.mean(means)) and float(row["after"]) == means[-1]
    report = (bench / "report.md").read_text()
    assert "## Paired difference to continued PPO (same seed): final-iterate return" in report
    assert "## Paired difference to continued PPO (same seed): mean of the last 3 evaluations" in report
    # An older results.csv (no after_last column) for a task that ran elsewhere: its rows still read.
    results_csv = bench / "results.csv"
    with open(results_csv) as f:
        old_rows = [{k: v for k, v in r.items() if k != "after_last"} for r in csv.DictReader(f)]
    with open(results_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(old_rows[0]))
        writer.writeheader()
        writer.writerows(old_rows)
    shutil.rmtree(bench / "runs")
    assert main(["report", str(bench)]) == 0
    report = (bench / "report.md").read_text()
    assert "final-iterate return" in report and "mean of the last 3 evaluations" not in report


def test_a_run_takes_its_before_from_the_none_run_of_its_seed(tmp_path: Path, capsys,  # type: ignore[no-untyped-def]
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent as it is is evaluated once per seed: a refining run's "before" is the finished
    ``none`` run's evaluation where it was made on the run's own episodes, and its own otherwise."""
    import ultrarl.stages as stages

    evaluations = []
    real = stages.evaluate_agent
    monkeypatch.setattr(stages, "evaluate_agent", lambda *a, **k: evaluations.append(a[2]) or real(*a, **k))
    config = {**TINY, "seeds": [0], "methods": ["none", "ppo", {"name": "ppo-3", "method": "ppo",
                                                                "settings": {"eval_episodes": 3}}]}
    code, _, err = _bench(tmp_path, config, capsys, "--workers", "1")
    assert code == 0, err
    # none's; ppo's after; ppo-3's before and after (its episodes are not none's)
    assert evaluations == [2, 2, 3, 3]
    runs = tmp_path / "out" / "runs" / "CartPole-v1"
    none, ppo, ppo3 = (json.loads((runs / name / "seed0" / "eval.json").read_text()) for name in ("none", "ppo", "ppo-3"))
    assert ppo["before"] == none["after"] and ppo3["before"]["episodes"] == 3
    # A none run made from another agent file than the run's is not taken.
    inputs = runs / "none" / "seed0" / "inputs.json"
    inputs.write_text(json.dumps({"agent_sha256": "0" * 64}))
    shutil.rmtree(runs / "ppo" / "seed0")
    evaluations.clear()
    code, out, _ = _bench(tmp_path, config, capsys, "--workers", "1")
    assert code == 1 and "none seed 0: failed" in out  # none's own check refuses its directory
    assert evaluations == [2, 2]  # ppo's before and after


def _results(bench: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(bench / "results.csv") as f:
        return {(r["env"], r["method"]): r for r in csv.DictReader(f)}


def test_a_row_does_not_depend_on_workers(tmp_path: Path, capsys,  # type: ignore[no-untyped-def]
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """In process (--workers 1) and in a pool (--workers 2), a job trains with one torch thread:
    the same row, whatever this process's own thread count."""
    torch = pytest.importorskip("torch")
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # not one already, as under make test's workers
        monkeypatch.setenv(variable, "2")
    config = {**TINY, "methods": ["ppo"], "seeds": [0]}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # what this process would lend an in-process run, unpinned
    try:
        for workers in ("1", "2"):
            assert main(["bench", str(path), "--out", str(tmp_path / workers), "--workers", workers]) == 0
        assert torch.get_num_threads() == 2  # the in-process run gave its threads back
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    runs = [tmp_path / workers / "runs/CartPole-v1/ppo/seed0" for workers in ("1", "2")]
    assert [json.loads((run / "manifest.json").read_text())["torch_threads"] for run in runs] == [1, 1]
    assert (runs[0] / "eval.json").read_text() == (runs[1] / "eval.json").read_text()


def test_a_finished_run_of_another_agent_is_not_skipped(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A re-made agent must not inherit the rows of the one it replaced."""
    config = {**TINY, "methods": ["none"], "seeds": [0]}
    assert _bench(tmp_path, config, capsys)[0] == 0
    assert _bench(tmp_path, config, capsys)[1].count(": skipped") == 2  # the agent and its run
    agent = tmp_path / "out/agents/CartPole-v1/seed0.zip"
    assert main(["pretrain", "CartPole-v1", "--timesteps", "1024", "--seed", "5", "--out", str(agent)]) == 0
    code, out, err = _bench(tmp_path, config, capsys)
    assert code == 1 and "1 of 2 jobs failed" in err
    line = " ".join(out.split())  # the console wraps long lines
    assert "none seed 0: failed" in line and "was run from another agent than this bench's (SHA-256 differs)" in line


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({**TINY, "methods": ["magic"]}, "unknown method 'magic'"),
        ({**TINY, "seeds": []}, "invalid setting seeds"),
        ({**TINY, "surprise": 1}, "invalid setting surprise"),
        ({**TINY, "methods": ["ppo", "ppo"]}, "method names must be unique"),
        ({**TINY, "methods": [{"name": "v", "method": "ultra-ra", "settings": {"verify": True}}]},
         "method v: invalid setting verify"),
    ],
)
def test_bad_bench_configs_are_one_line(tmp_path: Path, capsys, config: dict, message: str) -> None:  # type: ignore[no-untyped-def]
    code, _, err = _bench(tmp_path, config, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "benchmarks").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_bench_configs_are_valid(path: Path) -> None:
    """Every run's settings are checked when a config loads (a bad one once failed every
    ultra-ra-verify run of quick.yaml)."""
    from ultrarl.bench.grid import load_bench_config

    assert load_bench_config(path).methods


def test_the_quick_benchmarks_runs_are_runs_of_the_standard_one() -> None:
    """quick.yaml says its runs are runs of standard.yaml's grid: every one of its runs has the
    settings of the standard run of the same task, method and seed (so a row means the same)."""
    from ultrarl.bench.grid import agent_path, load_bench_config, run_settings

    benchmarks = Path(__file__).parents[1] / "benchmarks"
    quick, standard = (load_bench_config(benchmarks / name) for name in ("quick.yaml", "standard.yaml"))
    methods = {m.name: m for m in standard.methods}
    compared = 0
    for env_id in quick.envs:
        assert set(quick.for_env(env_id).seeds) <= set(standard.for_env(env_id).seeds)
        for spec in quick.methods:
            for seed in quick.for_env(env_id).seeds:
                settings = [run_settings(config, method, env_id, seed, agent_path(Path("bench"), config, env_id, seed),
                                         Path("bench")) for config, method in ((quick, spec), (standard, methods[spec.name]))]
                assert settings[0] == settings[1], (env_id, spec.name, seed)
                compared += 1
    assert compared == 5 * 5 + 5 * 3


def test_run_directory_report_is_rebuilt(cartpole_agent_path: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    assert main(["refine", "CartPole-v1", "--agent", str(cartpole_agent_path), "--method", "ppo", "--timesteps",
                 "2048", "--eval-episodes", "2", "--run-dir", str(run_dir)]) == 0
    (run_dir / "report.md").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert "after ppo" in (run_dir / "report.md").read_text()
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()
    capsys.readouterr()


def test_tasks_give_an_environment_its_own_seeds_budget_and_settings(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A fast task with more seeds beside a slow one with fewer, each with its budget, in one grid."""
    config = {**TINY, "envs": ["CartPole-v1", "Pendulum-v1"], "methods": ["none", "ppo"], "seeds": [0, 1],
              "tasks": {"Pendulum-v1": {"seeds": [5], "refine_timesteps": 1024, "settings": {"mask_timesteps": 512}}}}
    code, out, err = _bench(tmp_path, config, capsys, "--workers", "2")
    assert code == 0, err
    assert out.count(": done") == 3 + 6  # agents: 2 CartPole + 1 Pendulum; runs: 2 x 2 + 1 x 2
    bench = tmp_path / "out"
    pendulum = yaml.safe_load((bench / "runs/Pendulum-v1/ppo/seed5/config.yaml").read_text())
    cartpole = yaml.safe_load((bench / "runs/CartPole-v1/ppo/seed1/config.yaml").read_text())
    assert (pendulum["timesteps"], pendulum["mask_timesteps"]) == (1024, 512)
    assert (cartpole["timesteps"], cartpole["mask_timesteps"]) == (2048, 20_000)  # the default
    assert not (bench / "runs/Pendulum-v1/ppo/seed0").exists()
    with open(bench / "results.csv") as f:
        assert sorted((r["env"], r["seed"]) for r in csv.DictReader(f) if r["method"] == "ppo") == [
            ("CartPole-v1", "0"), ("CartPole-v1", "1"), ("Pendulum-v1", "5")]
    report = (bench / "report.md").read_text()
    assert "- Pendulum-v1: seeds [5]; sub-optimal agents: PPO 1024 steps; refinement budget 1024 steps" in report
    assert "- CartPole-v1: seeds [0, 1]; sub-optimal agents: PPO 1024 steps; refinement budget 2048 steps" in report
    assert "ppo" in json.loads((bench / "estimates.json").read_text())["normalised_iqm"]  # across tasks: 1 seed each
    bad = {**config, "tasks": {"Acrobot-v1": {"seeds": [0]}}}
    code, _, err = _bench(tmp_path, bad, capsys)
    assert code == 2 and "tasks name environments not in envs: Acrobot-v1" in err


def test_report_shows_where_shipped_agents_stopped_pretraining(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Agents shipped with their ``--until-plateau`` record: the report gives each one's pretraining
    curve and where it stopped, the first half of the plateau evidence."""
    shipped = tmp_path / "agents"
    for seed in (0, 1):
        assert main(["pretrain", "CartPole-v1", "--timesteps", "4096", "--until-plateau", "--plateau-eval-every", "1024",
                     "--plateau-eval-episodes", "2", "--plateau-window", "2", "--seed", str(seed),
                     "--out", str(shipped / f"seed{seed}.zip")]) == 0
    records = {seed: json.loads((shipped / f"seed{seed}.pretrain.json").read_text()) for seed in (0, 1)}
    config = {**TINY, "methods": ["none", "ppo"], "agents": {"CartPole-v1": str(shipped)}}
    code, _, err = _bench(tmp_path, config, capsys)
    assert code == 0, err
    report = (tmp_path / "out/report.md").read_text()
    assert "## Pretraining: where each agent stopped" in report
    for seed, record in records.items():
        assert (f"| CartPole-v1 | {seed} | {record['timesteps']:,} (4,096) | {record['stopped']} | "
                f"{record['timesteps']:,} | {record['best_return']:.1f} | {record['evaluations'][-1]['mean']:.1f} |") in report
    assert "pretraining_CartPole-v1.png" in report and (tmp_path / "out/pretraining_CartPole-v1.png").stat().st_size > 0
    assert not (tmp_path / "out/agents").exists()  # the shipped agents were used, none pretrained
    # Rebuilt where the shipped folder cannot be found: said, not silently dropped.
    bench_yaml = tmp_path / "out/bench.yaml"
    bench_yaml.write_text(bench_yaml.read_text().replace(str(shipped), "elsewhere/agents"))
    assert main(["report", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out/report.md").read_text()
    assert "## Pretraining" not in report and "elsewhere/agents not found from the current directory" in report


def test_a_paired_interval_depends_on_its_own_runs_alone() -> None:
    """A task's paired CI is the same whether the grid holds other tasks and methods or not (each
    draws its own bootstrap stream), and it is a percentile interval around the paired mean."""
    rng = np.random.default_rng(7)

    def rows(env_id: str, methods: list[str]) -> list[RunRow]:
        return [RunRow(env_id, m, m, seed, "done", 0.0, float(rng.normal(10 if m == "ppo" else 12, 3)), 0.0, Path("."))
                for m in methods for seed in range(5)]

    alone_rows = rows("CartPole-v1", ["ppo", "rice"])
    alone = paired_differences({"envs": ["CartPole-v1"], "methods": [{"name": "ppo", "method": "ppo"},
                                                                      {"name": "rice", "method": "rice"}]}, alone_rows)
    wider = {"envs": ["Acrobot-v1", "CartPole-v1"],
             "methods": [{"name": "ppo", "method": "ppo"}, {"name": "random", "method": "random"},
                         {"name": "rice", "method": "rice"}]}
    both = paired_differences(wider, rows("Acrobot-v1", ["ppo", "random", "rice"]) + alone_rows
                              + rows("CartPole-v1", ["random"]))
    assert both["CartPole-v1"]["rice"] == alone["CartPole-v1"]["rice"]
    ci = alone["CartPole-v1"]["rice"]
    diffs = [r.after - p.after for r, p in zip(alone_rows[5:], alone_rows[:5])]  # type: ignore[operator]
    assert ci["point"] == pytest.approx(np.mean(diffs)) and min(diffs) <= ci["low"] < ci["point"] < ci["high"] <= max(diffs)


def test_a_bench_yaml_copied_in_by_hand_is_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """bench.yaml is the bench's own normalised copy; the config as a person writes it (``- ppo``)
    in its place is refused in one line, not a traceback from the report."""
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(TINY))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a bench.yaml that ultrarl bench wrote" in err and len(err.strip().splitlines()) == 1
