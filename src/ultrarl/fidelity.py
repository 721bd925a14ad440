"""``ultrarl fidelity``: how critical are an advisor's critical states, and how good its advice?

Each advisor (a method's identifier: an LLM, the mask network, random steps, the expert) explains
the same episodes of the same agent (same seed); every critical state is then measured by
counterfactual rollouts from its snapshot (``ultrarl.explain.fidelity``). Each advisor's run sits
in its own folder (``<run-dir>/<advisor>/``: explanations, LLM usage, fidelity.jsonl with the
per-state figures); the table of all of them is ``fidelity.json`` and ``fidelity.md``. A killed
run resumes advisor by advisor; a re-run with the LLM cache asks the LLM nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from stable_baselines3 import PPO

from ultrarl import run_dir as files
from ultrarl.envs.factory import validate_env_id
from ultrarl.envs.snapshot import require_snapshots
from ultrarl.explain.fidelity import StateFidelity, measure_fidelity, summarize
from ultrarl.methods import Method
from ultrarl.refine.refiner import load_checked_agent
from ultrarl.report.console import console
from ultrarl.report.fidelity_table import fidelity_console_table, fidelity_markdown
from ultrarl.resume import check_resumable
from ultrarl.settings import FidelityRunSettings, settings_to_yaml
from ultrarl.stages import identify


def run_fidelity(settings: FidelityRunSettings, run_dir: Path, resume: bool = False) -> dict[str, dict[str, Any]]:
    """Identify with every advisor, measure every critical state, write and print the table."""
    validate_env_id(settings.env_id)
    require_snapshots(settings.env_id, "ultrarl fidelity")
    if resume:
        check_resumable(run_dir, settings)
    files.write_text_atomic(run_dir / files.STARTED, settings_to_yaml(settings))
    agent = load_checked_agent(settings.agent, settings.env_id)
    summaries: dict[str, dict[str, Any]] = {}
    for method in settings.advisor_methods:
        advisor_dir = run_dir / method.name
        finished = advisor_dir / files.FIDELITY
        if resume and finished.exists():
            console.print(f"{method.name}: measured before; reading {finished}")
            summaries[method.name] = files.read_json(finished)
            continue
        advisor_dir.mkdir(exist_ok=True)
        summaries[method.name] = _advisor(settings, method, advisor_dir, agent)
    title = f"Fidelity of the advisors on {settings.env_id}"
    files.write_json(run_dir / files.FIDELITY, summaries)
    files.write_text_atomic(run_dir / files.FIDELITY_MD, fidelity_markdown(summaries, title, legend(settings)))
    console.print(fidelity_console_table(summaries, title))
    files.write_text_atomic(run_dir / files.CONFIG, settings_to_yaml(settings))  # last: marks a finished run
    return summaries


def _advisor(settings: FidelityRunSettings, method: Method, advisor_dir: Path, agent: PPO) -> dict[str, Any]:
    console.print(f"[bold]{method.name}[/]: identifying critical states ...")
    found = identify(settings, method, advisor_dir, agent)
    start = time.perf_counter()
    total = len(found.states)

    def on_state(done: int, record: StateFidelity) -> None:
        gain = f", advice gain {record.advice_gain:+.3g}" if record.advice_gain is not None else ""
        console.print(f"  {method.name}: state {done}/{total} (episode {record.episode}, step {record.step}): "
                      f"drop {record.drop:+.3g} vs {record.control_drop:+.3g} at a random step{gain}")

    records = measure_fidelity(found.states, found.trajectories, agent, settings.env_id, settings.fidelity,
                               settings.seed, method.suggests, on_state=on_state, advisor=found.advisor)
    by_step = {(s.episode, s.step): s for s in found.states}
    files.write_text_atomic(advisor_dir / files.FIDELITY_STATES, "".join(
        json.dumps({**by_step[(r.episode, r.step)].model_dump(mode="json", exclude={"frame"}),
                    "fidelity": r.to_dict()}) + "\n" for r in records))
    summary = {**summarize(records), "measure_wall_time_s": time.perf_counter() - start}
    files.write_json(advisor_dir / files.FIDELITY, summary)
    return summary


def legend(settings: FidelityRunSettings) -> str:
    f = settings.fidelity
    return (f"Agent {settings.agent}, seed {settings.seed}, {settings.episodes} explained episodes (the same for "
            f"every advisor), {settings.critical_steps} critical steps each. Per state, {f.samples} paired rollouts "
            f"of {f.horizon} steps with common random numbers. Drop: return of the agent's own action minus return "
            f"of {f.perturb_steps} random actions, each then followed by the agent's policy; criticality: drop at "
            f"the advisor's states minus drop at a uniformly random step of the same episode. Advice gain: return "
            f"of the suggestion{_followed(f.follow_steps)} minus return of the agent's own action; a suggestion "
            f"helps when its gain exceeds {f.z:g} standard errors. Random action's gain: the same with "
            f"{f.follow_steps} uniformly random action(s) instead of the suggestion (same pairs), the control; "
            f"advice over random: advice gain minus that, per state. "
            f"Intervals: 95% bootstrap over states; * excludes 0.")


def _followed(steps: int) -> str:
    return "" if steps == 1 else (f" followed for {steps} steps (the expert asked at each state it reaches; an "
                                  f"LLM's suggestion held)")
