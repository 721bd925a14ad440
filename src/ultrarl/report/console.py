"""What a person sees in the terminal: tables of critical states and before/after returns."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ultrarl.evaluate.evaluation import EvalResult
from ultrarl.explain.explainer import CriticalState

# Piped output (CI, log files) gets a wide fixed width instead of rich's 80 columns.
_probe = Console()
console = Console(highlight=False, width=None if _probe.is_terminal else 160)
STATE_QUANTITIES_SHOWN = 5  # the table shows the first quantities; explanations.jsonl has all


def _short_state(text: str) -> str:
    parts = text.split(", ")
    return ", ".join(parts[:STATE_QUANTITIES_SHOWN]) + (", ..." if len(parts) > STATE_QUANTITIES_SHOWN else "")


def critical_states_table(states: list[CriticalState], limit: int | None = None) -> Table:
    table = Table(title="Critical states identified by the LLM", show_lines=True)
    for column in ("ep", "step", "return so far", "state", "agent action", "suggested action", "r_LLM", "reason"):
        table.add_column(column, overflow="fold")
    for state in states[:limit]:
        table.add_row(
            str(state.episode),
            str(state.step),
            f"{state.return_so_far:.1f}",
            _short_state(state.state_text),
            state.agent_action_text,
            state.suggested_action_text,
            f"{state.implicit_reward:+.2f}",
            state.rationale or "(no reason given)",
        )
    return table


def returns_table(rows: dict[str, EvalResult], title: str = "True return, evaluated without guidance") -> Table:
    table = Table(title=title)
    for column in ("agent", "mean", "std", "episodes"):
        table.add_column(column, justify="right" if column != "agent" else "left")
    for name, result in rows.items():
        table.add_row(name, f"{result.mean:.1f}", f"{result.std:.1f}", str(result.episodes))
    return table
