"""A small Markdown report in the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ultrarl.evaluate.evaluation import EvalResult
from ultrarl.run_dir import write_text_atomic
from ultrarl.explain.explainer import CriticalState


_MARKDOWN_SYNTAX = str.maketrans({c: "\\" + c for c in "\\`*_[]()!#|<>"})


def cell(text: str) -> str:
    """Text from outside (an LLM's answer, a state's description) as one table cell of plain
    text: Markdown's syntax escaped, so an answer never becomes a link, a picture or a row."""
    return " ".join(text.split()).translate(_MARKDOWN_SYNTAX)


def write_report(
    path: Path,
    title: str,
    evaluations: dict[str, EvalResult],
    states: list[CriticalState],
    usage: dict[str, Any] | None,
    modulation: dict[str, float] | None,
    notes: list[str] | None = None,
    curve: str | None = None,
) -> None:
    """The run's Markdown report; ``curve``: the learning curve's picture, relative to ``path``."""
    lines = [f"# {title}", ""]
    if evaluations:
        lines += ["## True return (no guidance)", "", "| agent | mean | std | episodes |", "|---|---:|---:|---:|"]
        lines += [f"| {n} | {r.mean:.1f} | {r.std:.1f} | {r.episodes} |" for n, r in evaluations.items()]
        lines.append("")
    if modulation is not None:
        lines += [
            "## Modulation during refinement",
            "",
            f"- steps: {int(modulation['steps'])}, matched: {int(modulation['matched'])} "
            f"(match rate {modulation['match_rate']:.3%}), overridden: {int(modulation['overridden'])} "
            f"(override rate {modulation['override_rate']:.3%})",
            *_trust_lines(modulation),
            "",
        ]
    if usage is not None:
        lines += [
            "## LLM usage",
            "",
            f"- calls {usage['calls']}, cache hits {usage['cache_hits']}, prompt tokens {usage['prompt_tokens']}, "
            f"completion tokens {usage['completion_tokens']}, failures {usage['failures']} (of which "
            f"{usage.get('copied_fields', 0)} critical steps and {usage.get('copied_answers', 0)} answers copied the "
            f"prompt instead of answering; {usage.get('cached_failures', 0)} failures replayed from the cache)",
            "",
        ]
    lines += [f"- {note}" for note in notes or []]
    if notes:
        lines.append("")
    if curve is not None:
        lines += ["## Learning curve", "", f"![learning curve]({curve})", ""]
    lines += [
        "## Critical states",
        "",
        "| episode | step | state | agent action | suggested action | implicit reward | reason |",
        "|---:|---:|---|---|---|---:|---|",
    ]
    lines += [
        f"| {s.episode} | {s.step} | {cell(s.state_text)} | {cell(s.agent_action_text)} | "
        f"{cell(s.suggested_action_text)} | {s.implicit_reward:+.2f} | {cell(s.rationale)} |"
        for s in states
    ]
    pictured = [s for s in states if s.frame]
    if pictured:
        lines += ["", "## Pictures of the critical states", ""]
        lines += [f"![episode {s.episode}, step {s.step}]({s.frame})" for s in pictured]
    write_text_atomic(path, "\n".join(lines) + "\n")


def _trust_lines(modulation: dict[str, float]) -> list[str]:
    """How much advice was trusted, and why the rest was not (runs that judge their advice)."""
    if "plans_executed" not in modulation:
        return []
    return [
        f"- advice executed: {int(modulation['plans_executed'])} plans, of which "
        f"{int(modulation['plans_beat_agent'])} beat the agent's own expected return",
        f"- imitated: {int(modulation['imitated_steps'])} executed steps; not imitated: "
        f"{int(modulation['not_imitated_steps'])} (their plan did not beat the agent, or nothing judges advice: the "
        "live oracle imitates every advised state)",
        f"- table entries: {int(modulation.get('entries', 0))}; kept {int(modulation.get('entries_kept', 0))}, "
        f"dropped {int(modulation.get('entries_dropped', 0))} (their advice never beat the agent in its first "
        f"tries), never executed {int(modulation.get('entries_never_executed', 0))}",
    ]
