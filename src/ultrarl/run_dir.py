"""A run directory: what a run leaves behind, written so that a crash never leaves a file that
looks complete but is not (write to a temporary name, then rename)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from ultrarl.errors import UltraRLError

RUN_MARKER = "config.yaml"


def prepare_run_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Create the directory; refuse one that holds another run unless ``overwrite``."""
    run_dir = Path(path)
    if (run_dir / RUN_MARKER).exists() and not overwrite:
        raise UltraRLError(f"run directory {run_dir} already holds a run; pass --overwrite or choose another --run-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UltraRLError(f"cannot create run directory {run_dir}: {exc.strerror}") from exc
    return run_dir


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UltraRLError(f"cannot write {path}: {exc.strerror}") from exc


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
