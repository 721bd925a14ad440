"""The fidelity table of ``ultrarl fidelity``: one row per advisor, for the console and Markdown."""

from __future__ import annotations

from typing import Any

from rich.table import Table

COLUMNS = ("advisor", "states", "drop at its states", "drop at random steps", "criticality [95% CI]",
           "advice gain [95% CI]", "random action's gain [95% CI]", "advice over random [95% CI]",
           "suggestions that help")


def _interval(estimate: dict[str, float] | None) -> str:
    if not estimate:
        return "n/a"
    mark = " *" if estimate["low"] > 0 or estimate["high"] < 0 else ""
    return f"{estimate['point']:+.3g} [{estimate['low']:+.3g}, {estimate['high']:+.3g}]{mark}"


def fidelity_rows(summaries: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Cells per advisor; '*' marks an interval that excludes 0."""
    rows = []
    for advisor, summary in summaries.items():
        if not summary.get("states"):
            rows.append([advisor, "0", *["n/a"] * (len(COLUMNS) - 2)])
            continue
        helps = summary.get("helps_share")
        rows.append([advisor, str(summary["states"]), f"{summary['drop']:+.3g}", f"{summary['control_drop']:+.3g}",
                     _interval(summary["criticality"]), _interval(summary.get("advice_gain")),
                     _interval(summary.get("random_gain")), _interval(summary.get("gain_over_random")),
                     f"{helps:.0%}" if helps is not None else "n/a"])
    return rows


def fidelity_console_table(summaries: dict[str, dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "advisor" else "right")
    for row in fidelity_rows(summaries):
        table.add_row(*row)
    return table


def fidelity_markdown(summaries: dict[str, dict[str, Any]], title: str, legend: str) -> str:
    lines = [f"# {title}", "", legend, "", "| " + " | ".join(COLUMNS) + " |",
             "|---|" + "---:|" * (len(COLUMNS) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in fidelity_rows(summaries)]
    return "\n".join(lines) + "\n"
