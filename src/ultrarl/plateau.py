"""``ultrarl plateau``: is an agent stuck, or merely under-trained? Continued training (its own
algorithm, SB3's update, no advice) for the refinement budget you plan, on a few seeds kept apart
from the ones methods are compared on; the gain over the agent as it is, per seed, with a 95%
bootstrap CI over seeds. With an expert, the verdict: stuck when even the CI's upper bound gains
less than ``stuck_fraction`` of the gap to the expert. Refining an agent that continued training
still improves measures the training, not the advice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ultrarl import run_dir as files
from ultrarl.envs.factory import validate_env_id
from ultrarl.evaluate.evaluation import evaluate_agent
from ultrarl.explain.fidelity import mean_ci
from ultrarl.refine.refiner import Refiner, load_checked_agent
from ultrarl.report.console import console
from ultrarl.settings import PlateauSettings
from ultrarl.stages import EVAL_SEED_OFFSET


def check_plateau(settings: PlateauSettings, run_dir: Path) -> dict[str, Any]:
    """Continued training on every seed; writes ``plateau.json`` and returns it."""
    validate_env_id(settings.env_id)
    eval_seed = settings.seed + EVAL_SEED_OFFSET  # the same episodes before, after and for the expert
    agent = load_checked_agent(settings.agent, settings.env_id)
    before = evaluate_agent(agent, settings.env_id, settings.eval_episodes, eval_seed)
    console.print(f"agent as it is: {before.summary()}")
    runs = []
    for index, seed in enumerate(settings.seed_list, 1):
        refiner = Refiner(agent, settings.env_id, method="ppo", seed=seed).refine(settings.timesteps)
        after = evaluate_agent(refiner.agent, settings.env_id, settings.eval_episodes, eval_seed)
        runs.append({"seed": seed, "after": after.mean, "gain": after.mean - before.mean})
        console.print(f"[{index}/{len(settings.seed_list)}] continued training, seed {seed}: {after.summary()} "
                      f"(gain {after.mean - before.mean:+.2f})")
    gain = mean_ci(np.array([r["gain"] for r in runs]))
    result: dict[str, Any] = {"env_id": settings.env_id, "agent": settings.agent, "timesteps": settings.timesteps,
                              "eval_episodes": settings.eval_episodes, "eval_seed": eval_seed,
                              "before": before.mean, "runs": runs, "gain": gain}
    if settings.expert is not None:
        expert = evaluate_agent(load_checked_agent(settings.expert, settings.env_id), settings.env_id,
                                settings.eval_episodes, eval_seed)
        gap = expert.mean - before.mean
        stuck = gap > 0 and gain["high"] < settings.stuck_fraction * gap
        result.update(expert=expert.mean, gap=gap, stuck_fraction=settings.stuck_fraction, stuck=stuck)
    files.write_json(run_dir / files.PLATEAU, result)
    console.print(_verdict(result))
    return result


def _verdict(result: dict[str, Any]) -> str:
    gain = result["gain"]
    line = (f"continued training gains {gain['point']:+.2f} [{gain['low']:+.2f}, {gain['high']:+.2f}] "
            f"(95% CI over {len(result['runs'])} seeds) in {result['timesteps']} steps")
    if "stuck" not in result:
        return line + "; give --expert to judge it against the gap to a strong policy"
    share = f"{result['stuck_fraction']:.0%} of the gap to the expert ({result['gap']:+.1f})"
    return line + (f": stuck (its upper bound is below {share})" if result["stuck"]
                   else f": not stuck (continued training may still close more than {share})")
