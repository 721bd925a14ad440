"""The report of a bench directory, rebuilt from what is on disk (``ultrarl report DIR``).

- ``results.csv``: one row per run (final true return, evaluated without guidance).
- Final return per environment and method: mean ± std across seeds.
- rliable: interquartile mean (IQM) with 95% stratified-bootstrap confidence intervals, per
  environment on raw returns and across environments on min-max normalised returns (per
  environment, over every run of the grid), and the probability of improvement of each method
  over ``ppo``.
- Learning curves (PNG): true episodic return against refinement steps, mean ± std over seeds.
- Where shipped agents have a pretraining record (``--until-plateau``, ``--keep-best``): each
  one's evaluated return during pretraining (PNG) and where it stopped, beside continued PPO's
  gain (the plateau evidence). Where a shipped folder holds admission checks (``ultrarl
  plateau`` per candidate agent): every candidate's, admitted to the grid or not.
- ``report.md`` and a self-contained ``report.html`` (plots embedded) with a sample of critical
  states and the LLM's reasons.
"""

from __future__ import annotations

import csv
import json
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ultrarl import run_dir as files
from ultrarl.errors import UltraRLError
from ultrarl.methods import METHODS
from ultrarl.report.markdown import cell
from ultrarl.report.page import render_page
from ultrarl.report.run_report import read_curve, refine_report_title, write_run_report

BOOTSTRAP_REPS = 2000
CURVE_BINS = 20
ORACLE_NOTE = ("oracle = an expert policy asked live at every visited state (the machinery's upper bound); "
               "oracle-offline = the expert asked once, as an LLM is (the upper bound of ULTRA's channel); "
               "random-advice = uniformly random advice through the same channel (a lower bound); none is a "
               "competitor")


@dataclass
class Pretraining:
    """The shipped agents' pretraining records (``--until-plateau``, ``--keep-best``) for the report."""

    records: dict[str, dict[int, dict[str, Any]]]  # env -> seed -> record
    figures: list[Path]
    missing: list[str]  # shipped-agent folders not found from the current directory
    admissions: dict[str, dict[int, dict[str, Any]]]  # env -> seed -> every candidate's plateau check
    grid_seeds: dict[str, list[int]]  # env -> the grid's seeds

    def lines(self) -> list[str]:
        out = []
        if self.records:
            out += ["", "## Pretraining: where each agent stopped", "",
                    "| env | seed | steps (cap) | stopped | kept (step) | best evaluated return | last |",
                    "|---|---:|---:|---|---:|---:|---:|"]
            for env, by_seed in self.records.items():
                for seed, r in by_seed.items():
                    means = [e["mean"] for e in r["evaluations"]]
                    out.append(f"| {env} | {seed} | {r['timesteps']:,} ({r['cap']:,}) | {r['stopped']} | "
                               f"{r.get('kept_timestep', r['timesteps']):,} | {max(means):.1f} | {means[-1]:.1f} |")
            out += ["", *(f"![{p.stem}]({p.name})" for p in self.figures)]
        out += self.admission_lines()
        if self.missing:
            out += ["", f"(pretraining records not looked up: {', '.join(self.missing)} not found from the current "
                        "directory; rebuild the report from where the bench ran)"]
        return out

    def admission_lines(self) -> list[str]:
        """Every candidate's admission check (``ultrarl plateau``), a line for each grid agent
        without a current, stuck one, and one for the shipped folders that hold no check at all."""
        if not self.admissions:
            return []
        out = ["", "## Admission: was each candidate agent stuck before the bench? (`ultrarl plateau`)"]
        checked = {env: checks for env, checks in self.admissions.items() if checks}
        unsupported = []
        if checked:
            out += ["", "Continued training for the refinement budget on training seeds and evaluation episodes of "
                    "the check's own; stuck when the gain's upper 95% bound is below the threshold, a fraction of "
                    "the gap to the expert. Every candidate in the shipped folder is listed; the grid runs those "
                    "marked.", "",
                    "| env | seed | in grid | as it is | expert | continued training's gain [95% CI] | "
                    "threshold (fraction × gap) | verdict |", "|---|---:|---|---:|---:|---:|---:|---|"]
        for env, checks in checked.items():
            for seed, c in checks.items():
                verdict = ("stuck" if c["stuck"] else "not stuck") + ("" if c["current"] else " (for another file)")
                out.append(f"| {env} | {seed} | {'yes' if seed in self.grid_seeds.get(env, []) else ''} | "
                           f"{c['before']:.1f} | {c['expert']:.1f} | {_fmt_diff(c['gain'])} ({len(c['runs'])} seeds) | "
                           f"{c['stuck_fraction'] * c['gap']:+.1f} | {verdict} |")
            unsupported += [f"{env} seed {seed}" for seed in self.grid_seeds.get(env, [])
                            if not (seed in checks and checks[seed]["stuck"] and checks[seed]["current"])]
        if unsupported:
            out += ["", f"**Not admitted by a current check, yet in the grid:** {', '.join(unsupported)}."]
        unchecked = [env for env, checks in self.admissions.items() if not checks]
        if unchecked:
            out += ["", f"**Not checked at all** (no admission check in their shipped folders; whether their agents "
                        f"are stuck is not shown): {', '.join(unchecked)}."]
        return out


@dataclass
class RunRow:
    env_id: str
    method: str  # the grid's method name
    kind: str  # the ultrarl refine method (or none)
    seed: int
    status: str
    before: float | None
    after: float | None
    after_std: float | None
    run_dir: Path
    recorded: bool = False  # kept from results.csv: its run directory is not here
    after_last: float | None = None  # mean of the last LAST_EVALUATIONS evaluations during refinement


# The other score a bench reports beside the final iterate's: the mean of the last few of the
# evaluations a run made during refinement (``eval_every``), less sensitive to where the last
# update happened to leave the policy.
LAST_EVALUATIONS = 3


RESULTS_FIELDS = ["env", "method", "kind", "seed", "status", "before", "after", "after_std", "after_last"]


def task_config(config: dict[str, Any], env_id: str) -> dict[str, Any]:
    """bench.yaml as it applies to ``env_id``: the entries its task sets (``tasks``) replace the
    bench's (``settings`` is merged by the bench, which alone reads it)."""
    task = (config.get("tasks") or {}).get(env_id) or {}
    return {**config, **{k: v for k, v in task.items() if v is not None and k != "settings"}}


def _is_written_by_the_bench(config: Any) -> bool:
    """The bench writes bench.yaml with every method as a ``name``/``method`` mapping; a config
    copied in by hand (``- ppo``) would otherwise fail deep inside the report."""
    return (isinstance(config, dict) and isinstance(config.get("envs"), list) and isinstance(config.get("seeds"), list)
            and isinstance(config.get("methods"), list)
            and all(isinstance(m, dict) and {"name", "method"} <= m.keys() for m in config["methods"]))


def collect_rows(bench_dir: Path) -> tuple[dict[str, Any], list[RunRow]]:
    config_path = bench_dir / files.BENCH_CONFIG
    if not config_path.exists():
        raise UltraRLError(f"{bench_dir} holds no bench.yaml: not a bench directory")
    config = yaml.safe_load(config_path.read_text())
    if not _is_written_by_the_bench(config):
        raise UltraRLError(f"{config_path} is not a bench.yaml that ultrarl bench wrote (envs, seeds and methods "
                           "as name/method mappings); run `ultrarl bench CONFIG --out DIR` to write it")
    recorded = _recorded_rows(bench_dir / files.RESULTS)
    rows = []
    for env_id in config["envs"]:
        ran_here = files.bench_task_dir(bench_dir, env_id).is_dir()
        for method in config["methods"]:
            for seed in task_config(config, env_id)["seeds"]:
                row = _row(env_id, method, seed, files.bench_run_dir(bench_dir, env_id, method["name"], seed))
                kept = recorded.get((env_id, method["name"], seed))
                if not ran_here and kept is not None and kept.kind == method["method"]:
                    row = replace(kept, run_dir=row.run_dir)
                rows.append(row)
    return config, rows


def _recorded_rows(path: Path) -> dict[tuple[str, str, int], RunRow]:
    """The finished rows of an earlier ``results.csv``, by (env, method, seed): a task that ran in
    another bench directory or on another machine, whose run directories are not here (its rows
    are kept only while no run of that task is here: a deleted run is a run to redo)."""
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        return {(r["env"], r["method"], int(r["seed"])): RunRow(
                    r["env"], r["method"], r["kind"], int(r["seed"]), "done", _number(r["before"]),
                    _number(r["after"]), _number(r["after_std"]), Path(), recorded=True,
                    after_last=_number(r.get("after_last") or ""))
                for r in csv.DictReader(f) if r["status"] == "done" and r["after"]}


def _number(cell: str) -> float | None:
    return float(cell) if cell else None


def _row(env_id: str, method: dict[str, Any], seed: int, run_dir: Path) -> RunRow:
    eval_path = run_dir / files.EVAL
    finished = (run_dir / files.CONFIG).exists()
    status = "done" if finished else "failed" if (run_dir / files.ERROR).exists() else "missing"
    before = after = after_std = None
    if finished and eval_path.exists():
        data = json.loads(eval_path.read_text())
        before, after, after_std = data["before"]["mean"], data["after"]["mean"], data["after"]["std"]
    last = _last_evaluations(run_dir / files.EVALUATIONS) if finished else None
    return RunRow(env_id, method["name"], method["method"], seed, status, before, after, after_std, run_dir,
                  after_last=last)


def _last_evaluations(path: Path) -> float | None:
    """The mean of the last ``LAST_EVALUATIONS`` evaluated returns of a run's ``evaluations.csv``
    (of all of them where it holds fewer; None without one)."""
    if not path.exists():
        return None
    with open(path, newline="") as f:
        means = [float(r["mean_return"]) for r in csv.DictReader(f)]
    return float(np.mean(means[-LAST_EVALUATIONS:])) if means else None


def _scores(rows: list[RunRow], env_id: str, method: str) -> np.ndarray:
    return np.array([r.after for r in rows if r.env_id == env_id and r.method == method and r.after is not None])


def final_return_table(config: dict[str, Any], rows: list[RunRow]) -> list[dict[str, Any]]:
    table = []
    for env_id in config["envs"]:
        for method in config["methods"]:
            scores = _scores(rows, env_id, method["name"])
            table.append({
                "env": env_id, "method": method["name"], "runs": len(scores),
                "mean": float(scores.mean()) if len(scores) else float("nan"),
                "std": float(scores.std()) if len(scores) else float("nan"),
            })
    return table


def rliable_estimates(config: dict[str, Any], rows: list[RunRow], seed: int = 0) -> dict[str, Any]:
    """IQM (per env, raw; and across envs, normalised) and P(method > ppo), with 95% CIs."""
    from rliable import library as rly
    from rliable import metrics

    np.random.seed(seed)  # rliable's bootstrap draws from numpy's global RNG
    envs = config["envs"]
    names = [m["name"] for m in config["methods"]]
    complete = _complete_methods(config, rows, names)
    out: dict[str, Any] = {"per_env": {}, "normalised_iqm": {}, "prob_improvement_over_ppo": {}}
    if not complete:
        return out

    def iqm(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x)])

    for env_id in envs:
        scores = {n: _scores(rows, env_id, n).reshape(-1, 1) for n in complete}
        point, interval = rly.get_interval_estimates(scores, iqm, reps=BOOTSTRAP_REPS)
        out["per_env"][env_id] = {n: _estimate(point[n], interval[n]) for n in complete}
    matrix = _score_matrix(rows, envs, complete)
    normalised = _normalised(matrix)
    point, interval = rly.get_interval_estimates(normalised, iqm, reps=BOOTSTRAP_REPS)
    out["normalised_iqm"] = {n: _estimate(point[n], interval[n]) for n in complete}
    if "ppo" in complete:
        pairs = {f"{n},ppo": (matrix[n], matrix["ppo"]) for n in complete if n != "ppo"}
        if pairs:
            point, interval = rly.get_interval_estimates(pairs, metrics.probability_of_improvement,
                                                         reps=BOOTSTRAP_REPS)
            out["prob_improvement_over_ppo"] = {k.split(",")[0]: _estimate(point[k], interval[k]) for k in pairs}
    return out


def _complete_methods(config: dict[str, Any], rows: list[RunRow], names: list[str]) -> list[str]:
    """The methods with every seed finished on every environment (rliable needs full matrices)."""
    return [n for n in names if all(len(_scores(rows, e, n)) == len(task_config(config, e)["seeds"])
                                    for e in config["envs"])]


def _score_matrix(rows: list[RunRow], envs: list[str], names: list[str]) -> dict[str, np.ndarray]:
    """(seeds x envs) final returns per method; where tasks have different numbers of seeds, the
    first seeds of each, as many as the task with fewest has (an aggregate weighs tasks alike)."""
    runs = min(len(_scores(rows, e, n)) for e in envs for n in names)
    return {n: np.stack([_scores(rows, e, n)[:runs] for e in envs], axis=1) for n in names}


def _normalised(matrix: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """(seeds x envs) scores per method, min-max normalised per environment over every method's
    runs, so environments weigh alike."""
    everything = np.concatenate(list(matrix.values()), axis=0)
    low, high = everything.min(axis=0), everything.max(axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    return {n: (m - low) / span for n, m in matrix.items()}


def performance_profile(config: dict[str, Any], rows: list[RunRow], out_dir: Path) -> Path | None:
    """rliable's performance profile across environments: the share of runs whose normalised
    final return exceeds τ, with 95% stratified-bootstrap bands."""
    from rliable import library as rly

    envs, names = config["envs"], [m["name"] for m in config["methods"]]
    complete = _complete_methods(config, rows, names)
    if len(complete) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    np.random.seed(0)  # rliable's bootstrap draws from numpy's global RNG
    normalised = _normalised(_score_matrix(rows, envs, complete))
    taus = np.linspace(0.0, 1.0, 41)
    profiles, bands = rly.create_performance_profile(normalised, taus, reps=BOOTSTRAP_REPS)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, profile in profiles.items():
        line, = ax.plot(taus, profile, label=name, linewidth=2)
        ax.fill_between(taus, bands[name][0], bands[name][1], color=line.get_color(), alpha=0.15)
    ax.set_xlabel("normalised final return τ (min-max per environment over every run)")
    ax.set_ylabel("fraction of runs above τ")
    ax.set_title("performance profile, 95% stratified-bootstrap bands (rliable)", fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return files.write_figure(out_dir / files.PERFORMANCE_PROFILE, fig)


def _estimate(point: Any, interval: Any) -> dict[str, float]:
    point = float(np.asarray(point).ravel()[0])
    low, high = (float(v) for v in np.asarray(interval).reshape(2, -1)[:, 0])
    return {"point": point, "low": low, "high": high}


def learning_curves(config: dict[str, Any], rows: list[RunRow], out_dir: Path) -> list[Path]:
    """One PNG per environment: mean ± std over seeds of the binned true episodic return."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for env_id in config["envs"]:
        if not any(r.env_id == env_id and r.status == "done" and not r.recorded for r in rows):
            continue  # no run of this task is here to draw
        edges = np.linspace(0, task_config(config, env_id)["refine_timesteps"], CURVE_BINS + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        fig, ax = plt.subplots(figsize=(7, 4))
        for method in config["methods"]:
            env_rows = [r for r in rows if r.env_id == env_id and r.method == method["name"] and r.status == "done"
                        and not r.recorded]
            if not env_rows:
                continue
            spec = METHODS[method["method"]]
            if not spec.refines:
                level = np.mean([r.after for r in env_rows])
                ax.axhline(level, color="grey", linestyle="--", label=f"{method['name']} (agent as is)")
                continue
            curves = [c for c in (_binned_curve(r.run_dir / files.EPISODES, edges) for r in env_rows) if c is not None]
            if not curves:
                continue
            stacked = np.array(curves)
            with warnings.catch_warnings():  # a bin where no run ended an episode stays empty (NaN)
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, std = np.nanmean(stacked, axis=0), np.nanstd(stacked, axis=0)
            bound = " (upper bound)" if spec.upper_bound else " (lower bound)" if spec.lower_bound else ""
            label = method["name"] + bound
            ax.plot(centres, mean, label=label, linestyle=":" if spec.upper_bound else "-")
            ax.fill_between(centres, mean - std, mean + std, alpha=0.15)
        ax.set_title(f"{env_id}: true return during refinement")
        ax.set_xlabel("refinement steps")
        ax.set_ylabel("episodic return (mean ± std over seeds)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(files.write_figure(out_dir / f"curve_{files.env_slug(env_id)}.png", fig))
    return paths


def pretraining_records(config: dict[str, Any], bench_dir: Path) -> tuple[dict[str, dict[int, dict[str, Any]]], list[str]]:
    """(env -> seed -> the agent's pretraining record, for the agents that have one: the first
    half of each task's plateau evidence; the shipped-agent folders not found from here, named
    in bench.yaml relative to where the bench ran)."""
    records: dict[str, dict[int, dict[str, Any]]] = {}
    shipped = config.get("agents") or {}
    missing = [folder for env_id, folder in shipped.items() if env_id in config["envs"] and not Path(folder).is_dir()]
    for env_id in config["envs"]:
        for seed in task_config(config, env_id)["seeds"]:
            path = files.pretrain_record(files.grid_agent_path(bench_dir, shipped, env_id, seed))
            if path.exists():
                record = json.loads(path.read_text())
                if record.get("evaluations"):
                    records.setdefault(env_id, {})[seed] = record
    return records, missing


def admission_checks(config: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """env -> seed -> the admission check of every candidate agent in its shipped folder, in seed
    order, each with ``current``: whether it was made for the zip beside it (its SHA-256); a folder
    of the grid's with no check maps to an empty dict."""
    checks: dict[str, dict[int, dict[str, Any]]] = {}
    for env_id, folder in (config.get("agents") or {}).items():
        if env_id not in config["envs"] or not Path(folder).is_dir():
            continue
        checks[env_id] = {}
        found = {seed: path for path in Path(folder).glob(f"seed*{files.ADMISSION_SUFFIX}")
                 if (seed := _seed_of(path.name.removesuffix(files.ADMISSION_SUFFIX))) is not None}
        for seed in sorted(found):
            check = json.loads(found[seed].read_text())
            agent = Path(folder) / f"seed{seed}.zip"
            check["current"] = agent.exists() and files.file_sha256(agent) == check.get("agent_sha256")
            checks[env_id][seed] = check
    return checks


def _seed_of(stem: str) -> int | None:
    """The seed of a shipped agent's file stem (``seed12``), or None for any other name."""
    digits = stem.removeprefix("seed")
    return int(digits) if stem.startswith("seed") and digits.isdigit() else None


def pretraining_curves(records: dict[str, dict[int, dict[str, Any]]], out_dir: Path) -> list[Path]:
    """One PNG per environment: each agent's evaluated return during pretraining, to where it stopped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for env_id, by_seed in records.items():
        fig, ax = plt.subplots(figsize=(7, 4))
        for seed, record in by_seed.items():
            steps = [e["timestep"] for e in record["evaluations"]]
            ax.plot(steps, [e["mean"] for e in record["evaluations"]], marker=".", label=f"seed {seed} ({record['stopped']})")
        ax.set_title(f"{env_id}: evaluated return during pretraining")
        ax.set_xlabel("pretraining steps")
        ax.set_ylabel("evaluated return (deterministic)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = files.PRETRAINING_FIGURE.format(slug=files.env_slug(env_id))
        paths.append(files.write_figure(out_dir / name, fig))
    return paths


def _binned_curve(path: Path, edges: np.ndarray) -> np.ndarray | None:
    data = read_curve(path)
    if not data:
        return None
    steps, returns = np.array(data).T
    curve = np.full(len(edges) - 1, np.nan)
    for i in range(len(edges) - 1):
        inside = (steps > edges[i]) & (steps <= edges[i + 1])
        if inside.any():
            curve[i] = returns[inside].mean()
    # Carry the last value through bins without a finished episode (long episodes).
    for i in range(1, len(curve)):
        if np.isnan(curve[i]):
            curve[i] = curve[i - 1]
    return curve


def critical_state_sample(rows: list[RunRow], limit: int = 12) -> list[dict[str, Any]]:
    sample = []
    for row in rows:
        if not METHODS[row.kind].asks_llm or row.status != "done":
            continue
        path = row.run_dir / files.EXPLANATIONS
        lines = path.read_text().splitlines() if path.exists() else []
        for line in lines[:2]:
            state = json.loads(line)
            sample.append({"env": row.env_id, "method": row.method, "seed": row.seed, **state})
        if len(sample) >= limit:
            break
    return sample[:limit]


def write_bench_report(bench_dir: Path) -> Path:
    config, rows = collect_rows(bench_dir)
    table = final_return_table(config, rows)
    estimates = rliable_estimates(config, rows)
    records, missing = pretraining_records(config, bench_dir)
    pretraining = pretraining_curves(records, bench_dir)
    curves = learning_curves(config, rows, bench_dir)
    profile = performance_profile(config, rows, bench_dir)
    curves += [profile] if profile is not None else []
    sample = critical_state_sample(rows)
    files.write_csv(bench_dir / files.RESULTS,
                    [[r.env_id, r.method, r.kind, r.seed, r.status, r.before, r.after, r.after_std, r.after_last]
                     for r in rows],
                    RESULTS_FIELDS)
    estimates["paired_difference_to_ppo"] = paired_differences(config, rows)
    estimates["paired_difference_to_ppo_last_evaluations"] = paired_differences(config, rows, last_evaluations=True)
    files.write_json(bench_dir / files.ESTIMATES, estimates)
    _rewrite_run_reports(bench_dir, rows)
    grid_seeds = {env_id: task_config(config, env_id)["seeds"] for env_id in config["envs"]}
    markdown = render_markdown(config, rows, table, estimates, curves, sample,
                               Pretraining(records, pretraining, missing, admission_checks(config), grid_seeds))
    files.write_text_atomic(bench_dir / files.REPORT_MD, markdown)
    files.write_text_atomic(bench_dir / files.REPORT_HTML, render_page(markdown, f"ultrarl bench: {config['name']}",
                                                                       bench_dir))
    return bench_dir / files.REPORT_MD


def _rewrite_run_reports(bench_dir: Path, rows: list[RunRow]) -> None:
    """Every finished run's own report again, its learning curve beside its baseline's
    (continued training on the same agent and seed), now that both exist."""
    for row in rows:
        if row.status != "done" or row.recorded or row.kind in ("none", "ppo"):
            continue
        baseline = files.bench_run_dir(bench_dir, row.env_id, "ppo", row.seed)
        if (baseline / files.CONFIG).exists():
            write_run_report(row.run_dir, refine_report_title(METHODS[row.kind].label, row.env_id), baseline)


def paired_differences(config: dict[str, Any], rows: list[RunRow], seed: int = 0,
                       last_evaluations: bool = False) -> dict[str, dict[str, Any]]:
    """Per environment and method: the mean over seeds of (method - ppo) on the same seed, with a
    95% percentile-bootstrap CI over seeds, of the final iterate's return (or, with
    ``last_evaluations``, of the mean of the last evaluations during refinement). Only seeds where
    both have the score count. Each interval draws from a stream of its own (``seed``, the
    environment, the method), so it depends on its own runs alone, not on which other tasks or
    methods the grid holds."""
    baseline = next((m["name"] for m in config["methods"] if m["method"] == "ppo"), None)
    out: dict[str, dict[str, Any]] = {}
    if baseline is None:
        return out
    for env_id in config["envs"]:
        ppo = _scores_by_seed(rows, env_id, baseline, last_evaluations)
        out[env_id] = {}
        for method in config["methods"]:
            mine = _scores_by_seed(rows, env_id, method["name"], last_evaluations)
            seeds = sorted(set(ppo) & set(mine))
            if method["name"] == baseline or len(seeds) < 2:
                continue
            diffs = np.array([mine[s] - ppo[s] for s in seeds])
            rng = np.random.default_rng([seed, zlib.crc32(env_id.encode()), zlib.crc32(method["name"].encode())])
            boot = diffs[rng.integers(len(diffs), size=(BOOTSTRAP_REPS, len(diffs)))].mean(axis=1)
            out[env_id][method["name"]] = {"point": float(diffs.mean()), "low": float(np.quantile(boot, 0.025)),
                                           "high": float(np.quantile(boot, 0.975)), "seeds": len(seeds)}
    return out


def _scores_by_seed(rows: list[RunRow], env_id: str, method: str, last_evaluations: bool) -> dict[int, float]:
    scores = {r.seed: r.after_last if last_evaluations else r.after for r in rows
              if r.env_id == env_id and r.method == method}
    return {seed: score for seed, score in scores.items() if score is not None}


def _fmt(e: dict[str, float] | None) -> str:
    return f"{e['point']:.2f} [{e['low']:.2f}, {e['high']:.2f}]" if e else "n/a"


def _fmt_diff(e: dict[str, float] | None) -> str:
    if not e:
        return "n/a"
    mark = " *" if e["low"] > 0 or e["high"] < 0 else ""
    return f"{e['point']:+.1f} [{e['low']:+.1f}, {e['high']:+.1f}]{mark}"


def _grid_lines(config: dict[str, Any]) -> list[str]:
    """What every method got: one sentence, or one line per task where tasks differ."""
    def grid(task: dict[str, Any], env_ids: list[str]) -> str:
        shipped = [config.get("agents", {}).get(e) for e in env_ids]
        agents = (f"shipped in {', '.join(shipped)}" if all(shipped)  # type: ignore[arg-type]
                  else f"PPO {task['pretrain_timesteps']} steps")
        return (f"seeds {task['seeds']}; sub-optimal agents: {agents}; refinement budget "
                f"{task['refine_timesteps']} steps for every method; {task['explain_episodes']} episodes explained; "
                f"evaluation {task['eval_episodes']} deterministic episodes without guidance")

    if not config.get("tasks"):
        return [f"Environments {', '.join(config['envs'])}; {grid(config, config['envs'])}; LLM {config['llm']}. "
                f"{ORACLE_NOTE}."]
    return [f"LLM {config['llm']}. {ORACLE_NOTE}.", "",
            *(f"- {env_id}: {grid(task_config(config, env_id), [env_id])}." for env_id in config["envs"])]


def _run_status_lines(rows: list[RunRow]) -> list[str]:
    """The runs that did not finish, and those reported from results.csv without their directories."""
    lines = []
    failures = [r for r in rows if r.status != "done"]
    if failures:
        lines += [f"**{len(failures)} of {len(rows)} runs did not finish:** "
                  + "; ".join(f"{r.env_id} {r.method} seed {r.seed} ({r.status})" for r in failures[:10]), ""]
    kept = [r for r in rows if r.recorded]
    if kept:
        lines += [f"{len(kept)} of {len(rows)} runs are reported from `{files.RESULTS}` without their run directories "
                  f"(tasks: {', '.join(dict.fromkeys(r.env_id for r in kept))}: they ran elsewhere): their rows are "
                  "kept as they were, unchecked against bench.yaml, with no learning curves or critical states.", ""]
    return lines


def _paired_lines(config: dict[str, Any], paired: dict[str, dict[str, Any]], score: str) -> list[str]:
    """The table of paired differences to continued PPO on ``score`` (none where no method has one)."""
    if not any(paired.values()):
        return []
    lines = ["", f"## Paired difference to continued PPO (same seed): {score}, mean [95% bootstrap CI over seeds]",
             "", "| method | " + " | ".join(paired) + " |", "|---|" + "---:|" * len(paired)]
    names = [m["name"] for m in config["methods"] if any(m["name"] in paired[e] for e in paired)]
    return lines + [f"| {name} | " + " | ".join(_fmt_diff(paired[e].get(name)) for e in paired) + " |"
                    for name in names]


def render_markdown(
    config: dict[str, Any], rows: list[RunRow], table: list[dict[str, Any]], estimates: dict[str, Any],
    curves: list[Path], sample: list[dict[str, Any]], pretraining: Pretraining,
) -> str:
    lines = [f"# ultrarl bench: {config['name']}", "", *_grid_lines(config), "", *_run_status_lines(rows)]
    lines += ["## Final true return (final iterate; mean ± std over seeds)", "", "| env | method | runs | mean | std |",
              "|---|---|---:|---:|---:|"]
    lines += [f"| {t['env']} | {t['method']} | {t['runs']} | {t['mean']:.1f} | {t['std']:.1f} |" for t in table]
    lines += ["", "## Interquartile mean with 95% stratified-bootstrap CIs (rliable)", ""]
    per_env = estimates.get("per_env", {})
    if per_env:
        methods = list(next(iter(per_env.values())))
        lines += ["| method | " + " | ".join(per_env) + " | all envs (normalised) |",
                  "|---|" + "---:|" * (len(per_env) + 1)]
        for m in methods:
            cells = [_fmt(per_env[e].get(m)) for e in per_env]
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {_fmt(estimates['normalised_iqm'].get(m))} |")
    else:
        lines.append("(no method has every seed finished)")
    paired = estimates.get("paired_difference_to_ppo", {})
    plateau = {env: diffs["none"] for env, diffs in paired.items() if "none" in diffs}
    lines += pretraining.lines()
    if plateau:  # ppo minus the agent as it is: how much continued training still gains
        lines += ["", "## Plateau evidence: what continued training gains over the agent as it is", "",
                  "| env | gain of ppo over none, mean [95% bootstrap CI over seeds] |", "|---|---:|"]
        for env, none_minus_ppo in plateau.items():
            gain = {"point": -none_minus_ppo["point"], "low": -none_minus_ppo["high"], "high": -none_minus_ppo["low"]}
            lines.append(f"| {env} | {_fmt_diff(gain)} |")
    lines += _paired_lines(config, paired, "final-iterate return")
    lines += _paired_lines(config, estimates.get("paired_difference_to_ppo_last_evaluations", {}),
                           f"mean of the last {LAST_EVALUATIONS} evaluations during refinement (`eval_every`)")
    improvement = estimates.get("prob_improvement_over_ppo", {})
    if improvement:
        lines += ["", "## Probability of improvement over continued PPO", "", "| method | P(method > ppo) [95% CI] |",
                  "|---|---:|"]
        lines += [f"| {m} | {_fmt(e)} |" for m, e in improvement.items()]
    lines += ["", "## Learning curves", ""]
    lines += [f"![{p.stem}]({p.name})" for p in curves]
    if sample:
        lines += ["", "## Sample of critical states and the LLM's reasons", "",
                  "| env | method | seed | episode | step | agent action | suggested | r_LLM | reason |",
                  "|---|---|---:|---:|---:|---|---|---:|---|"]
        for s in sample:
            reason = cell(s["rationale"] or "(none)")
            lines.append(f"| {s['env']} | {s['method']} | {s['seed']} | {s['episode']} | {s['step']} | "
                         f"{s['agent_action_text']} | {s['suggested_action_text']} | {s['implicit_reward']:+.2f} | "
                         f"{reason} |")
    return "\n".join(lines) + "\n"
