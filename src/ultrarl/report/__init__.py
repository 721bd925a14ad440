"""Stage 8, reporting: terminal tables and the run directory's Markdown report."""

from ultrarl.report.console import console, critical_states_table, returns_table
from ultrarl.report.markdown import write_report

__all__ = ["console", "critical_states_table", "returns_table", "write_report"]
