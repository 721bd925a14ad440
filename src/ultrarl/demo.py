"""``ultrarl demo``: the stuck-agent story on MountainCarContinuous-v0 in a few minutes on 2 CPU
cores, offline.

PPO with SB3's defaults learns to stand still on MountainCar (the engine costs energy, the flag
is never found): a stuck agent, not an under-trained one. The demo trains one, then refines it
on the same budget and seed four ways: continued PPO (the baseline), ULTRA-RA with the embedded
LLM, and two upper bounds with an expert policy as the advisor: the offline oracle, asked once
and read through ULTRA-RA's own channel (what ULTRA makes of good advice), and the live oracle,
asked at every visited state (what the machinery makes of it). All five are evaluated without
guidance on the same episodes. The stuck agent and the expert are made once and reused while
their settings stay the same.
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


# The refinements, each on the same budget and seed, in the order they run.
DEMO_METHODS = {
    "ppo": "continued PPO on the same budget and seed (the baseline)",
    "ultra-ra": "ULTRA-RA: the embedded LLM explains the agent's episodes once, its advice guides refinement",
    "oracle-offline": "the offline oracle: an expert answers in the LLM's place, once, through ULTRA-RA's channel "
                      "(an upper bound)",
    "oracle": "the live oracle: the expert asked at every visited state (the machinery's upper bound)",
}
LABELS = {"ppo": "continued PPO", "ultra-ra": "ULTRA-RA (embedded LLM)",
          "oracle-offline": "oracle-offline (expert asked once; upper bound of ULTRA's channel)",
          "oracle": "oracle (expert asked live; upper bound of the machinery)"}


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
    stages = 2 + len(DEMO_METHODS)
    console.print(f"[bold]1/{stages}[/] a stuck PPO agent on {DEMO_ENV} (SB3 defaults, {PRETRAIN_STEPS} steps) ...")
    agent = _made_once(run_dir / "agent.zip", {"env_id": DEMO_ENV, "seed": DEMO_SEED, "timesteps": PRETRAIN_STEPS},
                       lambda out: pretrain(PretrainSettings(env_id=DEMO_ENV, timesteps=PRETRAIN_STEPS,
                                                             seed=DEMO_SEED, out=str(out))), "the stuck agent")
    console.print(f"[bold]2/{stages}[/] the oracle's expert: a policy fitted to the pumping controller "
                  "a = sign(velocity) ...")
    expert = _made_once(run_dir / "expert.zip", {"controller": "sign(velocity)", "seed": EXPERT_SEED},
                        pumping_expert, "the expert")
    common = dict(env_id=DEMO_ENV, agent=str(agent), seed=DEMO_SEED, episodes=EPISODES, llm={"model": llm},
                  token_budget=TOKEN_BUDGET, timesteps=REFINE_STEPS, eval_episodes=EVAL_EPISODES, expert=str(expert))
    outcomes = {}
    for step, (method, what) in enumerate(DEMO_METHODS.items(), start=3):
        console.print(f"[bold]{step}/{stages}[/] {what} ...")
        outcomes[method] = _refined(method, run_dir, common)
    return _summarise(run_dir, outcomes, time.perf_counter() - start)


def _summarise(run_dir: Path, outcomes: dict[str, RefineOutcome], wall: float) -> dict[str, object]:
    ultra, oracle = outcomes["ultra-ra"], outcomes["oracle"]
    console.print(critical_states_table(ultra.states, limit=6))
    evaluations = {"stuck agent": ultra.before, **{LABELS[m]: o.after for m, o in outcomes.items()}}
    console.print(returns_table(evaluations))
    usage, trust = ultra.usage, ultra.modulation
    console.print(
        f"LLM calls {usage['calls']}, cache hits {usage['cache_hits']}, failures {usage['failures']}. ULTRA-RA "
        f"executed {trust['plans_executed']} plans of the LLM's advice, {trust['plans_beat_agent']} beat the agent; "
        f"it imitated {trust['imitated_steps']} executed steps and dropped {trust['entries_dropped']} of "
        f"{trust['entries']} table entries whose advice never beat the agent. The live oracle executed the "
        f"expert's action on {oracle.modulation['override_rate']:.1%} of its refinement steps. "
        "The embedded 135M model proves the pipeline, not insight: --llm openai:MODEL asks a real one. "
        f"Demo wall time {wall:.0f} s; everything is in {run_dir}/"
    )
    summary = {
        "env_id": DEMO_ENV,
        "before": ultra.before.to_dict(),
        **{f"after_{m.replace('-', '_')}": o.after.to_dict() for m, o in outcomes.items()},
        "modulation": {m: o.modulation for m, o in outcomes.items() if m != "ppo"},
        "llm_usage": usage,
        "throughput_steps_per_s": {m: o.steps_per_second for m, o in outcomes.items()},
        "wall_time_s": wall,
    }
    write_json(run_dir / "summary.json", summary)
    write_report(run_dir / "report.md", f"ultrarl demo: a stuck agent on {DEMO_ENV}", evaluations, ultra.states,
                 usage, ultra.modulation, notes=[f"wall time {wall:.0f} s"])
    return summary
