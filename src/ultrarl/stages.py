"""The pipeline's stages as functions of the settings and a run directory: each reads what it
needs, writes its files (names from ``ultrarl.run_dir``) and returns what the next one needs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import PPO

from ultrarl import run_dir as files
from ultrarl.envs.rollout import Trajectory, collect_trajectories, save_trajectories
from ultrarl.envs.snapshot import Snapshot
from ultrarl.errors import UltraRLError
from ultrarl.evaluate.evaluation import EvalResult, evaluate_agent
from ultrarl.explain.baselines import corrupt_advice
from ultrarl.explain.explainer import CriticalState, Explainer, write_explanations
from ultrarl.explain.identify import IdentifyContext, identify_critical_states
from ultrarl.explain.oracle import expert_advisor
from ultrarl.explain.prompts import PROMPT_VERSION
from ultrarl.guidance.table import GuidanceTable, reward_scale
from ultrarl.guidance.verify import verify_suggestions
from ultrarl.interpret.describer import StateDescriber
from ultrarl.llm.factory import make_llm_client
from ultrarl.llm.ledger import UsageLedger
from ultrarl.methods import Method
from ultrarl.refine.modulation import Advisor
from ultrarl.refine.refiner import load_checked_agent
from ultrarl.report.console import console
from ultrarl.report.frames import save_critical_frames
from ultrarl.settings import ExplainSettings, IdentifySettings

EVAL_SEED_OFFSET = 10_000  # evaluation episodes never reuse the seeds of explained episodes


@dataclass
class Identification:
    """What the identification stage leaves for refinement."""

    states: list[CriticalState]
    table: GuidanceTable | None
    usage: dict[str, float]
    trajectories: list[Trajectory] = field(default_factory=list)
    advisor: Advisor | None = None


def evaluate_before(agent: PPO, settings: ExplainSettings, done: EvalResult | None = None) -> EvalResult:
    """The agent as it is, on the run's evaluation episodes; ``done`` is that evaluation made
    elsewhere (checked to be of these episodes), which then need not run again."""
    if done is not None and not is_evaluation_for(done, settings):
        raise UltraRLError(f"the evaluation given for the agent as it is ({done.episodes} episodes from seed "
                           f"{done.seed}) is not this run's")
    before = done or evaluate(agent, settings)
    console.print(f"[bold]agent before refinement[/]: {before.summary()}")
    return before


def is_evaluation_for(result: EvalResult, settings: ExplainSettings) -> bool:
    """Whether ``result`` was made on the episodes ``evaluate`` runs for these settings."""
    return (result.episodes, result.seed, result.deterministic) == (
        settings.eval_episodes, settings.seed + EVAL_SEED_OFFSET, True)


def evaluate(agent: PPO, settings: ExplainSettings) -> EvalResult:
    return evaluate_agent(agent, settings.env_id, settings.eval_episodes, settings.seed + EVAL_SEED_OFFSET)


def make_describer(settings: ExplainSettings, agent: PPO) -> StateDescriber:
    """The environment's describer; names and context from the settings override the built-in ones."""
    context = None
    if settings.env_context is not None:
        try:
            context = Path(settings.env_context).read_text().strip()
        except OSError as exc:
            raise UltraRLError(f"cannot read env_context {settings.env_context}: {exc.strerror}") from exc
    return StateDescriber(
        settings.env_id, agent.observation_space, agent.action_space,
        feature_names=settings.feature_names, action_names=settings.action_names, context=context,
    )


def identify(settings: ExplainSettings, method: Method, run_dir: Path, agent: PPO) -> Identification:
    """Collect episodes, find their critical states (LLM, mask network, random, expert), verify
    the suggestions if asked, build the guidance table; write it all to ``run_dir``."""
    start = time.perf_counter()
    trajectories = []
    if method.identify != "none":
        console.print(f"collecting {settings.episodes} episodes of {settings.env_id} ...")
        trajectories = collect_trajectories(agent, settings.env_id, settings.episodes, settings.seed,
                                            deterministic=settings.deterministic_rollouts,
                                            keep_snapshots=settings.needs_snapshots)
        save_trajectories(trajectories, run_dir / files.TRAJECTORIES)
    ctx = _context(settings, agent, trajectories, run_dir, method)
    states = identify_critical_states(method.identify, ctx)
    if isinstance(settings, IdentifySettings) and method.suggests and trajectories:
        states = corrupt_advice(states, ctx.describer.action_space, settings.advice_noise,
                                settings.guidance.plan_steps, settings.seed)
    usage = ctx.explainer.llm.ledger.to_dict() if ctx.explainer else UsageLedger().to_dict()
    states = _checked(settings, method, states, trajectories, agent, run_dir)
    table = GuidanceTable.from_explanations(states, trajectories, settings.guidance) if method.guided else None
    if table is not None and len(table):
        ctx.details["predicted_match_rate"] = _predicted_match_rate(table, trajectories, method)
    _write_identification(settings, method, run_dir, ctx, states, table, usage, time.perf_counter() - start)
    if method.identify != "none":
        console.print(f"{len(states)} critical states identified ({method.identify}) in "
                      f"{time.perf_counter() - start:.1f} s"
                      + (f"; guidance table: {table.summary()}" if table else ""))
    advisor = expert_advisor(ctx.expert) if ctx.expert is not None and method.live_advisor else None
    return Identification(states, table, usage, trajectories, advisor)


def _context(
    settings: ExplainSettings, agent: PPO, trajectories: list[Trajectory], run_dir: Path, method: Method
) -> IdentifyContext:
    describer = make_describer(settings, agent) if trajectories else None
    ctx = IdentifyContext(agent, settings.env_id, trajectories, describer, settings.critical_steps,  # type: ignore[arg-type]
                          settings.seed)
    ctx.plan_steps = settings.guidance.plan_steps
    ctx.expert_plans = method.plays_expert_plans
    if isinstance(settings, IdentifySettings):
        ctx.mask_timesteps, ctx.mask_alpha = settings.mask_timesteps, settings.mask_alpha
        if method.identify == "expert" and settings.expert is not None:  # a missing one: the identifier says so
            ctx.expert = load_checked_agent(settings.expert, settings.env_id)
    if method.asks_llm:
        llm = make_llm_client(settings.llm, seed=settings.seed)
        ctx.explainer = Explainer(llm, describer, k=settings.critical_steps,  # type: ignore[arg-type]
                                  token_budget=settings.token_budget, plan_steps=settings.guidance.plan_steps)
        ctx.on_episode = _progress_printer(ctx, run_dir)
        console.print(f"asking the LLM ({llm.spec}) for critical states ...")
    return ctx


def _progress_printer(ctx: IdentifyContext, run_dir: Path):  # type: ignore[no-untyped-def]
    """Prints each explained episode and rewrites the explain progress CSV."""
    rows: list[dict[str, Any]] = []
    by_episode = {t.episode: t for t in ctx.trajectories}

    def on_episode(episode: int, states: list[CriticalState]) -> None:
        assert ctx.explainer is not None
        t, usage = by_episode[episode], ctx.explainer.llm.ledger.to_dict()
        rows.append({"episode": episode, "length": t.length, "return": t.episode_return,
                     "critical_states": len(states), "llm_calls": usage["calls"],
                     "llm_cache_hits": usage["cache_hits"], "llm_failures": usage["failures"]})
        files.write_csv(run_dir / files.EXPLAIN_PROGRESS, rows, list(rows[0]))
        console.print(f"  episode {len(rows)}/{len(by_episode)}: {t.length} steps, return {t.episode_return:.1f}, "
                      f"{len(states)} critical states (LLM calls {usage['calls']}, cache hits "
                      f"{usage['cache_hits']}, failures {usage['failures']})")

    return on_episode


def _checked(
    settings: ExplainSettings, method: Method, states: list[CriticalState], trajectories: list[Trajectory],
    agent: PPO, run_dir: Path,
) -> list[CriticalState]:
    """``--verify`` (LLM suggestions only) and ``--save-frames``."""
    if settings.verify.enabled and method.asks_llm and states:
        console.print(f"verifying {len(states)} suggestions with short rollouts ...")
        states, report = verify_suggestions(states, trajectories, agent, settings.env_id, settings.verify,
                                            reward_scale=reward_scale(trajectories), seed=settings.seed)
        files.write_json(run_dir / files.VERIFY, report.to_dict())
        console.print(f"  kept {report.kept}, dropped {report.dropped} (not significantly better than the "
                      "agent's own action)")
    if settings.save_frames and states:
        states, problems = save_critical_frames(settings.env_id, trajectories, states, run_dir / files.FRAMES)
        for problem in problems[:5]:
            console.print(f"[yellow]note[/]: no picture: {problem}")
    return states


def _write_identification(
    settings: ExplainSettings, method: Method, run_dir: Path, ctx: IdentifyContext, states: list[CriticalState],
    table: GuidanceTable | None, usage: dict[str, float], wall_s: float,
) -> None:
    write_explanations(states, run_dir / files.EXPLANATIONS)
    if table is not None:
        table.save(run_dir / files.GUIDANCE)
    if "mask_network" in ctx.artifacts:
        files.write_model(run_dir / files.MASK_NETWORK, ctx.artifacts["mask_network"])
    files.write_json(run_dir / files.LLM_USAGE, usage)
    files.write_json(run_dir / files.IDENTIFY, {"method": method.name, "identify": method.identify,
                                                "identify_wall_time_s": wall_s, **ctx.details})
    extra: dict[str, Any] = {"identification": method.identify}
    if ctx.explainer is not None:
        backend = ctx.explainer.llm.backend
        extra.update(prompt_version=PROMPT_VERSION, llm_config=backend.config,
                     llm_prompt_threads=getattr(backend, "prompt_threads", None),  # local models only
                     llm_cache_keys=[ctx.explainer.cache_keys[t.episode] for t in ctx.trajectories])
    llm = ctx.explainer.llm.spec if ctx.explainer else None
    files.write_json(run_dir / files.MANIFEST, files.manifest(settings.seed, llm, extra))
    if method.asks_llm and not states:
        console.print("[yellow]warning[/]: no usable critical state (unusable LLM answers, or all dropped by "
                      "--verify); the guidance table is empty")


LOW_MATCH_RATE = 0.001  # below this share of steps, advice rarely starts from a matched state


def _predicted_match_rate(table: GuidanceTable, trajectories: list[Trajectory], method: Method) -> float:
    """The share of the explained episodes' steps that match the table: about how often refinement
    will meet its advice outside critical-state starts. Printed, and a warning when it is too low
    for matched states to matter."""
    rate = float(np.mean(table.match(np.concatenate([t.observations for t in trajectories])) >= 0))
    console.print(f"the table matches {rate:.2%} of the explained episodes' steps")
    if rate < LOW_MATCH_RATE and method.override_actions:
        console.print(f"[yellow]warning[/]: under {LOW_MATCH_RATE:.1%} of steps match: advice will start almost only "
                      "from critical-state starts (--reset-prob); --epsilon-quantile or --epsilon widens the match")
    return rate


def reset_pool(states: list[CriticalState], trajectories: list[Trajectory]) -> list[Snapshot]:
    """The snapshots of the critical states, where the episodes kept them."""
    by_episode = {t.episode: t for t in trajectories}
    return [by_episode[s.episode].snapshots[s.step] for s in states  # type: ignore[index]
            if s.episode in by_episode and by_episode[s.episode].snapshots is not None]
