"""``ultrarl demo``: the stuck-agent story on MountainCarContinuous-v0 in a few minutes on 2 CPU
cores, offline.

PPO with SB3's defaults learns to stand still on MountainCar (the engine costs energy, the flag
is never found): a stuck agent, not an under-trained one. The demo trains one, then refines it
on the same budget and seed three ways: continued PPO (the baseline), ULTRA-RA with the embedded
LLM, and the expert oracle (an expert policy as the advisor: what good advice does, an upper
bound, not a competitor). All four are evaluated without guidance on the same episodes. The
stuck agent and the expert are made once and reused while their settings stay the same.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ultrarl.experts import EXPERT_SEED, pumping_expert
from ultrarl.pipeline import RefineOutcome, pretrain, refine_agent
from ultrarl.report.console import console, critical_states_table, returns_table
from ultrarl.report.markdown import write_report
from ultrarl.run_dir import write_json
from ultrarl.settings import PretrainSettings, RefineSettings

DEMO_ENV = "MountainCarContinuous-v0"
DEMO_SEED = 0
PRETRAIN_STEPS = 30_000
REFINE_STEPS = 20_480
EPISODES = 4
TOKEN_BUDGET = 1500  # the embedded model reads ~170 prompt tokens/s on 2 cores
EVAL_EPISODES = 20


def _made_once(path: Path, wanted: dict[str, object], make: object, what: str) -> Path:
    """``path`` made by ``make(path)`` unless a stamp says it was made with ``wanted`` before."""
    stamp = path.with_suffix(".json")
    if path.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        console.print(f"reusing {what} in {path}")
    else:
        make(path)  # type: ignore[operator]
        write_json(stamp, wanted)
    return path


def _refined(method: str, run_dir: Path, common: dict[str, object]) -> RefineOutcome:
    method_dir = run_dir / method
    shutil.rmtree(method_dir, ignore_errors=True)
    method_dir.mkdir()
    return refine_agent(RefineSettings(method=method, **common), method_dir)  # type: ignore[arg-type]


def run_demo(run_dir: Path, llm: str = "local") -> dict[str, object]:
    start = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]1/5[/] a stuck PPO agent on {DEMO_ENV} (SB3 defaults, {PRETRAIN_STEPS} steps) ...")
    agent = _made_once(run_dir / "agent.zip", {"env_id": DEMO_ENV, "seed": DEMO_SEED, "timesteps": PRETRAIN_STEPS},
                       lambda out: pretrain(PretrainSettings(env_id=DEMO_ENV, timesteps=PRETRAIN_STEPS,
                                                             seed=DEMO_SEED, out=str(out))), "the stuck agent")
    console.print("[bold]2/5[/] the oracle's expert: a policy fitted to the pumping controller a = sign(velocity) ...")
    expert = _made_once(run_dir / "expert.zip", {"controller": "sign(velocity)", "seed": EXPERT_SEED},
                        pumping_expert, "the expert")
    common = dict(env_id=DEMO_ENV, agent=str(agent), seed=DEMO_SEED, episodes=EPISODES, llm={"model": llm},
                  token_budget=TOKEN_BUDGET, timesteps=REFINE_STEPS, eval_episodes=EVAL_EPISODES, expert=str(expert))
    console.print("[bold]3/5[/] continued PPO on the same budget and seed (the baseline) ...")
    ppo = _refined("ppo", run_dir, common)
    console.print("[bold]4/5[/] ULTRA-RA: the embedded LLM explains the agent's episodes, its advice guides refinement ...")
    ultra = _refined("ultra-ra", run_dir, common)
    console.print("[bold]5/5[/] the oracle: the same machinery with an expert as the advisor (an upper bound) ...")
    oracle = _refined("oracle", run_dir, common)
    return _summarise(run_dir, ultra, ppo, oracle, time.perf_counter() - start)


def _summarise(
    run_dir: Path, ultra: RefineOutcome, ppo: RefineOutcome, oracle: RefineOutcome, wall: float
) -> dict[str, object]:
    console.print(critical_states_table(ultra.states, limit=6))
    evaluations = {"stuck agent": ultra.before, "continued PPO": ppo.after, "ULTRA-RA (embedded LLM)": ultra.after,
                   "oracle (expert advice; upper bound)": oracle.after}
    console.print(returns_table(evaluations))
    usage = ultra.usage
    console.print(
        f"LLM calls {usage['calls']}, cache hits {usage['cache_hits']}, failures {usage['failures']}; the oracle "
        f"executed the expert's action on {oracle.modulation['override_rate']:.1%} of its refinement steps. "
        "The embedded 135M model proves the pipeline, not insight: --llm openai:MODEL asks a real one. "
        f"Demo wall time {wall:.0f} s; everything is in {run_dir}/"
    )
    summary = {
        "env_id": DEMO_ENV,
        "before": ultra.before.to_dict(),
        "after_ppo": ppo.after.to_dict(),
        "after_ultra_ra": ultra.after.to_dict(),
        "after_oracle": oracle.after.to_dict(),
        "modulation": {"ultra-ra": ultra.modulation, "oracle": oracle.modulation},
        "llm_usage": usage,
        "throughput_steps_per_s": {"ppo": ppo.steps_per_second, "ultra-ra": ultra.steps_per_second,
                                   "oracle": oracle.steps_per_second},
        "wall_time_s": wall,
    }
    write_json(run_dir / "summary.json", summary)
    write_report(run_dir / "report.md", f"ultrarl demo: a stuck agent on {DEMO_ENV}", evaluations, ultra.states,
                 usage, ultra.modulation, notes=[f"wall time {wall:.0f} s"])
    return summary
