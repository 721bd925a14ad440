"""Stage 7, evaluation: the policy alone (no guidance, no LLM), true environment return."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy

from ultrarl.envs.factory import make_vec_env
from ultrarl.errors import UltraRLError


@dataclass(frozen=True)
class EvalResult:
    mean: float
    std: float
    episodes: int
    returns: list[float]
    lengths: list[int]
    seed: int
    deterministic: bool

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        return f"{self.mean:.1f} ± {self.std:.1f} over {self.episodes} episodes"


def evaluate_agent(
    agent: BaseAlgorithm, env_id: str, n_episodes: int = 10, seed: int = 0, deterministic: bool = True
) -> EvalResult:
    """Mean and std of the true return over ``n_episodes`` episodes, from seed ``seed``."""
    if n_episodes <= 0:
        raise UltraRLError(f"the number of evaluation episodes must be positive, got {n_episodes}")
    env = make_vec_env(env_id, n_envs=1, seed=seed)
    try:
        returns, lengths = evaluate_policy(
            agent, env, n_eval_episodes=n_episodes, deterministic=deterministic, return_episode_rewards=True
        )
    finally:
        env.close()
    returns_arr = np.asarray(returns, dtype=np.float64)
    return EvalResult(
        mean=float(returns_arr.mean()),
        std=float(returns_arr.std()),
        episodes=n_episodes,
        returns=[float(r) for r in returns_arr],
        lengths=[int(n) for n in lengths],
        seed=seed,
        deterministic=deterministic,
    )
