"""Stage 7, evaluation: the policy alone (no guidance, no LLM), true environment return."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel
from stable_baselines3.common.vec_env import VecNormalize

from ultrarl.envs.factory import make_vec_env
from ultrarl.errors import UltraRLError
from ultrarl.refine.agent_files import NormalizedAgent


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


class DeterministicActor:
    """``predict(obs, deterministic=True)`` of an SB3 actor-critic policy (PPO, A2C) with a Gaussian
    or categorical action, by the very tensor operations SB3 runs for it, without its per-call
    overhead: SB3 switches every module to eval mode and builds a distribution for its mode on
    each call, about half of an evaluation's time on MountainCar. The same operations on the same
    input give the same bits (``tests/test_evaluation.py``). ``for_agent`` admits only the agents
    for which that holds.

    :param policy: the agent's policy, an ``ActorCriticPolicy`` itself (no subclass)
    :param normalization: observation statistics to apply first (a ``NormalizedAgent``'s)
    """

    def __init__(self, policy: ActorCriticPolicy, normalization: VecNormalize | None = None) -> None:
        self.policy = policy
        self.normalization = normalization
        self.categorical = isinstance(policy.action_dist, CategoricalDistribution)
        self.box = policy.action_space if isinstance(policy.action_space, spaces.Box) else None
        # SB3's predict sets eval mode on every call; once is enough while nothing trains between
        # calls, and evaluation environments act only between updates (PeriodicEvaluation).
        policy.set_training_mode(False)

    @classmethod
    def for_agent(cls, agent: Any) -> DeterministicActor | None:
        """The actor for ``agent``, or None where SB3's own predict must act: a model or policy
        of another class or a subclass (recurrent, maskable, one that overrides how it acts),
        another distribution (gSDE, squashed), observations other than a flat vector."""
        normalization = agent.normalization if isinstance(agent, NormalizedAgent) else None
        model = agent.model if isinstance(agent, NormalizedAgent) else agent
        if not isinstance(model, BaseAlgorithm) or type(model).predict is not BaseAlgorithm.predict:
            return None
        policy = model.policy
        plain = (type(policy) is ActorCriticPolicy
                 and type(policy.action_dist) in (DiagGaussianDistribution, CategoricalDistribution)
                 and not policy.squash_output
                 and isinstance(policy.observation_space, spaces.Box) and len(policy.observation_space.shape) == 1)
        return cls(policy, normalization) if plain else None

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """The actions for a batch of observations (a vectorised environment's), as SB3's
        ``predict`` returns them; a NaN in the policy's output is an error, as in SB3.

        :param observation: observations, one row each
        :param state: passed through (no recurrent state)
        :param episode_start: unused
        :param deterministic: must be True
        """
        if not deterministic:
            raise ValueError("DeterministicActor acts deterministically only")
        policy = self.policy
        if np.ndim(observation) != 2 or np.shape(observation)[1:] != policy.observation_space.shape:
            raise ValueError(f"DeterministicActor takes a batch of observations of shape (n, "
                             f"{policy.observation_space.shape[0]}), got {np.shape(observation)}")
        if self.normalization is not None:
            observation = self.normalization.normalize_obs(observation)
        with th.no_grad():
            features = BaseModel.extract_features(policy, th.as_tensor(np.array(observation), device=policy.device),
                                                  policy.pi_features_extractor)
            output = policy.action_net(policy.mlp_extractor.forward_actor(features))
            if th.isnan(output).any():
                raise UltraRLError("the policy's output is NaN: its weights or observations are not finite")
            if self.categorical:  # torch's Categorical: normalised logits, softmax, then the mode
                output = th.argmax(th.softmax(output - output.logsumexp(dim=-1, keepdim=True), dim=-1), dim=1)
        actions = output.cpu().numpy().reshape((-1, *policy.action_space.shape))
        if self.box is not None:
            actions = np.clip(actions, self.box.low, self.box.high)
        return actions, state


def evaluate_agent(
    agent: BaseAlgorithm, env_id: str, n_episodes: int = 10, seed: int = 0, deterministic: bool = True
) -> EvalResult:
    """Mean and std of the true return over ``n_episodes`` episodes, from seed ``seed``."""
    if n_episodes <= 0:
        raise UltraRLError(f"the number of evaluation episodes must be positive, got {n_episodes}")
    env = make_vec_env(env_id, n_envs=1, seed=seed)
    actor = DeterministicActor.for_agent(agent) if deterministic else None
    try:
        returns, lengths = evaluate_policy(
            actor or agent, env, n_eval_episodes=n_episodes, deterministic=deterministic, return_episode_rewards=True
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
