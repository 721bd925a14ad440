"""A run directory's report (``report.md``, ``report.html`` and the learning curve), rebuilt
from what the run wrote: the pipeline writes it at the end of a run, ``ultrarl report`` again."""

from __future__ import annotations

from pathlib import Path

from ultrarl import run_dir as files
from ultrarl.evaluate.evaluation import EvalResult
from ultrarl.explain.explainer import read_explanations
from ultrarl.methods import METHODS
from ultrarl.report.bench_report import read_curve, render_html
from ultrarl.report.markdown import write_report


def write_run_report(run_dir: Path, title: str | None = None) -> Path:
    evaluation = files.read_json(run_dir / files.EVAL)
    method = METHODS.get(evaluation.get("method") or "")
    rows = {"before": EvalResult(**evaluation["before"])}
    if evaluation.get("after"):
        rows[f"after {method.label if method else 'refinement'}"] = EvalResult(**evaluation["after"])
    states = read_explanations(run_dir / files.EXPLANATIONS) if (run_dir / files.EXPLANATIONS).exists() else []
    usage = files.read_json(run_dir / files.LLM_USAGE) if (run_dir / files.LLM_USAGE).exists() else None
    summary = files.read_json(run_dir / files.SUMMARY) if (run_dir / files.SUMMARY).exists() else None
    modulation = summary["modulation"] if summary and method and method.guided else None
    curve = _plot_curve(run_dir)
    report = run_dir / files.REPORT_MD
    title = title or f"ultrarl {method.name if method else 'explain'} run: {run_dir.name}"
    write_report(report, title, rows, states, usage, modulation, [f"learning curve: {curve.name}"] if curve else None)
    markdown = report.read_text() + (f"\n![learning curve]({curve.name})\n" if curve else "")
    files.write_text_atomic(run_dir / files.REPORT_HTML, render_html(markdown, [curve] if curve else []))
    return report


def _plot_curve(run_dir: Path) -> Path | None:
    data = read_curve(run_dir / files.EPISODES)
    if not data:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps, returns = zip(*data)
    ax.plot(steps, returns, ".", alpha=0.4)
    ax.set_xlabel("refinement steps")
    ax.set_ylabel("true episodic return")
    fig.tight_layout()
    out = run_dir / files.CURVE
    with files.atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out
