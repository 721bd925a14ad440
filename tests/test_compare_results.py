"""``benchmarks/compare_results.py``: whether a re-run reproduces the published rows."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from ultrarl.report.bench_report import RESULTS_FIELDS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_results.py"
PUBLISHED = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "standard_results.csv"


def _write(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(RESULTS_FIELDS)
        writer.writerows(rows)
    return path


def _compare(rerun: Path, published: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(rerun), str(published)],
                          capture_output=True, text=True, timeout=60)


def test_a_part_of_the_published_rows_is_equal(tmp_path: Path) -> None:
    """The first 7 published rows, re-written as a re-run writes them, are all equal; the rest
    are counted as not re-run."""
    with open(PUBLISHED, newline="") as f:
        rows = list(csv.reader(f))[1:8]
    result = _compare(_write(tmp_path / "rerun.csv", rows), PUBLISHED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 of 7 re-run rows equal to the published ones; 293 published rows not re-run" in result.stdout


def test_a_score_that_differs_in_its_last_digit_fails(tmp_path: Path) -> None:
    published = _write(tmp_path / "published.csv", [
        ["Hopper-v5", "ppo", "ppo", "1", "done", "900.5", "1000.25", "3.0", "990.0"],
        ["Hopper-v5", "ppo", "ppo", "2", "done", "800.0", "850.0", "1.0", "845.0"]])
    rerun = _write(tmp_path / "rerun.csv", [
        ["Hopper-v5", "ppo", "ppo", "1", "done", "900.5", "1000.26", "3.0", "990.0"],
        ["Hopper-v5", "ppo", "ppo", "2", "done", "800.0", "850.0", "1.0", "845.0"],
        ["Hopper-v5", "ppo", "ppo", "3", "done", "1.0", "2.0", "0.0", ""]])
    result = _compare(rerun, published)
    assert result.returncode == 1
    assert "1 of   2 equal" in result.stdout
    assert "1 re-run rows not published" in result.stdout
    assert "differs: Hopper-v5 ppo seed 1: after: 1000.25 -> 1000.26" in result.stdout


@pytest.mark.parametrize("missing", ["rerun", "published"])
def test_a_missing_file_is_a_one_line_error(tmp_path: Path, missing: str) -> None:
    present = _write(tmp_path / "present.csv", [])
    paths = {"rerun": present, "published": present, missing: tmp_path / "absent.csv"}
    result = _compare(paths["rerun"], paths["published"])
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'absent.csv'} is not a file"


def test_a_file_without_the_results_columns_is_a_one_line_error(tmp_path: Path) -> None:
    other = tmp_path / "evaluations.csv"
    other.write_text("timestep,mean\n10240,1.5\n")
    result = _compare(other, PUBLISHED)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: {other} is not a bench's results.csv: it has no column env, method, "
                                     "kind, seed, status, before, after, after_std, after_last")
