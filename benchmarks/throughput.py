"""Refinement throughput and LLM cost, measured side by side in one process.

1. Env steps per second of ULTRA-RA refinement against plain SB3 PPO continued training on the
   same agent, environment and budget, interleaved ``--repeats`` times (ABAB...) so that load
   on a shared machine hits both alike; reported as a ratio (median of the repeats).
2. LLM calls, tokens and wall time of the identification stage with an empty cache, then
   again with the cache it filled.

    .venv/bin/python benchmarks/throughput.py --env Hopper-v5 --timesteps 10240 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ultrarl.methods import get_method
from ultrarl.pipeline import pretrain
from ultrarl.refine.refiner import Refiner, load_checked_agent
from ultrarl.settings import PretrainSettings, RefineSettings
from ultrarl.stages import identify


def _steps_per_second(agent: Path, env_id: str, method: str, table, timesteps: int, seed: int) -> float:  # type: ignore[no-untyped-def]
    # No critical-state starts: the per-step cost of the modulation alone.
    refiner = Refiner(agent, env_id, method=method, guidance=table, seed=seed, reset_prob=0.0)
    start = time.perf_counter()
    refiner.refine(timesteps)
    return timesteps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--agent", type=Path, default=None, help="an SB3 PPO zip (default: pretrain 30k steps)")
    parser.add_argument("--timesteps", type=int, default=10_240)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--token-budget", type=int, default=1500)
    parser.add_argument("--llm", default="local")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        agent = args.agent
        if agent is None:
            agent = work / "agent.zip"
            pretrain(PretrainSettings(env_id=args.env, timesteps=30_000, seed=0, out=str(agent)), progress_bar=False)
        settings = RefineSettings(env_id=args.env, agent=str(agent), episodes=args.episodes, eval_episodes=2,
                                  token_budget=args.token_budget,
                                  llm={"model": args.llm, "cache_dir": str(work / "cache")})
        loaded = load_checked_agent(agent, args.env)
        costs = {}
        for label in ("empty cache", "warm cache"):
            run_dir = work / label.replace(" ", "-")
            run_dir.mkdir()
            start = time.perf_counter()
            outcome = identify(settings, get_method("ultra-ra"), run_dir, loaded)
            costs[label] = (outcome.usage, time.perf_counter() - start)
        table = outcome.table

        ppo, ultra = [], []
        for _ in range(args.repeats):
            ppo.append(_steps_per_second(agent, args.env, "ppo", None, args.timesteps, 0))
            ultra.append(_steps_per_second(agent, args.env, "ultra-ra", table, args.timesteps, 0))
        ratios = [u / p for u, p in zip(ultra, ppo)]

    print(f"\nrefinement throughput on {args.env}, {args.timesteps} steps x {args.repeats} repeats, interleaved:")
    print(f"  plain PPO  : {' '.join(f'{v:.0f}' for v in ppo)} steps/s")
    print(f"  ULTRA-RA   : {' '.join(f'{v:.0f}' for v in ultra)} steps/s")
    print(f"  ratio ULTRA-RA / PPO: median {statistics.median(ratios):.3f} "
          f"(repeats {' '.join(f'{r:.3f}' for r in ratios)}); guidance table {len(table)} entries")
    print(f"\nidentification stage ({args.episodes} episodes, token budget {args.token_budget}, LLM {args.llm}):")
    for label, (usage, wall) in costs.items():
        print(f"  {label:12s}: {usage['calls']} calls, {usage['cache_hits']} cache hits, "
              f"{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens, "
              f"LLM wall {usage['wall_time_s']:.1f} s, stage wall {wall:.1f} s")


if __name__ == "__main__":
    main()
