"""CPU-hours of a bench config, estimated from the measured runs of a bench that ran here.

    python benchmarks/estimate_cost.py benchmarks/full.yaml --measured runs/bench-stuck-hopper:runs/hopper.log \
        --measured runs/bench-stuck-mcc:runs/mcc.log,runs/mcc-rest.log

Each measured run splits into three parts, each scaled to the target config by the budget it
grows with: refinement (``refine_summary.json``: wall time for its steps) by refine_timesteps;
identification (``identify.json``) by explain_episodes for the LLM and the expert, by
mask_timesteps for the mask network; the rest (loading, evaluation: the job's whole wall time in
the grid's log minus both) by eval_episodes. Pretraining the agents and experts is scaled from
``ppo``'s refinement speed (both are PPO steps). A target environment with no measured bench is
estimated from the measured one named for it (``--like ENV=MEASURED_ENV``; default: the first
measured environment). The per-run settings are the bench's own (``run_settings``). One worker
per core: CPU-hours = the sum of the jobs' wall hours.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

import yaml

from ultrarl.bench.grid import MethodSpec, expert_env, load_bench_config, run_settings
from ultrarl.settings import RefineSettings

# A method never measured costs about what its nearest measured one does (same identification;
# random is priced as rice, mask network included: an overestimate).
NEAREST = {"statemask-r": "rice", "random": "rice", "ultra-a": "ultra-ra", "ultra-r": "ultra-ra"}
MASK_METHODS = ("rice", "statemask-r")
JOB_LINE = re.compile(r"\] (?P<env>\S+) (?P<method>\S+) seed (?P<seed>\d+): done \((?P<wall>\d+) s")


def measured_parts(bench_dir: Path, logs: list[Path]) -> dict[tuple[str, str], dict[str, float]]:
    """(env, method) -> mean seconds of refine, identify and the rest, per run, with the budgets."""
    config = yaml.safe_load((bench_dir / "bench.yaml").read_text())
    kinds = {m["name"]: m["method"] for m in config["methods"]}
    parts: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for match in JOB_LINE.finditer("".join(log.read_text() for log in logs)):
        env_id, method, seed = match["env"], match["method"], match["seed"]
        run = bench_dir / "runs" / env_id.replace("/", "_") / method / f"seed{seed}"
        summary, identify = (json.loads((run / name).read_text()) if (run / name).exists() else {}
                             for name in ("refine_summary.json", "identify.json"))
        settings = yaml.safe_load((run / "config.yaml").read_text())
        refine, found = summary.get("wall_time_s", 0.0), identify.get("identify_wall_time_s", 0.0)
        parts[(env_id, method)].append({
            "refine": refine, "identify": found, "rest": max(float(match["wall"]) - refine - found, 0.0),
            "steps": summary.get("timesteps", settings.get("timesteps", 1)), "episodes": settings.get("episodes", 1),
            "eval_episodes": settings.get("eval_episodes", config["eval_episodes"]),
            "mask_timesteps": settings.get("mask_timesteps", 1),
            "kind": kinds.get(method, method),
        })
    return {key: {k: (statistics.mean(r[k] for r in runs) if k != "kind" else runs[0][k]) for k in runs[0]}
            for key, runs in parts.items()}


def run_seconds(measured: dict[str, float], settings: RefineSettings, kind: str) -> float:
    """One run of ``settings`` from the measured run's three parts."""
    identify_scale = (settings.mask_timesteps / measured["mask_timesteps"] if kind in MASK_METHODS
                      else settings.episodes / measured["episodes"])
    return (measured["refine"] * settings.timesteps / measured["steps"]
            + measured["identify"] * identify_scale
            + measured["rest"] * settings.eval_episodes / measured["eval_episodes"])


def nearest_measured(measured: dict[tuple[str, str], dict[str, float]], env_id: str, spec: MethodSpec
                     ) -> dict[str, float] | None:
    """The same grid name, else the same method, else its nearest measured method, on ``env_id``."""
    same_env = {name: m for (e, name), m in measured.items() if e == env_id}
    for wanted in (spec.method, NEAREST.get(spec.method)):
        found = same_env.get(spec.name) or next((m for m in same_env.values() if m["kind"] == wanted), None)
        if found is not None:
            return found
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--measured", action="append", required=True, help="BENCH_DIR:GRID_LOG[,LOG] (repeatable)")
    parser.add_argument("--like", action="append", default=[], help="ENV=MEASURED_ENV")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    measured: dict[tuple[str, str], dict[str, float]] = {}
    for pair in args.measured:
        bench_dir, logs = pair.split(":")
        measured |= measured_parts(Path(bench_dir), [Path(log) for log in logs.split(",")])
    measured_envs = list(dict.fromkeys(env for env, _ in measured))
    like = dict(item.split("=") for item in args.like)
    config = load_bench_config(Path(args.config))
    wants_expert = any(spec.method == "oracle" for spec in config.methods)
    total, experts_counted = 0.0, set()
    for env_id in config.envs:
        task = config.for_env(env_id)
        source = env_id if env_id in measured_envs else like.get(env_id, measured_envs[0])
        env_seconds = 0.0
        for spec in config.methods:
            sample = nearest_measured(measured, source, spec)
            if sample is None:
                print(f"  {env_id} {spec.name}: no measured run like it on {source}; not counted")
                continue
            settings = run_settings(config, spec, env_id, task.seeds[0], Path("agent.zip"), Path(args.config).parent)
            env_seconds += run_seconds(sample, settings, spec.method) * len(task.seeds)
        ppo = measured.get((source, "ppo"))
        if ppo is not None and ppo["refine"] > 0:  # pretraining is PPO: priced at ppo's refinement speed
            speed = ppo["steps"] / ppo["refine"]
            if env_id not in config.agents:  # shipped agents are not trained
                env_seconds += len(task.seeds) * task.pretrain_timesteps / speed
            expert = expert_env(config, env_id)
            if wants_expert and env_id not in config.experts and expert not in experts_counted:
                experts_counted.add(expert)
                env_seconds += config.expert_timesteps / speed
        print(f"{env_id} (measured as {source}): {env_seconds / 3600:.1f} CPU-hours")
        total += env_seconds
    print(f"total: {total / 3600:.1f} CPU-hours ({total / 3600 / args.cores:.1f} h on {args.cores} cores)")


if __name__ == "__main__":
    main()
