"""``ultrarl report DIR``: rebuild a report from what a bench or a run directory holds."""

from __future__ import annotations

from pathlib import Path

from ultrarl import run_dir as files
from ultrarl.errors import UltraRLError
from ultrarl.report.bench_report import write_bench_report
from ultrarl.report.run_report import write_run_report


def rebuild_report(path: Path) -> Path:
    if (path / files.BENCH_CONFIG).exists():
        return write_bench_report(path)
    if (path / files.EVAL).exists():
        return write_run_report(path)
    raise UltraRLError(f"{path} is neither a bench directory ({files.BENCH_CONFIG}) nor a run directory "
                       f"({files.EVAL})")
