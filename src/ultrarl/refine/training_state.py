"""Everything a refinement carries from one rollout to the next that the SB3 zip does not hold,
so that a run resumed from a checkpoint ends with exactly the weights of the uninterrupted run.

A checkpoint is taken at the start of a rollout (after the update on the previous one), so the
rollout buffer is empty and needs no saving. What does need saving:
- the global random states that SB3 draws from (torch: action sampling; numpy: the minibatch
  order of every update; Python's ``random``);
- every environment as it stands mid-episode: its simulator (a snapshot, with the ``TimeLimit``
  counter), its reset RNG, its action space's RNG, Monitor's running episode, and the state of
  ultrarl's own wrappers (the critical-state resets' RNG) and vector wrappers (RND's pending
  batch, through ``RNDBonus.state``, saved beside this; VecNormalize's running statistics);
- the observation the next step acts on and the episode-start flags;
- the supervised term's memory, random state and optimiser (``SupervisedTerm.state``);
- an off-policy agent's replay buffer.
Environments that cannot be snapshotted resume at fresh episodes, as before; the refine summary
says whether a resume was exact.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecNormalize

from ultrarl.envs.snapshot import restore_snapshot, take_snapshot, wrapper_chain

# Monitor's running episode: what its next "episode" info is computed from.
_MONITOR_FIELDS = ("rewards", "needs_reset", "total_steps", "episode_returns", "episode_lengths", "episode_times")


def _dummy_vec_env(venv: VecEnv) -> DummyVecEnv:
    while isinstance(venv, VecEnvWrapper):
        venv = venv.venv
    if not isinstance(venv, DummyVecEnv):
        raise TypeError(f"training state needs a DummyVecEnv, got {type(venv).__name__}")
    return venv


def _wrapper_state(wrapper: gym.Env) -> dict[str, Any] | None:
    if isinstance(wrapper, Monitor):
        return {name: copy.deepcopy(getattr(wrapper, name)) for name in _MONITOR_FIELDS}
    if callable(getattr(type(wrapper), "training_state", None)):
        return wrapper.training_state()  # type: ignore[attr-defined]
    return None


def _load_wrapper_state(wrapper: gym.Env, state: dict[str, Any] | None) -> None:
    if state is None:
        return
    if isinstance(wrapper, Monitor):
        for name, value in state.items():
            setattr(wrapper, name, copy.deepcopy(value))
    else:
        wrapper.load_training_state(state)  # type: ignore[attr-defined]


def _env_state(env: gym.Env, observation: np.ndarray) -> dict[str, Any]:
    return {
        "snapshot": take_snapshot(env, observation),
        "reset_rng": env.unwrapped.np_random.bit_generator.state,
        "action_rng": env.action_space.np_random.bit_generator.state,
        "wrappers": [_wrapper_state(w) for w in wrapper_chain(env)],
    }


def _load_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    restore_snapshot(env, state["snapshot"])
    env.unwrapped.np_random.bit_generator.state = state["reset_rng"]
    env.action_space.np_random.bit_generator.state = state["action_rng"]
    for wrapper, wrapper_state in zip(wrapper_chain(env), state["wrappers"]):
        _load_wrapper_state(wrapper, wrapper_state)


def capture_training_state(model: BaseAlgorithm, with_envs: bool) -> dict[str, Any]:
    """The state to save beside the model zip; ``with_envs`` only where snapshots restore exactly."""
    state: dict[str, Any] = {
        "rng": {"torch": th.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        "envs": None,
        # gSDE redraws its exploration matrix before a rollout starts, after this capture: a
        # resumed run draws it again, from a state one draw earlier. Resumed, but not exactly.
        "exact": not getattr(model, "use_sde", False),
    }
    top = model.get_env()
    normalization = top if isinstance(top, VecNormalize) else None
    if normalization is not None:
        state["normalization"] = copy.deepcopy(
            {"obs_rms": normalization.obs_rms, "ret_rms": normalization.ret_rms, "returns": normalization.returns})
    if with_envs:
        venv = _dummy_vec_env(top)  # type: ignore[arg-type]
        raw = normalization.get_original_obs() if normalization is not None else model._last_obs
        state["envs"] = [_env_state(env, obs) for env, obs in zip(venv.envs, raw)]  # type: ignore[arg-type]
        state["raw_obs"] = np.array(raw, copy=True)
        state["last_obs"] = np.array(model._last_obs, copy=True)
        state["last_episode_starts"] = np.array(model._last_episode_starts, copy=True)
    supervised = getattr(model, "supervised", None)  # the guided classes' SupervisedTerm
    if supervised is not None:
        state["supervised"] = supervised.state()
    if getattr(model, "replay_buffer", None) is not None:  # off-policy: what the next updates sample
        state["replay_buffer"] = model.replay_buffer  # type: ignore[attr-defined]
    return state


def restore_training_state(model: BaseAlgorithm, state: dict[str, Any]) -> None:
    """Put a freshly loaded model and its (reset) environments back where the checkpoint was."""
    top = model.get_env()
    if isinstance(top, VecNormalize) and "normalization" in state:
        for name, value in copy.deepcopy(state["normalization"]).items():
            setattr(top, name, value)
    if state["envs"] is not None:
        venv = _dummy_vec_env(top)  # type: ignore[arg-type]
        for env, env_state in zip(venv.envs, state["envs"]):
            _load_env_state(env, env_state)
        if isinstance(top, VecNormalize):
            top.old_obs = np.array(state["raw_obs"], copy=True)
            model._last_original_obs = np.array(state["raw_obs"], copy=True)  # type: ignore[assignment]
        model._last_obs = np.array(state["last_obs"], copy=True)  # type: ignore[assignment]
        model._last_episode_starts = np.array(state["last_episode_starts"], copy=True)
    if "supervised" in state:
        model.supervised.load_state(state["supervised"])  # type: ignore[attr-defined]
    if "replay_buffer" in state:
        model.replay_buffer = state["replay_buffer"]  # type: ignore[attr-defined]
    th.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])


class RestoreTrainingState(BaseCallback):
    """Restores a checkpoint's training state once ``learn`` has set up (and reset) the
    environments, right before the first rollout."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        self.state = state

    def _on_training_start(self) -> None:
        restore_training_state(self.model, self.state)

    def _on_step(self) -> bool:
        return True
