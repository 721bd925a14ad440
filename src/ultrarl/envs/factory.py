"""Creating environments by Gymnasium id, with errors a user can read."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from ultrarl.envs.pong import register_pong_envs
from ultrarl.envs.sparse import register_sparse_envs
from ultrarl.errors import UltraRLError

_registered = False


def _register_all() -> None:
    """Register ALE and ultrarl's own ids once, lazily (ale_py import is slow)."""
    global _registered
    if _registered:
        return
    try:
        import ale_py

        gym.register_envs(ale_py)
        register_pong_envs()
    except ImportError:  # ALE is optional; Pong ids then fail with a clear message below.
        pass
    register_sparse_envs()
    _registered = True


def import_gym_packages(packages: list[str]) -> None:
    """Import the modules that register a user's environments (RL Zoo's ``--gym-packages``)."""
    for package in packages:
        try:
            importlib.import_module(package)
        except Exception as exc:  # noqa: BLE001 - any failure of the user's module is theirs to read
            raise UltraRLError(f"cannot import gym package '{package}': {type(exc).__name__}: {exc}") from exc


def validate_env_id(env_id: str) -> None:
    """Raise a one-line error for an id Gymnasium does not know, with the closest known ids.
    ``module:EnvId`` imports ``module`` first, as ``gymnasium.make`` does."""
    _register_all()
    module, _, name = env_id.rpartition(":")
    if module:
        import_gym_packages([module])
    if name in gym.registry:
        return
    close = difflib.get_close_matches(name, list(gym.registry.keys()), n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UltraRLError(f"unknown environment id '{env_id}'.{hint}")


def default_env_kwargs(env_id: str) -> dict[str, Any]:
    """ultrarl observes ALE games through their 128-byte RAM (what the describers read)."""
    return {"obs_type": "ram"} if env_id.startswith("ALE/") else {}


def make_env(env_id: str, seed: int | None = None, **kwargs: Any) -> gym.Env:
    """Make one environment, seeded, after checking the id."""
    validate_env_id(env_id)
    try:
        env = gym.make(env_id, **{**default_env_kwargs(env_id), **kwargs})
    except Exception as exc:  # missing extras (mujoco, ale) or bad kwargs
        raise UltraRLError(f"cannot create environment '{env_id}': {exc}") from exc
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_vec_env(
    env_id: str, n_envs: int = 1, seed: int = 0, wrapper: Callable[[gym.Env, int], gym.Env] | None = None
) -> VecEnv:
    """A DummyVecEnv of Monitor-wrapped environments, seeded as SB3's ``make_vec_env`` seeds
    them (action space of env i: seed + i; first reset: seed + i). Monitor records the true
    episodic return; ``wrapper(env, rank)`` goes outside it, and gets the rank so that each
    environment can draw from its own random stream."""
    validate_env_id(env_id)

    def thunk(rank: int) -> Callable[[], gym.Env]:
        def make() -> gym.Env:
            env = make_env(env_id)
            env.action_space.seed(seed + rank)
            env = Monitor(env)
            return wrapper(env, rank) if wrapper is not None else env

        return make

    venv = DummyVecEnv([thunk(rank) for rank in range(n_envs)])
    venv.seed(seed)
    return venv


def check_agent_spaces(agent_obs: gym.Space, agent_act: gym.Space, env_id: str) -> None:
    """Refuse an agent trained on other spaces than the environment's."""
    env = make_env(env_id)
    try:
        if not _same_space(agent_obs, env.observation_space):
            raise UltraRLError(
                f"agent observation space {agent_obs} does not match {env_id}'s {env.observation_space}"
            )
        if not _same_space(agent_act, env.action_space):
            raise UltraRLError(f"agent action space {agent_act} does not match {env_id}'s {env.action_space}")
    finally:
        env.close()


def _same_space(a: gym.Space, b: gym.Space) -> bool:
    # Bounds of Box spaces may differ by dtype only; compare type and shape (and n for Discrete).
    if type(a) is not type(b):
        return False
    if isinstance(a, gym.spaces.Discrete):
        return int(a.n) == int(b.n)  # type: ignore[attr-defined]
    return a.shape == b.shape
