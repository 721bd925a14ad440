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

import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger

from ultrarl.config import ExplainSettings, RefineSettings, settings_to_yaml
from ultrarl.envs.factory import check_agent_spaces, make_vec_env, validate_env_id
from ultrarl.envs.rollout import Trajectory, collect_trajectories, save_trajectories
from ultrarl.errors import UltraRLError
from ultrarl.evaluate.evaluation import EvalResult, evaluate_agent
from ultrarl.explain.explainer import CriticalState, Explainer, read_explanations, write_explanations
from ultrarl.explain.frames import save_critical_frames
from ultrarl.explain.prompts import PROMPT_VERSION, EpisodePrompt, build_episode_prompt
from ultrarl.guidance.table import GuidanceTable
from ultrarl.interpret.describer import StateDescriber
from ultrarl.llm.factory import make_llm_client, token_counter
from ultrarl.llm.ledger import UsageLedger
from ultrarl.refine.checkpoint import latest_checkpoint, remove_checkpoints
from ultrarl.refine.refiner import Refiner, check_method, load_agent
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


def _write_explain_progress(path: Path, rows: list[dict[str, float]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["episode"])
        writer.writeheader()
        writer.writerows(rows)


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
    settings: ExplainSettings, run_dir: Path, agent: PPO | None = None, progress_name: str = "progress.csv"
) -> ExplainOutcome:
    """Collect episodes, ask the LLM about each, build the guidance table; write it all down."""
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
    trajectories = collect_trajectories(
        agent, settings.env_id, settings.episodes, settings.seed, deterministic=settings.deterministic_rollouts
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
    if settings.save_frames and states:
        states, problems = save_critical_frames(settings.env_id, trajectories, states, run_dir / "frames")
        for problem in problems[:5]:
            console.print(f"[yellow]note[/]: no picture: {problem}")
    table = GuidanceTable.from_explanations(
        states, trajectories, epsilon=settings.epsilon, epsilon_quantile=settings.epsilon_quantile
    )
    usage = llm.ledger.to_dict()
    write_explanations(states, run_dir / "explanations.jsonl")
    table.save(run_dir / "guidance.npz")
    write_json(run_dir / "llm_usage.json", usage)
    _write_explain_progress(run_dir / progress_name, rows)
    keys = [explainer.cache_keys[t.episode] for t in trajectories]
    write_json(
        run_dir / "manifest.json",
        manifest(settings.seed, llm.spec, {"prompt_version": PROMPT_VERSION, "llm_cache_keys": keys}),
    )
    if not states:
        console.print("[yellow]warning[/]: the LLM gave no usable critical state; the guidance table is empty")
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


def refine_agent(
    settings: RefineSettings, run_dir: Path, progress_bar: bool = True, resume: bool = False
) -> RefineOutcome:
    """Explain (unless plain PPO), refine with the chosen method, evaluate before and after.

    With ``resume``, a run killed part-way continues: a finished explain stage is read back
    from the run directory (no LLM call, no rollout) and refinement goes on from the latest
    checkpoint, so the total number of refinement steps is still ``settings.timesteps``.
    """
    method = check_method(settings.method)
    validate_env_id(settings.env_id)
    checkpoint = None
    if resume:
        _check_resumable(run_dir, settings)
        checkpoint = latest_checkpoint(run_dir)
    else:
        remove_checkpoints(run_dir)
    write_text_atomic(run_dir / STARTED_CONFIG, settings_to_yaml(settings))
    agent = load_agent(settings.agent)
    check_agent_spaces(agent.observation_space, agent.action_space, settings.env_id)

    done = _explain_stage_on_disk(run_dir) if resume else None
    if done is not None and (method == "ppo" or done[1] is not None):
        states, table, usage, before = done
        console.print(f"resuming: explain stage read from {run_dir} ({len(states)} critical states, no LLM call)")
    elif method == "ppo":
        # Continued PPO needs no LLM: same budget, same seed, no guidance.
        states, table, usage = [], None, UsageLedger().to_dict()
        before = evaluate_agent(agent, settings.env_id, settings.eval_episodes, settings.seed + EVAL_SEED_OFFSET)
        write_explanations(states, run_dir / "explanations.jsonl")
        write_json(run_dir / "llm_usage.json", usage)
        write_json(run_dir / "manifest.json", manifest(settings.seed, None))
    else:
        outcome = explain_agent(settings, run_dir, agent, progress_name="explain_progress.csv")
        states, table, usage, before = outcome.states, outcome.table, outcome.usage, outcome.before
    if done is None:
        # Written last in the explain stage: a resume finds the stage complete or redoes it.
        write_json(run_dir / "eval.json", {"before": before.to_dict(), "after": None, "method": method})

    if checkpoint is not None:
        _keep_progress_segment(run_dir, checkpoint.timesteps)
        refiner = Refiner.from_checkpoint(
            checkpoint, settings.env_id, method=method, guidance=table, modulation=settings.modulation,
            seed=settings.seed, log_dir=run_dir,
        )
        console.print(f"resuming refinement at step {checkpoint.timesteps} of {settings.timesteps}")
    else:
        refiner = Refiner(
            settings.agent, settings.env_id, method=method, guidance=table, modulation=settings.modulation,
            seed=settings.seed, log_dir=run_dir,
        )
    # The LLM's cost goes to the run's metrics too (first row of progress.csv, TensorBoard).
    for name in ("calls", "cache_hits", "parse_failures", "failures", "retries", "prompt_tokens",
                 "completion_tokens", "latency_s_p50", "latency_s_p95", "wall_time_s"):
        refiner.model.logger.record(f"llm/{name}", usage[name])
    console.print(f"refining with {method} for {settings.timesteps - refiner.resumed_from} steps ...")
    start = time.perf_counter()
    refiner.refine(
        settings.timesteps, progress_bar=progress_bar, checkpoint_dir=run_dir,
        checkpoint_every=settings.checkpoint_every,
    )
    wall = time.perf_counter() - start
    steps_run = settings.timesteps - refiner.resumed_from
    refiner.save(run_dir / "model.zip")
    _merge_progress_segments(run_dir)
    modulation = refiner.modulation_totals
    if method != "ppo" and modulation["matched"] == 0:
        console.print(
            "[yellow]warning[/]: the guidance table never matched a state during refinement, so guidance had no "
            "effect; raise --epsilon-quantile or --epsilon"
        )
    after = evaluate_agent(refiner.model, settings.env_id, settings.eval_episodes, settings.seed + EVAL_SEED_OFFSET)
    write_json(run_dir / "eval.json", {"before": before.to_dict(), "after": after.to_dict(), "method": method})
    write_json(
        run_dir / "refine_summary.json",
        {"method": method, "timesteps": settings.timesteps, "final_num_timesteps": int(refiner.model.num_timesteps),
         "resumed_from": refiner.resumed_from, "wall_time_s": wall,
         "steps_per_second": steps_run / wall if wall > 0 else 0.0, "modulation": modulation},
    )
    _write_curve(run_dir / "episodes.csv", refiner.true_returns.episodes)
    write_report(
        run_dir / "report.md", f"ultrarl refine: {method} on {settings.env_id}",
        {"before": before, f"after {method}": after}, states, usage, modulation if method != "ppo" else None,
    )
    # config.yaml last: it marks a finished run (a directory holding one is not reused by accident).
    write_text_atomic(run_dir / "config.yaml", settings_to_yaml(settings))
    (run_dir / STARTED_CONFIG).unlink(missing_ok=True)
    remove_checkpoints(run_dir)  # the finished model.zip replaces them
    return RefineOutcome(refiner, before, after, states, usage, modulation, wall, steps_run / wall if wall else 0.0)


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


def _write_csv(path: Path, rows: list[dict[str, str]], fields: list[str]) -> None:
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
