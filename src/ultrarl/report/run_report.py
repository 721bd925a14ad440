"""A run directory's report (``report.md``, ``report.html`` and the learning curve), rebuilt
from what the run wrote: the pipeline writes it at the end of a run, ``ultrarl report`` again,
and a bench once more with the run's baseline (continued training on the same agent and seed)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ultrarl import run_dir as files
from ultrarl.evaluate.evaluation import EvalResult
from ultrarl.explain.explainer import read_explanations
from ultrarl.methods import METHODS
from ultrarl.report.markdown import write_report
from ultrarl.report.page import render_page

SMOOTHING_EPISODES = 10  # the learning curve's moving average


def refine_report_title(label: str, env_id: str) -> str:
    return f"ultrarl refine: {label} on {env_id}"


def write_run_report(run_dir: Path, title: str | None = None, baseline: Path | None = None) -> Path:
    """``baseline``: the run directory of the baseline to draw beside this run's curve."""
    evaluation = files.read_json(run_dir / files.EVAL)
    method = METHODS.get(evaluation.get("method") or "")
    rows = {"before": EvalResult(**evaluation["before"])}
    if evaluation.get("after"):
        rows[f"after {method.label if method else 'refinement'}"] = EvalResult(**evaluation["after"])
    states = read_explanations(run_dir / files.EXPLANATIONS) if (run_dir / files.EXPLANATIONS).exists() else []
    asks_llm = method is None or method.asks_llm  # an explain run, or an LLM method
    usage = files.read_json(run_dir / files.LLM_USAGE) if asks_llm and (run_dir / files.LLM_USAGE).exists() else None
    summary = files.read_json(run_dir / files.SUMMARY) if (run_dir / files.SUMMARY).exists() else None
    modulation = summary["modulation"] if summary and method and method.guided else None
    label = method.label if method else "this run"
    curve = _plot_curve(run_dir, label, baseline)
    report = run_dir / files.REPORT_MD
    title = title or f"ultrarl {method.name if method else 'explain'} run: {run_dir.name}"
    write_report(report, title, rows, states, usage, modulation, curve=curve.name if curve else None)
    files.write_text_atomic(run_dir / files.REPORT_HTML, render_page(report.read_text(), title, run_dir))
    return report


def read_curve(path: Path) -> list[tuple[float, float]]:
    """(timestep, true episodic return) pairs of a run's episodes.csv ([] when absent)."""
    if not path.exists():
        return []
    with open(path) as f:
        return [(float(r["timestep"]), float(r["episodic_return"])) for r in csv.DictReader(f)]


def _smoothed(returns: np.ndarray) -> np.ndarray:
    window = min(SMOOTHING_EPISODES, len(returns))
    return np.convolve(returns, np.ones(window) / window, mode="valid")


def _plot_curve(run_dir: Path, label: str, baseline: Path | None) -> Path | None:
    data = read_curve(run_dir / files.EPISODES)
    if not data:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    curves = [(label, data, "C1")]
    base = read_curve(baseline / files.EPISODES) if baseline is not None else []
    if base:
        curves.insert(0, (f"baseline: {_label(baseline)}", base, "C0"))
    for name, points, color in curves:
        steps, returns = (np.asarray(v, dtype=np.float64) for v in zip(*points))
        ax.plot(steps, returns, ".", color=color, alpha=0.15, markersize=3)
        smooth = _smoothed(returns)
        ax.plot(steps[len(steps) - len(smooth):], smooth, "-", color=color, linewidth=2, label=name)
    ax.set_xlabel("refinement steps")
    ax.set_ylabel("true episodic return")
    ax.set_title(f"lines: {SMOOTHING_EPISODES}-episode moving mean; points: episodes", fontsize=9)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return files.write_figure(run_dir / files.CURVE, fig)


def _label(run_dir: Path) -> str:
    method = METHODS.get(files.read_json(run_dir / files.EVAL).get("method") or "") if (
        run_dir / files.EVAL).exists() else None
    return method.label if method else run_dir.name
