"""How good must advice be? The offline expert's gain over continued PPO against the share q of
its advice that is kept (the rest replaced by uniformly random advice), per task, from a bench
whose config has ``oracle-offline-q<q>`` methods (``benchmarks/channel.yaml``): a table in
Markdown on stdout and a plot.

    .venv/bin/python benchmarks/advice_quality.py runs/bench-channel --out docs/benchmarks/channel_advice_quality.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ultrarl import run_dir as files  # noqa: E402

SCORES = {"paired_difference_to_ppo": "final iterate",
          "paired_difference_to_ppo_last_evaluations": "mean of the last 3 evaluations"}


def quality(method: str) -> float | None:
    """q of a method name: 1 for the offline expert itself, the number after '-q' for a corrupted one."""
    if method == "oracle-offline":
        return 1.0
    prefix = "oracle-offline-q"
    return float(method[len(prefix):]) if method.startswith(prefix) else None


def curves(estimates: dict, score: str) -> dict[str, list[tuple[float, dict[str, float]]]]:
    """Per task: (q, paired difference to ppo with its CI), by increasing q."""
    out: dict[str, list[tuple[float, dict[str, float]]]] = {}
    for env, methods in estimates.get(score, {}).items():
        points = [(q, value) for name, value in methods.items() if (q := quality(name)) is not None]
        if points:
            out[env] = sorted(points, key=lambda p: p[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="a bench directory with estimates.json")
    parser.add_argument("--out", type=Path, default=None, help="the plot (default: BENCH/advice_quality.png)")
    args = parser.parse_args()
    path = args.bench / files.ESTIMATES
    if not path.is_file():
        sys.exit(f"error: {path} does not exist: run the bench (or ultrarl report) first")
    estimates = json.loads(path.read_text())
    fig, axes = plt.subplots(1, len(SCORES), figsize=(11, 4))
    for ax, (score, title) in zip(axes, SCORES.items()):
        found = curves(estimates, score)
        print(f"\n| task | q | gain over ppo, {title} [95% CI] | seeds |\n|---|---:|---:|---:|")
        for env, points in found.items():
            qs = [q for q, _ in points]
            mid = [v["point"] for _, v in points]
            low = [v["point"] - v["low"] for _, v in points]
            high = [v["high"] - v["point"] for _, v in points]
            ax.errorbar(qs, mid, yerr=[low, high], marker="o", capsize=3, label=env)
            for q, v in points:
                star = " *" if v["low"] > 0 or v["high"] < 0 else ""
                gain = f"{v['point']:+.1f} [{v['low']:+.1f}, {v['high']:+.1f}]{star}"
                print(f"| {env} | {q:.2f} | {gain} | {v['seeds']} |")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xlabel("q: share of the expert's advice kept (the rest uniformly random)")
        ax.set_ylabel("paired gain over continued PPO")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = args.out or args.bench / "advice_quality.png"
    fig.savefig(out, dpi=110)
    print(f"\nplot: {out}")


if __name__ == "__main__":
    main()
