"""A run directory: what a run leaves behind, written so that a crash never leaves a file that
looks complete but is not (write to a temporary name, then rename)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from ultrarl.errors import UltraRLError

RUN_MARKER = "config.yaml"  # written last: the run finished
STARTED_MARKER = "config.started.yaml"  # written first by refine: a run in progress (or killed)


def prepare_run_dir(path: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Create the directory; refuse one that holds another run unless ``overwrite``, and one
    that holds an unfinished run unless ``resume`` (or ``overwrite``)."""
    run_dir = Path(path)
    finished = (run_dir / RUN_MARKER).exists()
    if finished and resume and not overwrite:
        raise UltraRLError(f"the run in {run_dir} has finished; there is nothing to resume")
    if finished and not overwrite:
        raise UltraRLError(f"run directory {run_dir} already holds a run; pass --overwrite or choose another --run-dir")
    if (run_dir / STARTED_MARKER).exists() and not (resume or overwrite):
        raise UltraRLError(
            f"run directory {run_dir} holds an unfinished run; pass --resume to continue it or --overwrite to replace it"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UltraRLError(f"cannot create run directory {run_dir}: {exc.strerror}") from exc
    return run_dir


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to ``<name>.tmp``, then rename: a crash or a full disk never leaves a partial file
    under the final name."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UltraRLError(f"cannot write {path}: {exc.strerror}") from exc


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2) + "\n")


def manifest(seed: int, llm_spec: str | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions and seeds: enough to tell whether two runs are comparable."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str] = {}
    for package in ("ultrarl", "stable-baselines3", "gymnasium", "torch", "mujoco", "llama-cpp-python", "openai"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "seed": seed,
        "llm": llm_spec,
        **(extra or {}),
    }
