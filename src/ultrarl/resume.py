"""Continuing a killed refinement (``ultrarl refine --resume``): the same settings, the finished
identification stage read back from the run directory (no LLM call), the learning curve kept."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel
from stable_baselines3 import PPO

from ultrarl import run_dir as files
from ultrarl.envs.rollout import collect_trajectories
from ultrarl.errors import UltraRLError
from ultrarl.evaluate.evaluation import EvalResult
from ultrarl.explain.explainer import read_explanations
from ultrarl.explain.oracle import expert_advisor
from ultrarl.guidance.table import GuidanceTable
from ultrarl.refine.refiner import load_checked_agent
from ultrarl.settings import RefineSettings
from ultrarl.stages import Identification

_STEP_COLUMN = "time/total_timesteps"


def check_resumable(run_dir: Path, settings: BaseModel) -> None:
    """A resumed run must have the settings it started with."""
    started = run_dir / files.STARTED
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


def read_identification(
    run_dir: Path, settings: RefineSettings, agent: PPO
) -> tuple[Identification, EvalResult] | None:
    """What a killed run's identification stage left, if it finished (eval.json is written last)."""
    method = settings.method_spec
    try:
        before = files.read_json(run_dir / files.EVAL)["before"]
        usage = files.read_json(run_dir / files.LLM_USAGE)
        states = read_explanations(run_dir / files.EXPLANATIONS)
    except (OSError, KeyError, ValueError):
        return None
    table = GuidanceTable.load(run_dir / files.GUIDANCE) if (run_dir / files.GUIDANCE).exists() else None
    if method.guided and table is None:
        return None
    trajectories = []
    if settings.effective_reset_prob > 0:  # snapshots live in memory only: re-collect the same seeded episodes
        trajectories = collect_trajectories(agent, settings.env_id, settings.episodes, settings.seed,
                                            deterministic=settings.deterministic_rollouts, keep_snapshots=True)
    advisor = None
    if method.live_advisor and settings.expert is not None:
        advisor = expert_advisor(load_checked_agent(settings.expert, settings.env_id))
    return Identification(states, table, usage, trajectories, advisor), EvalResult(**before)


def keep_progress_segment(run_dir: Path, upto: int) -> None:
    """SB3's CSV logger truncates progress.csv when it opens it: keep the killed run's rows
    (up to the checkpoint; later ones are redone) in a segment file merged at the end."""
    current = run_dir / files.PROGRESS
    if not current.exists():
        return
    rows, fields = files.read_csv(current)
    rows = [r for r in rows if not r.get(_STEP_COLUMN) or float(r[_STEP_COLUMN]) <= upto]
    index = len(list(run_dir.glob("progress.segment-*.csv")))
    files.write_csv(run_dir / f"progress.segment-{index:02d}.csv", rows, fields)
    current.unlink()


def merge_progress_segments(run_dir: Path) -> None:
    segments = sorted(run_dir.glob("progress.segment-*.csv"))
    if not segments:
        return
    rows: list[dict[str, str]] = []
    fields: list[str] = []
    for path in [*segments, run_dir / files.PROGRESS]:
        if path.exists():
            more, more_fields = files.read_csv(path)
            rows += more
            fields += [f for f in more_fields if f not in fields]
    files.write_csv(run_dir / files.PROGRESS, rows, fields)
    for path in segments:
        path.unlink()
