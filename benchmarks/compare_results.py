"""Whether a re-run of a bench reproduces its published rows: each run of ``rerun`` (a bench's
``results.csv``) against the row of the same task, method and seed in ``published``, every
column compared as written (the scores ``before``, ``after``, ``after_std``, ``after_last``
among them), so "equal" means equal to the last bit. Prints, per task and method, how many re-run rows are equal,
then each row that differs, and exits 1 if any does. Rows that only one file has are counted,
not compared: a re-run of part of a grid (``--envs``, ``--only``) checks that part.

    .venv/bin/python benchmarks/compare_results.py runs/bench-standard/results.csv \\
        docs/benchmarks/standard_results.csv
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from ultrarl import run_dir as files
from ultrarl.report.bench_report import RESULTS_FIELDS

Key = tuple[str, str, int]


def read_rows(path: Path) -> dict[Key, dict[str, str]]:
    """The finished rows of a ``results.csv``, by (env, method, seed)."""
    rows, fields = files.read_csv(path)
    if missing := [name for name in RESULTS_FIELDS if name not in fields]:
        sys.exit(f"error: {path} is not a bench's {files.RESULTS}: it has no column {', '.join(missing)}")
    return {(row["env"], row["method"], int(row["seed"])): row for row in rows if row["status"] == "done"}


def differences(rerun: dict[str, str], published: dict[str, str]) -> list[str]:
    """The columns that differ between two rows of the same run, as ``name: published -> rerun``."""
    return [f"{name}: {published[name]} -> {rerun[name]}" for name in RESULTS_FIELDS if rerun[name] != published[name]]


def compare(rerun_path: Path, published_path: Path) -> bool:
    """Print the comparison; True if every re-run row that has a published one equals it."""
    rerun, published = read_rows(rerun_path), read_rows(published_path)
    equal: dict[tuple[str, str], int] = defaultdict(int)
    compared: dict[tuple[str, str], int] = defaultdict(int)
    differing: list[str] = []
    for key in sorted(rerun.keys() & published.keys()):
        env, method, seed = key
        compared[env, method] += 1
        changes = differences(rerun[key], published[key])
        if changes:
            differing.append(f"{env} {method} seed {seed}: " + "; ".join(changes))
        else:
            equal[env, method] += 1
    for env, method in sorted(compared):
        print(f"{env:32s} {method:18s} {equal[env, method]:3d} of {compared[env, method]:3d} equal")
    total = sum(compared.values())
    print(f"{sum(equal.values())} of {total} re-run rows equal to the published ones; "
          f"{len(published.keys() - rerun.keys())} published rows not re-run; "
          f"{len(rerun.keys() - published.keys())} re-run rows not published")
    for line in differing:
        print("differs:", line)
    return not differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rerun", type=Path, help="the re-run bench's results.csv")
    parser.add_argument("published", type=Path, help="the published rows, e.g. docs/benchmarks/standard_results.csv")
    args = parser.parse_args()
    for path in (args.rerun, args.published):
        if not path.is_file():
            sys.exit(f"error: {path} is not a file")
    sys.exit(0 if compare(args.rerun, args.published) else 1)


if __name__ == "__main__":
    main()
