"""Periodic, atomic checkpoints of a refinement, so a crash costs minutes, not the run.

A checkpoint is a directory ``checkpoints/step-<N>/`` holding the SB3 zip (weights, optimiser
state, step counter, learning-rate progress), ``state.json`` (the learning curve so far, the
modulation counters, the override random state) and ``training_state.pkl`` (the random states,
the environments mid-episode and the supervised term: ``refine/training_state.py``), so that a
resumed run ends exactly where the uninterrupted one does. It is written under a temporary name and
renamed when complete; then the one-line pointer ``checkpoints/latest`` is replaced atomically.
A kill at any moment leaves ``latest`` naming a complete checkpoint (or no checkpoint at all).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ultrarl.errors import UltraRLError
from ultrarl.refine.callbacks import EveryTrainedSteps
from ultrarl.run_dir import MODEL

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
STATE = "state.json"
TRAINING_STATE = "training_state.pkl"


@dataclass
class Checkpoint:
    path: Path  # the step-<N> directory
    timesteps: int
    state: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    def training_state(self) -> dict[str, Any] | None:
        """The random states, environments and supervised term, if the checkpoint holds them
        (checkpoints of earlier versions do not)."""
        path = self.path / TRAINING_STATE
        if not path.is_file():
            return None
        try:
            return pickle.loads(path.read_bytes())  # written by this run itself
        except Exception as exc:  # noqa: BLE001 - any damage (truncation, a moved class) is one line
            raise UltraRLError(f"checkpoint {self.path} is damaged ({exc}); pass --overwrite to start again") from exc


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint of a run, or None when it has none."""
    pointer = run_dir / CHECKPOINT_DIR / LATEST
    if not pointer.is_file():
        return None
    path = run_dir / CHECKPOINT_DIR / pointer.read_text().strip()
    try:
        state = json.loads((path / STATE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UltraRLError(f"checkpoint {path} is damaged ({exc}); pass --overwrite to start the run again") from exc
    if not (path / MODEL).is_file():
        raise UltraRLError(f"checkpoint {path} has no {MODEL}; pass --overwrite to start the run again")
    return Checkpoint(path, int(state["timesteps"]), state)


def write_checkpoint(run_dir: Path, model: Any, state: dict[str, Any], keep: int = 2,
                     training_state: dict[str, Any] | None = None) -> Checkpoint:
    """Save ``model`` (SB3), ``state`` and ``training_state`` as a new checkpoint; keep the newest ``keep``."""
    root = run_dir / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    timesteps = int(model.num_timesteps)
    name = f"step-{timesteps:010d}"
    tmp = root / f"{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model.save(tmp / MODEL)
        (tmp / STATE).write_text(json.dumps({**state, "timesteps": timesteps}))
        if training_state is not None:
            (tmp / TRAINING_STATE).write_bytes(pickle.dumps(training_state))
        final = root / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer_tmp = root / f"{LATEST}.tmp"
        pointer_tmp.write_text(name + "\n")
        os.replace(pointer_tmp, root / LATEST)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return Checkpoint(final, timesteps, state)


class PeriodicCheckpoint(EveryTrainedSteps):
    """Writes a checkpoint once ``every`` more steps have been collected *and trained on*
    (``EveryTrainedSteps``: a resume from the end of a rollout would silently skip an update).
    ``state_fn`` returns what the model zip does not hold (learning curve, counters) as JSON,
    ``training_state_fn`` the random states and environments (``refine/training_state.py``).
    """

    def __init__(self, run_dir: Path, every: int, state_fn: Any, training_state_fn: Any = None) -> None:
        super().__init__(every)
        self.run_dir = run_dir
        self.state_fn = state_fn
        self.training_state_fn = training_state_fn
        self.written: list[int] = []

    def _act(self) -> None:
        training_state = self.training_state_fn() if self.training_state_fn is not None else None
        write_checkpoint(self.run_dir, self.model, self.state_fn(), training_state=training_state)
        self.written.append(self.model.num_timesteps)


def remove_checkpoints(run_dir: Path) -> None:
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
