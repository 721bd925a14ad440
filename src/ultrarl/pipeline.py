"""The pipeline, top to bottom: identify -> (rounds) -> refine -> evaluate -> report.
The CLI, the demo and the bench workers call these; the stages live in ``ultrarl.stages``."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.logger import Logger

from ultrarl import run_dir as files
from ultrarl.envs.factory import make_vec_env, validate_env_id
from ultrarl.envs.rollout import collect_trajectories
from ultrarl.envs.snapshot import require_snapshots
from ultrarl.errors import UltraRLError
from ultrarl.evaluate.evaluation import EvalResult
from ultrarl.explain.explainer import CriticalState
from ultrarl.explain.prompts import EpisodePrompt, build_episode_prompt
from ultrarl.llm.factory import token_counter
from ultrarl.methods import Method, get_method
from ultrarl.refine.callbacks import EvaluationRecord, NewBestStep, PlateauStop
from ultrarl.refine.checkpoint import latest_checkpoint, remove_checkpoints
from ultrarl.refine.refiner import Refiner, load_checked_agent
from ultrarl.report.console import console
from ultrarl.report.run_report import refine_report_title, write_run_report
from ultrarl.resume import check_resumable, keep_progress_segment, merge_progress_segments, read_identification
from ultrarl.settings import ExplainSettings, PretrainSettings, RefineSettings, settings_to_yaml
from ultrarl.stages import (
    EVAL_SEED_OFFSET,
    Identification,
    evaluate,
    evaluate_before,
    identify,
    make_describer,
    reset_pool,
)

LLM_METRICS = ("calls", "cache_hits", "parse_failures", "copied_answers", "copied_fields", "cached_failures",
               "failures", "retries", "prompt_tokens", "completion_tokens", "latency_s_p50", "latency_s_p95",
               "wall_time_s")


def pretrain(settings: PretrainSettings, progress_bar: bool = True) -> PPO:
    """A PPO agent with SB3's default hyperparameters and a small budget: a sub-optimal agent.
    With ``until_plateau``, training stops once its evaluated return has plateaued; with
    ``keep_best``, the evaluated-best checkpoint is the one written. Either way the evaluations
    (the pretraining curve, evidence of the plateau) are written beside the zip."""
    validate_env_id(settings.env_id)
    env = make_vec_env(settings.env_id, n_envs=1, seed=settings.seed)
    agent = PPO("MlpPolicy", env, seed=settings.seed, device="cpu", verbose=0)
    agent.set_logger(Logger(None, []))  # SB3's default logger would create a folder in /tmp
    if not (settings.until_plateau or settings.keep_best):
        agent.learn(total_timesteps=settings.timesteps, progress_bar=progress_bar)
        return _write_agent(agent, Path(settings.out))
    record = (PlateauStop(settings.plateau_window, settings.plateau_margin, settings.plateau_smooth) if settings.until_plateau
              else EvaluationRecord())
    new_best = NewBestStep()
    eval_env = make_vec_env(settings.env_id, n_envs=1, seed=settings.seed + EVAL_SEED_OFFSET)
    with tempfile.TemporaryDirectory() as best_dir:
        callback = EvalCallback(eval_env, callback_after_eval=record, n_eval_episodes=settings.plateau_eval_episodes,
                                eval_freq=settings.plateau_eval_every, deterministic=True, verbose=0,
                                best_model_save_path=best_dir if settings.keep_best else None,
                                callback_on_new_best=new_best if settings.keep_best else None)
        agent.learn(total_timesteps=settings.timesteps, progress_bar=progress_bar, callback=callback)
        steps = int(agent.num_timesteps)
        if settings.keep_best:  # settings ensure that an evaluation ran
            agent = PPO.load(Path(best_dir) / "best_model.zip", device="cpu")
    out = _write_agent(agent, Path(settings.out))
    plateaued = isinstance(record, PlateauStop) and record.plateaued
    kept = new_best.timestep if settings.keep_best else steps
    files.write_json(files.pretrain_record(Path(settings.out)), {
        "env_id": settings.env_id, "seed": settings.seed, "timesteps": steps, "cap": settings.timesteps,
        "stopped": "plateau" if plateaued else "cap", "kept_timestep": kept, "best_return": record.best,
        **({"window": settings.plateau_window, "margin": settings.plateau_margin, "smooth": settings.plateau_smooth}
           if settings.until_plateau else {}),
        "evaluations": [{"timestep": t, "mean": m} for t, m in record.evaluations]})
    console.print(f"pretraining {'reached a plateau' if plateaued else 'hit the step cap'} at {steps} steps "
                  f"(best evaluated return {record.best:.1f}; kept the checkpoint of step {kept}); "
                  f"curve: {files.pretrain_record(Path(settings.out))}")
    return out


def _write_agent(agent: PPO, out: Path) -> PPO:
    out.parent.mkdir(parents=True, exist_ok=True)
    files.write_model(out, agent)
    return agent


def preview_prompts(settings: ExplainSettings) -> list[EpisodePrompt]:
    """``explain --dry-run``: the prompts the LLM would get, rendered; nothing is sent or written."""
    agent = load_checked_agent(settings.agent, settings.env_id)
    count_tokens = token_counter(settings.llm.model)  # no client: a dry run needs no server and no key
    trajectories = collect_trajectories(agent, settings.env_id, settings.episodes, settings.seed,
                                        deterministic=settings.deterministic_rollouts)
    describer = make_describer(settings, agent)
    return [build_episode_prompt(t, describer, count_tokens, settings.critical_steps, settings.token_budget,
                                 settings.guidance.plan_steps)
            for t in trajectories]


def run_explain(settings: ExplainSettings, run_dir: Path) -> tuple[Identification, EvalResult]:
    """``ultrarl explain``: the identification stage alone, with the agent's evaluation."""
    validate_env_id(settings.env_id)
    if settings.verify.enabled:
        require_snapshots(settings.env_id, "--verify")
    agent = load_checked_agent(settings.agent, settings.env_id)
    before = evaluate_before(agent, settings)
    found = identify(settings, get_method("ultra-ra"), run_dir, agent)
    files.write_json(run_dir / files.EVAL, {"before": before.to_dict(), "after": None})
    write_run_report(run_dir, f"ultrarl explain: {settings.env_id}")
    files.write_text_atomic(run_dir / files.CONFIG, settings_to_yaml(settings))  # last: marks a finished run
    return found, before


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


def refine_agent(
    settings: RefineSettings, run_dir: Path, progress_bar: bool = True, resume: bool = False,
    before: EvalResult | None = None,
) -> RefineOutcome:
    """Identify critical states (LLM, mask network, random or expert; none for ``ppo``), refine
    with the chosen method, evaluate before and after, report.

    With ``resume``, a run killed part-way continues: a finished identification stage is read
    back (no LLM call) and refinement goes on from the latest checkpoint, so the total number of
    refinement steps is still ``settings.timesteps``. With ``rounds`` > 1, identify-then-refine
    repeats on the refined agent, the budget split evenly. ``before``, where given, is the agent's
    evaluation as it is, made elsewhere on this run's episodes (the bench's ``none`` run).
    """
    method = _check(settings, resume)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume:
        check_resumable(run_dir, settings)
    else:
        remove_checkpoints(run_dir)
    files.write_text_atomic(run_dir / files.STARTED, settings_to_yaml(settings))
    agent = load_checked_agent(settings.agent, settings.env_id)
    found, before = _identification(settings, method, run_dir, agent, resume, before)
    if checkpoint is not None:  # before the refiner's logger opens (and truncates) progress.csv
        keep_progress_segment(run_dir, checkpoint.timesteps)
    refiner = _refiner(settings, method, agent, found, run_dir)
    if checkpoint is not None:
        refiner.resume_from(checkpoint)
        console.print(f"resuming refinement at step {checkpoint.timesteps} of {settings.timesteps}")
    for name in LLM_METRICS:  # the LLM's cost goes to the run's metrics too
        refiner.model.logger.record(f"llm/{name}", found.usage.get(name, 0))
    start = time.perf_counter()
    latest = LatestEvaluation(settings)
    refiner, states, episodes, evaluations = _train_rounds(settings, method, refiner, found, run_dir, progress_bar,
                                                           latest)
    wall = time.perf_counter() - start
    refiner.save(run_dir / files.MODEL)
    merge_progress_segments(run_dir)
    after = latest.result or evaluate(refiner.agent, settings)
    outcome = RefineOutcome(refiner, before, after, states, found.usage, refiner.modulation_totals, wall,
                            (settings.timesteps - refiner.resumed_from) / wall if wall > 0 else 0.0)
    _write_refinement(settings, method, run_dir, outcome, episodes, evaluations)
    return outcome


def _check(settings: RefineSettings, resume: bool) -> Method:
    method = settings.method_spec
    validate_env_id(settings.env_id)
    if settings.needs_snapshots:
        require_snapshots(settings.env_id, f"--method {method.name}" + (" with --verify" if settings.verify.enabled
                                                                         else ""))
    if settings.rounds > 1 and not method.guided:
        raise UltraRLError(f"--rounds applies to guided methods (ULTRA, oracle), not to {method.name}")
    if resume and settings.rounds > 1:
        raise UltraRLError("--resume does not support --rounds > 1 yet; run the rounds again with --overwrite")
    return method


def _identification(
    settings: RefineSettings, method: Method, run_dir: Path, agent: PPO, resume: bool, before: EvalResult | None
) -> tuple[Identification, EvalResult]:
    done = read_identification(run_dir, settings, agent) if resume else None
    if done is not None:
        console.print(f"resuming: identification read from {run_dir} ({len(done[0].states)} critical states, "
                      "no LLM call)")
        return done
    before = evaluate_before(agent, settings, before)
    found = identify(settings, method, run_dir, agent)
    # Written last in the identification stage: a resume finds it complete or redoes it.
    files.write_json(run_dir / files.EVAL, {"before": before.to_dict(), "after": None, "method": method.name})
    return found, before


def _refiner(
    settings: RefineSettings, method: Method, agent: PPO, found: Identification, log_dir: Path
) -> Refiner:
    reset_prob = settings.effective_reset_prob
    pool = reset_pool(found.states, found.trajectories) if reset_prob > 0 else []
    if reset_prob > 0 and not pool:
        console.print("[yellow]warning[/]: no critical state to reset to; every episode starts at the default start")
        reset_prob = 0.0
    return Refiner(agent, settings.env_id, method.name, guidance=found.table, modulation=settings.effective_modulation,
                   advisor=found.advisor, seed=settings.seed, log_dir=log_dir, initial_states=pool,
                   reset_prob=reset_prob, rnd_weight=settings.effective_rnd_weight,
                   update_normalization=not settings.freeze_normalization)


class LatestEvaluation:
    """The evaluation during refinement (``eval_every``), keeping the latest full result: training
    ends with an evaluation of the final policy (``PeriodicEvaluation``) on the same episodes as the
    final one, which then need not run twice. ``result`` stays None where this process made no
    evaluation (none asked for, or a resumed run that had nothing left to train).

    :param settings: the run's settings (environment, episodes, seed)
    """

    def __init__(self, settings: RefineSettings) -> None:
        self.settings = settings
        self.result: EvalResult | None = None

    def __call__(self, agent: PPO) -> tuple[float, float]:
        self.result = evaluate(agent, self.settings)
        return self.result.mean, self.result.std


def _train_rounds(
    settings: RefineSettings, method: Method, refiner: Refiner, found: Identification, run_dir: Path,
    progress_bar: bool, latest: LatestEvaluation,
) -> tuple[Refiner, list[CriticalState], list[tuple[int, float, int]], list[tuple[int, float, float]]]:
    """Refine for the budget; with rounds, identify again on the refined agent before each round.
    Returns the refiner, the critical states, and the learning curve and evaluations of every round."""
    budgets = round_budgets(settings.timesteps, settings.rounds)
    states, episodes, evaluations = list(found.states), [], []
    for index, budget in enumerate(budgets):
        if index > 0:
            round_dir = run_dir / files.ROUNDS / str(index)
            round_dir.mkdir(parents=True, exist_ok=True)
            round_settings = settings.model_copy(update={"seed": settings.seed + 1000 * index})
            found = identify(round_settings, method, round_dir, refiner.agent)
            states += found.states
            refiner = _refiner(settings, method, refiner.agent, found, round_dir)
        console.print(f"refining with {method.label} for {budget - refiner.resumed_from} steps"
                      + (f" (round {index + 1} of {len(budgets)})" if len(budgets) > 1 else "") + " ...")
        refiner.refine(budget, progress_bar=progress_bar, checkpoint_dir=run_dir if len(budgets) == 1 else None,
                       checkpoint_every=settings.checkpoint_every, evaluate_every=settings.eval_every,
                       evaluate=latest)
        offset = sum(budgets[:index])  # each round's step counter starts at 0
        episodes += [(step + offset, ret, length) for step, ret, length in refiner.true_returns.episodes]
        evaluations += [(step + offset, mean, std) for step, mean, std in refiner.evaluations]
    return refiner, states, episodes, evaluations


def round_budgets(total: int, rounds: int) -> list[int]:
    base = total // rounds
    return [base] * (rounds - 1) + [total - base * (rounds - 1)]


def _write_refinement(
    settings: RefineSettings, method: Method, run_dir: Path, outcome: RefineOutcome,
    episodes: list[tuple[int, float, int]], evaluations: list[tuple[int, float, float]],
) -> None:
    modulation = outcome.modulation
    if method.guided and modulation["matched"] == 0:
        console.print("[yellow]warning[/]: the guidance table never matched a state during refinement, so guidance "
                      "had no effect; raise --epsilon-quantile or --epsilon")
    files.write_json(run_dir / files.EVAL, {"before": outcome.before.to_dict(), "after": outcome.after.to_dict(),
                                            "method": method.name})
    files.write_json(run_dir / files.SUMMARY, {
        "method": method.name, "label": method.label, "timesteps": settings.timesteps,
        "final_num_timesteps": int(outcome.refiner.model.num_timesteps) if settings.rounds == 1 else settings.timesteps,
        "resumed_from": outcome.refiner.resumed_from, "exact_resume": outcome.refiner.exact_resume,
        "rounds": settings.rounds,
        "reset_prob": settings.effective_reset_prob, "rnd_weight": settings.effective_rnd_weight,
        "reset_pool": outcome.refiner.reset_pool_size,
        "wall_time_s": outcome.refine_wall_time_s, "steps_per_second": outcome.steps_per_second,
        "modulation": modulation,
    })
    files.write_csv(run_dir / files.EPISODES, [list(e) for e in episodes],
                    ["timestep", "episodic_return", "episode_length"])
    if evaluations:
        files.write_csv(run_dir / files.EVALUATIONS, [list(e) for e in evaluations], list(files.EVALUATION_FIELDS))
    else:  # an earlier run's in this directory would pass for this one's
        (run_dir / files.EVALUATIONS).unlink(missing_ok=True)
    write_run_report(run_dir, refine_report_title(method.label, settings.env_id))
    # config.yaml last: it marks a finished run (a directory holding one is not reused by accident).
    files.write_text_atomic(run_dir / files.CONFIG, settings_to_yaml(settings))
    (run_dir / files.STARTED).unlink(missing_ok=True)
    remove_checkpoints(run_dir)  # the finished model.zip replaces them
