"""Snapshot and restore an environment's full state: resets to critical states (StateMask-R,
RICE, ULTRA's --reset-prob) and counterfactual checks of suggestions (--verify) need them.

One adapter per family:
- MuJoCo: a copy of the whole ``MjData`` (time, qpos, qvel, actuator activations, warm-start
  accelerations, controls and the derived quantities), so the next step is bit-for-bit the
  original one;
- classic control: the unwrapped ``state`` (and CartPole's post-termination counter);
- ALE: ``cloneState(include_rng=True)`` (sticky actions draw from that RNG), plus what
  ultrarl's Pong wrapper keeps (the previous RAM, for velocities);
- any environment whose unwrapped class has ``get_state()`` and ``set_state(state)`` (the
  protocol a user implements for their own environment): what ``get_state`` returns, deep-copied;
- any other environment: a deep copy of the unwrapped environment's attributes (its RNG
  included), used only where restoring and replaying a few steps reproduces them
  (``supports_snapshots`` checks it once per id).
Every adapter also restores the ``TimeLimit`` step counter and returns the observation the
agent saw at the snapshot. Environments where none works raise a clear error.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from ultrarl.errors import UltraRLError


@dataclass
class Snapshot:
    family: str
    state: Any
    observation: np.ndarray
    elapsed_steps: int | None


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit | None:
    return next((w for w in wrapper_chain(env) if isinstance(w, gym.wrappers.TimeLimit)), None)


def wrapper_chain(env: gym.Env) -> list[gym.Env]:
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


def _ram_keepers(env: gym.Env) -> list[gym.Env]:
    return [w for w in wrapper_chain(env) if "_previous_ram" in vars(w)]


def snapshot_family(env: gym.Env) -> str:
    """Which adapter handles ``env`` (``copy`` when no other does)."""
    base = env.unwrapped
    if hasattr(base, "data") and hasattr(base, "model") and hasattr(base, "set_state"):
        return "mujoco"
    if hasattr(base, "ale"):
        return "ale"
    if hasattr(base, "state") and type(base).__module__.startswith("gymnasium.envs.classic_control"):
        return "classic"
    if callable(getattr(base, "get_state", None)) and callable(getattr(base, "set_state", None)):
        return "state_api"
    return "copy"


@functools.cache
def supports_snapshots(env_id: str) -> bool:
    """Restoring a snapshot and replaying the same actions reproduces the observations and rewards."""
    from ultrarl.envs.factory import make_env

    env = make_env(env_id, seed=0)  # reset first: classic control creates ``state`` at reset
    try:
        return _replays(env)
    except Exception:  # noqa: BLE001 - an environment that cannot be copied or restored has no snapshots
        return False
    finally:
        env.close()


def _replays(env: gym.Env, steps: int = 20) -> bool:
    """Snapshot after a reset, step up to ``steps`` random actions, restore, step them again."""
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    snapshot = take_snapshot(env, obs)
    first: list[tuple[Any, Any]] = []
    for _ in range(steps):
        action = env.action_space.sample()
        obs, reward, terminated, truncated, _ = env.step(action)
        first.append((action, (obs, reward)))
        if terminated or truncated:
            break
    restore_snapshot(env, snapshot)
    for action, (obs, reward) in first:
        obs_again, reward_again, *_ = env.step(action)
        if not (np.array_equal(obs, obs_again) and reward == reward_again):
            return False
    return True


def require_snapshots(env_id: str, what: str) -> None:
    if not supports_snapshots(env_id):
        raise UltraRLError(
            f"{what} needs environment snapshots, and {env_id} cannot be restored: give its unwrapped class "
            "get_state() and set_state(state) methods (docs/METHOD.md, Snapshots)"
        )


def take_snapshot(env: gym.Env, observation: np.ndarray) -> Snapshot:
    """The state of ``env`` now; ``observation`` is what the agent last saw."""
    family = snapshot_family(env)
    base: Any = env.unwrapped
    if family == "mujoco":
        import mujoco

        # The whole MjData, derived quantities included: Gymnasium's rewards read positions
        # that mj_step left from the start of the step, which mj_forward would recompute.
        payload: Any = mujoco.MjData(base.model)
        mujoco.mj_copyData(payload, base.model, base.data)
    elif family == "ale":
        # In the order of the wrappers that keep a previous RAM, not by position in the chain: a
        # snapshot restores into a chain with other wrappers too (refinement adds Monitor, resets).
        wrappers = [copy.deepcopy(w._previous_ram) for w in _ram_keepers(env)]  # type: ignore[attr-defined]
        payload = (base.ale.cloneState(include_rng=True), wrappers)
    elif family == "classic":
        payload = {k: copy.deepcopy(v) for k, v in vars(base).items() if k in ("state", "steps_beyond_terminated")}
    elif family == "state_api":
        payload = copy.deepcopy(base.get_state())
    else:
        payload = copy.deepcopy(vars(base))
    limit = _time_limit(env)
    elapsed = int(limit._elapsed_steps) if limit is not None and limit._elapsed_steps is not None else None
    return Snapshot(family, payload, np.array(observation, copy=True), elapsed)


def restore_snapshot(env: gym.Env, snapshot: Snapshot) -> np.ndarray:
    """Put ``env`` back into ``snapshot``'s state; returns the observation to act on.

    The environment must have been reset once (Gymnasium's order enforcement)."""
    base: Any = env.unwrapped
    if snapshot.family == "mujoco":
        import mujoco

        mujoco.mj_copyData(base.data, base.model, snapshot.state)
    elif snapshot.family == "ale":
        ale_state, wrappers = snapshot.state
        base.ale.restoreState(ale_state)
        for wrapper, previous_ram in zip(_ram_keepers(env), wrappers):
            wrapper._previous_ram = copy.deepcopy(previous_ram)  # type: ignore[attr-defined]
    elif snapshot.family in ("classic", "copy"):
        for key, value in snapshot.state.items():
            setattr(base, key, copy.deepcopy(value))
    elif snapshot.family == "state_api":
        base.set_state(copy.deepcopy(snapshot.state))
    else:
        raise UltraRLError(f"unknown snapshot family {snapshot.family}")
    limit = _time_limit(env)
    if limit is not None and snapshot.elapsed_steps is not None:
        limit._elapsed_steps = snapshot.elapsed_steps
    return np.array(snapshot.observation, copy=True)
