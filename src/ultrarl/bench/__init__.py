"""Benchmark grids: environments x methods x seeds, locally or on Ray (``ultrarl bench``)."""

from ultrarl.bench.grid import BenchConfig, GridRunner, load_bench_config, run_grid

__all__ = ["BenchConfig", "GridRunner", "load_bench_config", "run_grid"]
