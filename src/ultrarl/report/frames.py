"""Pictures of critical states: replay the episode to the step and render it offscreen.

Trajectories keep observations, not simulator states, so a picture comes from replaying the
episode's recorded actions from its reset seed. MuJoCo and ALE replay exactly; a replay whose
observation differs from the recorded one is not pictured (and said so), never a wrong picture.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ultrarl.envs.factory import make_env
from ultrarl.envs.rollout import Trajectory, env_action
from ultrarl.errors import UltraRLError
from ultrarl.explain.explainer import CriticalState

# Headless machines render MuJoCo through EGL; a user's own MUJOCO_GL setting wins.
os.environ.setdefault("MUJOCO_GL", "egl")


def save_critical_frames(
    env_id: str, trajectories: list[Trajectory], states: list[CriticalState], out_dir: Path
) -> tuple[list[CriticalState], list[str]]:
    """A PNG per critical state; returns the states with ``frame`` set and the problems met."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_episode = {t.episode: t for t in trajectories}
    problems: list[str] = []
    out: list[CriticalState] = []
    try:
        env = make_env(env_id, render_mode="rgb_array")
    except UltraRLError as exc:
        return states, [f"{env_id} cannot render offscreen: {exc}"]
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for state in states:
            trajectory = by_episode[state.episode]
            try:
                frame = _replay_to(env, trajectory, state.step)
            except Exception as exc:  # a renderer without a GL context, an env without rgb_array
                problems.append(f"episode {state.episode} step {state.step}: cannot render ({exc})")
                out.append(state)
                continue
            if frame is None:
                problems.append(f"episode {state.episode} step {state.step}: the replay diverged from the recording")
                out.append(state)
                continue
            name = f"episode{state.episode:03d}_step{state.step:04d}.png"
            plt.imsave(out_dir / name, frame)
            out.append(state.model_copy(update={"frame": f"{out_dir.name}/{name}"}))
    finally:
        env.close()
    return out, problems


def _replay_to(env, trajectory: Trajectory, step: int) -> np.ndarray | None:  # type: ignore[no-untyped-def]
    obs, _ = env.reset(seed=trajectory.seed)
    for t in range(step):
        obs, *_ = env.step(env_action(trajectory.actions[t]))
    if not np.allclose(np.asarray(obs, dtype=np.float32).ravel(), trajectory.observations[step], atol=1e-4):
        return None
    return np.asarray(env.render())
