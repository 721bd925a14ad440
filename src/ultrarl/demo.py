"""``ultrarl demo``: the whole method on Hopper-v5 in a few minutes on 2 CPU cores, offline.

Trains a deliberately sub-optimal PPO agent, explains 8 of its episodes with the embedded LLM,
refines it with ULTRA-RA and, for an honest comparison, with continued PPO on the same budget
and seed, then evaluates all three without guidance. Re-running reuses the trained agent and
the LLM cache, so it is much faster the second time.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ultrarl.pipeline import pretrain, refine_agent
from ultrarl.report.console import console, critical_states_table, returns_table
from ultrarl.report.markdown import write_report
from ultrarl.run_dir import write_json
from ultrarl.settings import PretrainSettings, RefineSettings

DEMO_ENV = "Hopper-v5"
DEMO_SEED = 0
PRETRAIN_STEPS = 30_000
REFINE_STEPS = 20_480
EPISODES = 8
TOKEN_BUDGET = 1500  # the embedded model reads ~170 prompt tokens/s on 2 cores
EVAL_EPISODES = 10


def _sub_optimal_agent(run_dir: Path) -> Path:
    """The demo's agent, trained once and reused while its settings stay the same."""
    agent_path = run_dir / "agent.zip"
    stamp = run_dir / "agent.json"
    wanted = {"env_id": DEMO_ENV, "seed": DEMO_SEED, "timesteps": PRETRAIN_STEPS}
    if agent_path.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        console.print(f"[bold]1/4[/] reusing the sub-optimal agent in {agent_path}")
    else:
        console.print(f"[bold]1/4[/] training a sub-optimal PPO agent on {DEMO_ENV} ({PRETRAIN_STEPS} steps) ...")
        pretrain(PretrainSettings(env_id=DEMO_ENV, timesteps=PRETRAIN_STEPS, seed=DEMO_SEED, out=str(agent_path)))
        write_json(stamp, wanted)
    return agent_path


def run_demo(run_dir: Path, llm: str = "local") -> dict[str, object]:
    start = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    agent_path = _sub_optimal_agent(run_dir)
    common = dict(
        env_id=DEMO_ENV, agent=str(agent_path), seed=DEMO_SEED, episodes=EPISODES, llm={"model": llm},
        token_budget=TOKEN_BUDGET, timesteps=REFINE_STEPS, eval_episodes=EVAL_EPISODES,
    )
    console.print("[bold]2/4[/] explaining and refining with ULTRA-RA ...")
    ultra_dir = run_dir / "ultra-ra"
    shutil.rmtree(ultra_dir, ignore_errors=True)
    ultra_dir.mkdir()
    ultra = refine_agent(RefineSettings(method="ultra-ra", **common), ultra_dir)  # type: ignore[arg-type]

    console.print("[bold]3/4[/] continued PPO on the same budget and seed (the baseline) ...")
    ppo_dir = run_dir / "ppo"
    shutil.rmtree(ppo_dir, ignore_errors=True)
    ppo_dir.mkdir()
    ppo = refine_agent(RefineSettings(method="ppo", **common), ppo_dir)  # type: ignore[arg-type]

    console.print("[bold]4/4[/] results")
    console.print(critical_states_table(ultra.states, limit=6))
    evaluations = {"sub-optimal agent": ultra.before, "continued PPO": ppo.after, "ULTRA-RA": ultra.after}
    console.print(returns_table(evaluations))
    m = ultra.modulation
    console.print(
        f"ULTRA-RA matched {int(m['matched'])} of {int(m['steps'])} states (match rate {m['match_rate']:.2%}), "
        f"overrode {int(m['overridden'])} actions (override rate {m['override_rate']:.2%}); "
        f"LLM calls {ultra.usage['calls']}, cache hits {ultra.usage['cache_hits']}, failures {ultra.usage['failures']}"
    )
    throughput_ratio = ultra.steps_per_second / ppo.steps_per_second
    wall = time.perf_counter() - start
    console.print(
        f"refinement throughput: ULTRA-RA {ultra.steps_per_second:.0f} steps/s, PPO {ppo.steps_per_second:.0f} "
        f"steps/s (ratio {throughput_ratio:.2f}); demo wall time {wall:.0f} s; everything is in {run_dir}/"
    )
    summary = {
        "env_id": DEMO_ENV,
        "before": ultra.before.to_dict(),
        "after_ultra_ra": ultra.after.to_dict(),
        "after_ppo": ppo.after.to_dict(),
        "modulation": m,
        "llm_usage": ultra.usage,
        "throughput_steps_per_s": {"ultra-ra": ultra.steps_per_second, "ppo": ppo.steps_per_second},
        "throughput_ratio": throughput_ratio,
        "wall_time_s": wall,
    }
    write_json(run_dir / "summary.json", summary)
    write_report(
        run_dir / "report.md", f"ultrarl demo: {DEMO_ENV}", evaluations, ultra.states, ultra.usage, m,
        notes=[f"refinement throughput ratio ULTRA-RA / PPO: {throughput_ratio:.2f}", f"wall time {wall:.0f} s"],
    )
    return summary
