"""``ultrarl report DIR``: rebuild a report from what a bench or a run directory holds."""

from __future__ import annotations

import json
from pathlib import Path

from ultrarl.errors import UltraRLError
from ultrarl.evaluate.evaluation import EvalResult
from ultrarl.explain.explainer import read_explanations
from ultrarl.report.bench_report import read_curve, render_html, write_bench_report
from ultrarl.report.markdown import write_report


def rebuild_report(path: Path) -> Path:
    if (path / "bench.yaml").exists():
        return write_bench_report(path)
    if (path / "eval.json").exists():
        return write_run_report(path)
    raise UltraRLError(f"{path} is neither a bench directory (bench.yaml) nor a run directory (eval.json)")


def write_run_report(run_dir: Path) -> Path:
    evaluation = json.loads((run_dir / "eval.json").read_text())
    method = evaluation.get("method") or "explain"
    rows = {"before": EvalResult(**evaluation["before"])}
    if evaluation.get("after"):
        rows[f"after {method}"] = EvalResult(**evaluation["after"])
    states = read_explanations(run_dir / "explanations.jsonl") if (run_dir / "explanations.jsonl").exists() else []
    usage = json.loads((run_dir / "llm_usage.json").read_text()) if (run_dir / "llm_usage.json").exists() else None
    summary_path = run_dir / "refine_summary.json"
    modulation = json.loads(summary_path.read_text())["modulation"] if summary_path.exists() else None
    curve = _plot_curve(run_dir)
    notes = [f"learning curve: {curve.name}"] if curve else None
    report = run_dir / "report.md"
    write_report(report, f"ultrarl {method} run: {run_dir.name}", rows, states, usage,
                 modulation if method not in ("ppo", "none", "explain") else None, notes)
    markdown = report.read_text() + (f"\n![learning curve]({curve.name})\n" if curve else "")
    (run_dir / "report.html").write_text(render_html(markdown, [curve] if curve else []))
    return report


def _plot_curve(run_dir: Path) -> Path | None:
    data = read_curve(run_dir / "episodes.csv")
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
    out = run_dir / "curve.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
