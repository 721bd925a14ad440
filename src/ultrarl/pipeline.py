"""The stages wired together: pretrain, explain (collect -> describe -> LLM -> guidance),
refine (explain -> PPO with modulation -> evaluate). The CLI and the demo call these."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger

from ultrarl.config import ExplainSettings, RefineSettings, method_defaults, settings_to_yaml
from ultrarl.envs.factory import check_agent_spaces, make_vec_env, validate_env_id
from ultrarl.envs.rollout import Trajectory, collect_trajectories, save_trajectories
from ultrarl.envs.snapshot import Snapshot, require_snapshots
from ultrarl.errors import UltraRLError
from ultrarl.evaluate.evaluation import EvalResult, evaluate_agent
from ultrarl.explain.baselines import mask_critical_states, random_critical_states
from ultrarl.explain.explainer import CriticalState, Explainer, read_explanations, write_explanations
from ultrarl.explain.frames import save_critical_frames
from ultrarl.explain.mask_network import train_mask_network
from ultrarl.explain.oracle import ORACLE_LABEL, oracle_critical_states
from ultrarl.explain.prompts import PROMPT_VERSION, EpisodePrompt, build_episode_prompt
from ultrarl.guidance.table import GuidanceTable, reward_scale
from ultrarl.guidance.verify import verify_suggestions
from ultrarl.interpret.describer import StateDescriber
from ultrarl.llm.factory import make_llm_client, token_counter
from ultrarl.llm.ledger import UsageLedger
from ultrarl.refine.checkpoint import latest_checkpoint, remove_checkpoints
from ultrarl.refine.refiner import GUIDED_METHODS, RESET_METHODS, ULTRA_METHODS, Refiner, check_method, load_agent
from ultrarl.report.console import console
from ultrarl.report.markdown import write_report
from ultrarl.run_dir import STARTED_MARKER, manifest, write_bytes_atomic, write_json, write_text_atomic

EVAL_SEED_OFFSET = 10_000  # evaluation episodes never reuse the seeds of explained episodes


def pretrain(env_id: str, timesteps: int, seed: int, out: Path, progress_bar: bool = True) -> PPO:
    """A PPO agent with SB3's default hyperparameters and a small budget: a sub-optimal agent."""
    validate_env_id(env_id)
    if timesteps <= 0:
        raise UltraRLError(f"--timesteps must be positive, got {timesteps}")
    env = make_vec_env(env_id, n_envs=1, seed=seed)
    agent = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0)
    agent.set_logger(Logger(None, []))  # SB3's default logger would create a folder in /tmp
    agent.learn(total_timesteps=timesteps, progress_bar=progress_bar)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    agent.save(buffer)
    write_bytes_atomic(out, buffer.getvalue())
    return agent


@dataclass
class ExplainOutcome:
    trajectories: list[Trajectory]
    states: list[CriticalState]
    table: GuidanceTable
    usage: dict[str, float]
    before: EvalResult
    wall_time_s: float


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


def preview_prompts(settings: ExplainSettings) -> list[EpisodePrompt]:
    """``explain --dry-run``: the prompts the LLM would get, rendered; nothing is sent or written."""
    validate_env_id(settings.env_id)
    agent = load_agent(settings.agent)
    check_agent_spaces(agent.observation_space, agent.action_space, settings.env_id)
    count_tokens = token_counter(settings.llm)  # no client: a dry run needs no server and no key
    trajectories = collect_trajectories(
        agent, settings.env_id, settings.episodes, settings.seed, deterministic=settings.deterministic_rollouts
    )
    describer = make_describer(settings, agent)
    return [
        build_episode_prompt(t, describer, count_tokens, settings.critical_steps, settings.token_budget)
        for t in trajectories
    ]


def explain_agent(
    settings: ExplainSettings,
    run_dir: Path,
    agent: PPO | None = None,
    progress_name: str = "progress.csv",
    keep_snapshots: bool = False,
) -> ExplainOutcome:
    """Collect episodes, ask the LLM about each, build the guidance table; write it all down.
    With ``verify`` in the settings, each suggestion is checked by short rollouts first."""
    start = time.perf_counter()
    validate_env_id(settings.env_id)
    agent = agent or load_agent(settings.agent)
    check_agent_spaces(agent.observation_space, agent.action_space, settings.env_id)
    llm = make_llm_client(
        settings.llm,
        base_url=settings.llm_base_url,
        api_key_env=settings.llm_api_key_env,
        cache_dir=Path(settings.cache_dir) if settings.cache_dir else None,
        use_cache=settings.use_cache,
        max_tokens=settings.llm_max_tokens,
        seed=settings.seed,
        concurrency=settings.llm_concurrency,
        max_retries=settings.llm_max_retries,
        timeout_s=settings.llm_timeout_s,
        max_reasks=settings.llm_max_reasks,
        max_calls=settings.llm_max_calls,
        max_total_tokens=settings.llm_max_total_tokens,
    )
    before = evaluate_agent(agent, settings.env_id, settings.eval_episodes, settings.seed + EVAL_SEED_OFFSET)
    console.print(f"[bold]agent before refinement[/]: {before.summary()}")

    console.print(f"collecting {settings.episodes} episodes of {settings.env_id} ...")
    identify_start = time.perf_counter()
    verify = bool(getattr(settings, "verify", False))
    trajectories = collect_trajectories(
        agent, settings.env_id, settings.episodes, settings.seed, deterministic=settings.deterministic_rollouts,
        keep_snapshots=keep_snapshots or verify,
    )
    save_trajectories(trajectories, run_dir / "trajectories.npz")

    describer = make_describer(settings, agent)
    explainer = Explainer(llm, describer, k=settings.critical_steps, token_budget=settings.token_budget)
    rows: list[dict[str, float]] = []
    by_episode = {t.episode: t for t in trajectories}

    def on_episode(episode: int, states: list[CriticalState]) -> None:
        t = by_episode[episode]
        usage = llm.ledger.to_dict()
        rows.append(
            {"episode": episode, "length": t.length, "return": t.episode_return, "critical_states": len(states),
             "llm_calls": usage["calls"], "llm_cache_hits": usage["cache_hits"], "llm_failures": usage["failures"]}
        )
        console.print(
            f"  episode {len(rows)}/{len(trajectories)}: {t.length} steps, return {t.episode_return:.1f}, "
            f"{len(states)} critical states (LLM calls {usage['calls']}, cache hits {usage['cache_hits']}, "
            f"failures {usage['failures']})"
        )

    console.print(f"asking the LLM ({llm.spec}) for critical states ...")
    llm_start = time.perf_counter()
    states = explainer.explain(trajectories, on_episode=on_episode)
    llm.ledger.add_wall_time(time.perf_counter() - llm_start)
    if llm.budget_message:
        console.print(f"[yellow]note[/]: {llm.budget_message}")
    if verify and states:
        console.print(f"verifying {len(states)} suggestions with short rollouts ...")
        states, report = verify_suggestions(
            states, trajectories, agent, settings.env_id, samples=settings.verify_samples,  # type: ignore[attr-defined]
            horizon=settings.verify_horizon, reward_scale=reward_scale(trajectories), seed=settings.seed,  # type: ignore[attr-defined]
        )
        write_json(run_dir / "verify.json", report.to_dict())
        console.print(f"  kept {report.kept}, dropped {report.dropped} (no better than the agent's own action)")
    if settings.save_frames and states:
        states, problems = save_critical_frames(settings.env_id, trajectories, states, run_dir / "frames")
        for problem in problems[:5]:
            console.print(f"[yellow]note[/]: no picture: {problem}")
    table = GuidanceTable.from_explanations(
        states, trajectories, epsilon=settings.epsilon, epsilon_quantile=settings.epsilon_quantile
    )
    usage = llm.ledger.to_dict()
    write_explanations(states, run_dir / "explanations.jsonl")
    write_json(run_dir / "identify.json", {"method": "llm", "llm": llm.spec,
                                           "identify_wall_time_s": time.perf_counter() - identify_start})
    table.save(run_dir / "guidance.npz")
    write_json(run_dir / "llm_usage.json", usage)
    _write_csv(run_dir / progress_name, rows, list(rows[0]) if rows else ["episode"])
    keys = [explainer.cache_keys[t.episode] for t in trajectories]
    write_json(
        run_dir / "manifest.json",
        manifest(settings.seed, llm.spec, {"prompt_version": PROMPT_VERSION, "llm_cache_keys": keys}),
    )
    if not states:
        console.print("[yellow]warning[/]: no usable critical state (unusable LLM answers, or all dropped by "
                      "--verify); the guidance table is empty")
    return ExplainOutcome(trajectories, states, table, usage, before, time.perf_counter() - start)


@dataclass
class RefineOutcome:
    refiner: Refiner
    before: EvalResult
    after: EvalResult
    states: list[CriticalState]
    usage: dict[str, float]
    modulation: dict[str, float]
    refine_wall_time_s: float
    steps_per_second: float


STARTED_CONFIG = STARTED_MARKER  # the settings of a run in progress (config.yaml marks it finished)


def _explain_stage_on_disk(
    run_dir: Path,
) -> tuple[list[CriticalState], GuidanceTable | None, dict[str, float], EvalResult] | None:
    """What a killed run's explain stage left, if it finished (eval.json is written last)."""
    try:
        before = json.loads((run_dir / "eval.json").read_text())["before"]
        usage = json.loads((run_dir / "llm_usage.json").read_text())
        states = read_explanations(run_dir / "explanations.jsonl")
    except (OSError, KeyError, json.JSONDecodeError):
        return None
    table_path = run_dir / "guidance.npz"
    table = GuidanceTable.load(table_path) if table_path.exists() else None
    return states, table, usage, EvalResult(**before)


def _check_resumable(run_dir: Path, settings: RefineSettings) -> None:
    started = run_dir / STARTED_CONFIG
    if not started.exists():
        return
    previous = yaml.safe_load(started.read_text()) or {}
    current = settings.model_dump(mode="json")
    changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
    if changed:
        raise UltraRLError(
            f"--resume with other settings than the run in {run_dir} ({', '.join(changed)} differ); "
            "use the same command, or --overwrite to start again"
        )


def identify_without_llm(settings: RefineSettings, run_dir: Path, agent: PPO) -> ExplainOutcome:
    """The baselines' identification stage: mask network (statemask-r, rice), random steps
    (random) or the expert advisor (oracle). Episodes keep snapshots for the reset pool."""
    start = time.perf_counter()
    method = settings.method
    before = evaluate_agent(agent, settings.env_id, settings.eval_episodes, settings.seed + EVAL_SEED_OFFSET)
    console.print(f"[bold]agent before refinement[/]: {before.summary()}")
    identify_start = time.perf_counter()
    trajectories = collect_trajectories(
        agent, settings.env_id, settings.episodes, settings.seed, deterministic=settings.deterministic_rollouts,
        keep_snapshots=method in RESET_METHODS,
    )
    save_trajectories(trajectories, run_dir / "trajectories.npz")
    describer = make_describer(settings, agent)
    details: dict[str, Any] = {"method": method}
    table = None
    if method in ("statemask-r", "rice"):
        console.print(f"training the mask network for {settings.mask_timesteps} steps (alpha {settings.mask_alpha}) ...")
        mask = train_mask_network(agent, settings.env_id, settings.mask_timesteps, settings.mask_alpha, settings.seed)
        mask.model.save(run_dir / "mask_network.zip")
        details["mask_train_wall_time_s"] = mask.train_wall_time_s
        states = mask_critical_states(mask, trajectories, describer, settings.critical_steps)
    elif method == "random":
        states = random_critical_states(trajectories, describer, settings.critical_steps, settings.seed)
    else:
        if settings.expert is None:
            raise UltraRLError("--method oracle needs --expert PATH.zip, an expert SB3 PPO agent for the environment")
        expert = load_agent(settings.expert)
        check_agent_spaces(expert.observation_space, expert.action_space, settings.env_id)
        states = oracle_critical_states(expert, trajectories, describer, settings.critical_steps)
        table = GuidanceTable.from_explanations(
            states, trajectories, epsilon=settings.epsilon, epsilon_quantile=settings.epsilon_quantile
        )
        table.save(run_dir / "guidance.npz")
    details["identify_wall_time_s"] = time.perf_counter() - identify_start
    usage = UsageLedger().to_dict()
    write_explanations(states, run_dir / "explanations.jsonl")
    write_json(run_dir / "llm_usage.json", usage)
    write_json(run_dir / "identify.json", details)
    write_json(run_dir / "manifest.json", manifest(settings.seed, None, {"identification": method}))
    console.print(f"{len(states)} critical states identified by {method} in {details['identify_wall_time_s']:.1f} s")
    return ExplainOutcome(trajectories, states, table, usage, before, time.perf_counter() - start)


def _reset_pool(states: list[CriticalState], trajectories: list[Trajectory]) -> list[Snapshot]:
    by_episode = {t.episode: t for t in trajectories}
    pool = []
    for state in states:
        snapshots = by_episode[state.episode].snapshots
        if snapshots is not None:
            pool.append(snapshots[state.step])
    return pool


def _identify(
    settings: RefineSettings, run_dir: Path, agent: PPO, needs_snapshots: bool
) -> ExplainOutcome:
    method = settings.method
    if method == "ppo":
        # Continued PPO needs no identification: same budget, same seed, no guidance.
        before = evaluate_agent(agent, settings.env_id, settings.eval_episodes, settings.seed + EVAL_SEED_OFFSET)
        usage = UsageLedger().to_dict()
        write_explanations([], run_dir / "explanations.jsonl")
        write_json(run_dir / "llm_usage.json", usage)
        write_json(run_dir / "manifest.json", manifest(settings.seed, None))
        return ExplainOutcome([], [], None, usage, before, 0.0)
    if method in ULTRA_METHODS:
        return explain_agent(settings, run_dir, agent, progress_name="explain_progress.csv",
                             keep_snapshots=needs_snapshots)
    return identify_without_llm(settings, run_dir, agent)


def refine_agent(
    settings: RefineSettings, run_dir: Path, progress_bar: bool = True, resume: bool = False
) -> RefineOutcome:
    """Identify critical states (LLM, mask network, random or expert; none for ``ppo``), refine
    with the chosen method, evaluate before and after.

    With ``resume``, a run killed part-way continues: a finished identification stage is read
    back from the run directory (no LLM call) and refinement goes on from the latest checkpoint,
    so the total number of refinement steps is still ``settings.timesteps``.
    ULTRA with ``rounds`` > 1 repeats identify-then-refine, splitting the budget evenly.
    """
    method = check_method(settings.method)
    validate_env_id(settings.env_id)
    reset_prob, rnd_weight = method_defaults(settings)
    needs_snapshots = reset_prob > 0 or (settings.verify and method in ULTRA_METHODS)
    if needs_snapshots:
        require_snapshots(settings.env_id, f"--method {method}" + (" with --verify" if settings.verify else ""))
    if settings.rounds > 1 and method not in ULTRA_METHODS:
        raise UltraRLError(f"--rounds applies to ULTRA methods, not to {method}")
    checkpoint = None
    if resume:
        if settings.rounds > 1:
            raise UltraRLError("--resume does not support --rounds > 1 yet; run the rounds again with --overwrite")
        _check_resumable(run_dir, settings)
        checkpoint = latest_checkpoint(run_dir)
    else:
        remove_checkpoints(run_dir)
    write_text_atomic(run_dir / STARTED_CONFIG, settings_to_yaml(settings))
    agent = load_agent(settings.agent)
    check_agent_spaces(agent.observation_space, agent.action_space, settings.env_id)

    done = _explain_stage_on_disk(run_dir) if resume else None
    if done is not None and (method not in GUIDED_METHODS or done[1] is not None):
        states, table, usage, before = done
        trajectories = []
        if reset_prob > 0:  # snapshots live in memory only: re-collect the same seeded episodes
            trajectories = collect_trajectories(agent, settings.env_id, settings.episodes, settings.seed,
                                                deterministic=settings.deterministic_rollouts, keep_snapshots=True)
        console.print(f"resuming: identification read from {run_dir} ({len(states)} critical states, no LLM call)")
    else:
        outcome = _identify(settings, run_dir, agent, needs_snapshots)
        states, table, usage, before, trajectories = (outcome.states, outcome.table, outcome.usage, outcome.before,
                                                      outcome.trajectories)
        # Written last in the identification stage: a resume finds it complete or redoes it.
        write_json(run_dir / "eval.json", {"before": before.to_dict(), "after": None, "method": method})
    pool = _reset_pool(states, trajectories) if reset_prob > 0 else None
    if reset_prob > 0 and not pool:
        console.print("[yellow]warning[/]: no critical state to reset to; every episode starts at the default start")
        reset_prob = 0.0
    refiner_options: dict[str, Any] = dict(
        method=method, guidance=table, modulation=settings.modulation, seed=settings.seed, log_dir=run_dir,
        initial_states=pool, reset_prob=reset_prob, rnd_weight=rnd_weight,
    )

    if checkpoint is not None:
        _keep_progress_segment(run_dir, checkpoint.timesteps)
        refiner = Refiner.from_checkpoint(checkpoint, settings.env_id, **refiner_options)
        console.print(f"resuming refinement at step {checkpoint.timesteps} of {settings.timesteps}")
    else:
        refiner = Refiner(settings.agent, settings.env_id, **refiner_options)
    # The LLM's cost goes to the run's metrics too (first row of progress.csv, TensorBoard).
    for name in ("calls", "cache_hits", "parse_failures", "failures", "retries", "prompt_tokens",
                 "completion_tokens", "latency_s_p50", "latency_s_p95", "wall_time_s"):
        refiner.model.logger.record(f"llm/{name}", usage[name])
    label = ORACLE_LABEL if method == "oracle" else method
    start = time.perf_counter()
    budgets = _round_budgets(settings.timesteps, settings.rounds)
    episodes: list[tuple[int, float, int]] = []
    for round_index, budget in enumerate(budgets):
        if round_index > 0:
            # Identify again on the refined agent (new episodes), then refine it further.
            round_dir = run_dir / "rounds" / str(round_index)
            round_dir.mkdir(parents=True, exist_ok=True)
            round_settings = settings.model_copy(update={"seed": settings.seed + 1000 * round_index})
            outcome = _identify(round_settings, round_dir, refiner.model, needs_snapshots)
            states, table = states + outcome.states, outcome.table
            round_pool = _reset_pool(outcome.states, outcome.trajectories) if reset_prob > 0 else []
            refiner = Refiner(refiner.model, settings.env_id, **{
                **refiner_options, "guidance": table, "log_dir": round_dir,
                "initial_states": round_pool, "reset_prob": reset_prob if round_pool else 0.0,
            })
        console.print(f"refining with {label} for {budget - refiner.resumed_from} steps"
                      + (f" (round {round_index + 1} of {len(budgets)})" if len(budgets) > 1 else "") + " ...")
        refiner.refine(
            budget, progress_bar=progress_bar, checkpoint_dir=run_dir if len(budgets) == 1 else None,
            checkpoint_every=settings.checkpoint_every,
        )
        offset = sum(budgets[:round_index])  # each round's step counter starts at 0
        episodes += [(step + offset, ret, length) for step, ret, length in refiner.true_returns.episodes]
    wall = time.perf_counter() - start
    steps_run = settings.timesteps - refiner.resumed_from
    refiner.save(run_dir / "model.zip")
    _merge_progress_segments(run_dir)
    modulation = refiner.modulation_totals
    if method in GUIDED_METHODS and modulation["matched"] == 0:
        console.print(
            "[yellow]warning[/]: the guidance table never matched a state during refinement, so guidance had no "
            "effect; raise --epsilon-quantile or --epsilon"
        )
    after = evaluate_agent(refiner.model, settings.env_id, settings.eval_episodes, settings.seed + EVAL_SEED_OFFSET)
    write_json(run_dir / "eval.json", {"before": before.to_dict(), "after": after.to_dict(), "method": method})
    write_json(
        run_dir / "refine_summary.json",
        {"method": method, "label": label, "timesteps": settings.timesteps,
         "final_num_timesteps": int(refiner.model.num_timesteps) if len(budgets) == 1 else settings.timesteps,
         "resumed_from": refiner.resumed_from, "rounds": len(budgets), "reset_prob": reset_prob,
         "rnd_weight": rnd_weight, "reset_pool": len(pool or []), "wall_time_s": wall,
         "steps_per_second": steps_run / wall if wall > 0 else 0.0, "modulation": modulation},
    )
    _write_curve(run_dir / "episodes.csv", episodes)
    write_report(
        run_dir / "report.md", f"ultrarl refine: {label} on {settings.env_id}",
        {"before": before, f"after {method}": after}, states, usage,
        modulation if method in GUIDED_METHODS else None,
    )
    # config.yaml last: it marks a finished run (a directory holding one is not reused by accident).
    write_text_atomic(run_dir / "config.yaml", settings_to_yaml(settings))
    (run_dir / STARTED_CONFIG).unlink(missing_ok=True)
    remove_checkpoints(run_dir)  # the finished model.zip replaces them
    return RefineOutcome(refiner, before, after, states, usage, modulation, wall, steps_run / wall if wall else 0.0)


def _round_budgets(total: int, rounds: int) -> list[int]:
    base = total // rounds
    return [base] * (rounds - 1) + [total - base * (rounds - 1)]


_STEP_COLUMN = "time/total_timesteps"


def _keep_progress_segment(run_dir: Path, upto: int) -> None:
    """SB3's CSV logger truncates progress.csv when it opens it: keep the killed run's rows
    (up to the checkpoint; later ones are redone) in a segment file merged at the end."""
    current = run_dir / "progress.csv"
    if not current.exists():
        return
    rows, fields = _read_csv(current)
    rows = [r for r in rows if not r.get(_STEP_COLUMN) or float(r[_STEP_COLUMN]) <= upto]
    index = len(list(run_dir.glob("progress.segment-*.csv")))
    _write_csv(run_dir / f"progress.segment-{index:02d}.csv", rows, fields)
    current.unlink()


def _merge_progress_segments(run_dir: Path) -> None:
    segments = sorted(run_dir.glob("progress.segment-*.csv"))
    if not segments:
        return
    rows: list[dict[str, str]] = []
    fields: list[str] = []
    for path in [*segments, run_dir / "progress.csv"]:
        if path.exists():
            more, more_fields = _read_csv(path)
            rows += more
            fields += [f for f in more_fields if f not in fields]
    _write_csv(run_dir / "progress.csv", rows, fields)
    for path in segments:
        path.unlink()


def _read_csv(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader), list(reader.fieldnames or [])


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _write_curve(path: Path, episodes: list[tuple[int, float, int]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestep", "episodic_return", "episode_length"])
        writer.writerows(episodes)


def run_explain(settings: ExplainSettings, run_dir: Path) -> ExplainOutcome:
    """``ultrarl explain``: the explain stage alone, with its own eval.json (before only)."""
    outcome = explain_agent(settings, run_dir)
    write_json(run_dir / "eval.json", {"before": outcome.before.to_dict(), "after": None})
    write_report(
        run_dir / "report.md", f"ultrarl explain: {settings.env_id}", {"agent": outcome.before},
        outcome.states, outcome.usage, None,
    )
    write_text_atomic(run_dir / "config.yaml", settings_to_yaml(settings))  # last: marks a finished run
    return outcome
