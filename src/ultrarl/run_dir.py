"""Run and bench directories: every file name a run leaves behind, its completion markers, and
the one atomic writer every file goes through (temporary name, fsync, rename), so a crash or a
full disk never leaves a file that looks complete but is not."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ultrarl.errors import UltraRLError

# -- file names of a run directory (one constant each) ---------------------------------------
CONFIG = "config.yaml"  # written last: the run finished (its settings, as run)
STARTED = "config.started.yaml"  # written first by refine: a run in progress (or killed)
MANIFEST = "manifest.json"
TRAJECTORIES = "trajectories.npz"
EXPLANATIONS = "explanations.jsonl"
GUIDANCE = "guidance.npz"
IDENTIFY = "identify.json"
VERIFY = "verify.json"
LLM_USAGE = "llm_usage.json"
EXPLAIN_PROGRESS = "explain_progress.csv"
PROGRESS = "progress.csv"  # SB3's CSV logger (refinement)
EVAL = "eval.json"
MODEL = "model.zip"
MASK_NETWORK = "mask_network.zip"
SUMMARY = "refine_summary.json"
EPISODES = "episodes.csv"  # learning curve: every finished training episode's true return
EVALUATIONS = "evaluations.csv"  # --eval-every: the policy evaluated during refinement, as eval.json's after
EVALUATION_FIELDS = ("timestep", "mean_return", "std_return")
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
CURVE = "curve.png"
FRAMES = "frames"
ROUNDS = "rounds"
FIDELITY = "fidelity.json"  # ultrarl fidelity: the advisors' summaries (an advisor's own, in its folder)
FIDELITY_STATES = "fidelity.jsonl"  # per critical state: the explanation and its measurements
FIDELITY_MD = "fidelity.md"
PLATEAU = "plateau.json"  # ultrarl plateau: continued training's gain per seed, with its CI
ERROR = "error.txt"
ERROR_LOG = "error.log"
LOG = "log.txt"
BENCH_INPUTS = "inputs.json"  # ultrarl bench: the SHA-256 of the agent (and expert) a run started from

RUN_MARKER = CONFIG
STARTED_MARKER = STARTED


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; once the block has written it, it is synced
    and renamed to ``path``. On any failure the temporary file is removed."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UltraRLError(f"cannot write {path}: {exc.strerror}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_model(path: Path, model: Any) -> None:
    """An SB3 model's zip (anything with ``save(file)``), written atomically."""
    buffer = io.BytesIO()
    model.save(buffer)
    write_bytes_atomic(path, buffer.getvalue())


def write_figure(path: Path, figure: Any) -> Path:
    """A matplotlib figure as a PNG, atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return path


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2) + "\n")


def write_csv(path: Path, rows: list[dict[str, Any]] | list[list[Any]], fields: list[str]) -> None:
    """Rows as dicts (missing keys left empty) or as lists in the order of ``fields``."""
    buffer = io.StringIO()
    if rows and not isinstance(rows[0], dict):
        writer = csv.writer(buffer)
        writer.writerow(fields)
        writer.writerows(rows)
    else:
        dict_writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
        dict_writer.writeheader()
        dict_writer.writerows(rows)  # type: ignore[arg-type]
    write_text_atomic(path, buffer.getvalue())


def read_csv(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader), list(reader.fieldnames or [])


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def prepare_run_dir(path: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Create the directory; refuse one that holds another run unless ``overwrite``, and one
    that holds an unfinished run unless ``resume`` (or ``overwrite``)."""
    run_dir = Path(path)
    finished = (run_dir / CONFIG).exists()
    if finished and resume and not overwrite:
        raise UltraRLError(f"the run in {run_dir} has finished; there is nothing to resume")
    if finished and not overwrite:
        raise UltraRLError(f"run directory {run_dir} already holds a run; pass --overwrite or choose another --run-dir")
    if (run_dir / STARTED).exists() and not (resume or overwrite):
        raise UltraRLError(
            f"run directory {run_dir} holds an unfinished run; pass --resume to continue it or --overwrite to replace it"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UltraRLError(f"cannot create run directory {run_dir}: {exc.strerror}") from exc
    return run_dir


def manifest(seed: int, llm_spec: str | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions and seeds: enough to tell whether two runs are comparable."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str] = {}
    for package in ("ultrarl", "stable-baselines3", "gymnasium", "torch", "numpy", "mujoco", "ale-py",
                    "llama-cpp-python", "openai"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "seed": seed,
        # torch's intra-op thread count can change float reductions, so a run on another
        # machine is compared knowing it.
        "torch_threads": _torch_threads(),
        "llm": llm_spec,
        **(extra or {}),
    }


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def pretrain_record(agent_zip: Path) -> Path:
    """Beside a pretrained agent: its evaluations during pretraining (``--until-plateau``,
    ``--keep-best``)."""
    return agent_zip.with_suffix(".pretrain.json")


ADMISSION_SUFFIX = ".plateau.json"


def admission_record(agent_zip: Path) -> Path:
    """Beside a shipped agent: its ``ultrarl plateau`` check (``plateau.json``'s content, with the
    agent's SHA-256 and the command), the evidence that admitted it to a benchmark, or did not."""
    return agent_zip.with_suffix(ADMISSION_SUFFIX)


# -- a bench directory -------------------------------------------------------------------------
BENCH_CONFIG = "bench.yaml"
RESULTS = "results.csv"
ESTIMATES = "estimates.json"
PERFORMANCE_PROFILE = "performance_profile.png"
PRETRAINING_FIGURE = "pretraining_{slug}.png"


def env_slug(env_id: str) -> str:
    return env_id.replace("/", "_").replace(":", "_")


def bench_agent_path(bench_dir: Path, env_id: str, seed: int) -> Path:
    return bench_dir / "agents" / env_slug(env_id) / f"seed{seed}.zip"


def grid_agent_path(bench_dir: Path, shipped: dict[str, str], env_id: str, seed: int) -> Path:
    """A grid's agent for ``seed``: from the folder of shipped agents its config names for the
    environment (``agents:``), else the one the bench pretrained."""
    if env_id in shipped:
        return Path(shipped[env_id]) / f"seed{seed}.zip"
    return bench_agent_path(bench_dir, env_id, seed)


def bench_expert_path(bench_dir: Path, env_id: str) -> Path:
    return bench_dir / "experts" / f"{env_slug(env_id)}.zip"


def bench_task_dir(bench_dir: Path, env_id: str) -> Path:
    return bench_dir / "runs" / env_slug(env_id)


def bench_run_dir(bench_dir: Path, env_id: str, method_name: str, seed: int) -> Path:
    return bench_task_dir(bench_dir, env_id) / method_name / f"seed{seed}"
