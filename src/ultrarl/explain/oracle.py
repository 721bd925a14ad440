"""The oracle advisor: an expert policy in the LLM's place. An upper bound, labelled so everywhere.

Critical steps of an episode are those where the agent's action differs most from the expert's
(continuous: distance relative to the action range; discrete: a different action, the most
harmful first). The suggestion is the expert's deterministic action; the implicit reward is the
sign of the expert's one-step advantage estimate of the agent's own transition,
r + γ·V_E(s') − V_E(s) (V_E(s') = 0 after a termination).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import PPO

from ultrarl.envs.rollout import Trajectory
from ultrarl.explain.explainer import CriticalState, as_json_action
from ultrarl.explain.prompts import return_so_far
from ultrarl.interpret.describer import StateDescriber

ORACLE_LABEL = "oracle (expert advisor; upper bound, not an LLM)"


def _values(expert: PPO, observations: np.ndarray) -> np.ndarray:
    obs_tensor, _ = expert.policy.obs_to_tensor(np.asarray(observations, dtype=np.float32))
    with th.no_grad():
        return expert.policy.predict_values(obs_tensor).cpu().numpy().ravel()


def oracle_critical_states(
    expert: PPO, trajectories: list[Trajectory], describer: StateDescriber, k: int
) -> list[CriticalState]:
    states: list[CriticalState] = []
    space = describer.action_space
    for trajectory in trajectories:
        obs, actions = trajectory.observations, trajectory.actions
        expert_actions, _ = expert.predict(obs, deterministic=True)
        values = _values(expert, obs)
        next_values = np.append(values[1:], 0.0 if trajectory.terminated else values[-1])
        advantage = trajectory.rewards + expert.gamma * next_values - values
        if isinstance(space, gym.spaces.Discrete):
            differs = (np.asarray(expert_actions).ravel() != np.asarray(actions).ravel()).astype(np.float64)
            score = differs * (1.0 + np.clip(-advantage, 0.0, None))  # harmful disagreements first
        else:
            span = np.asarray(space.high - space.low, dtype=np.float64)  # type: ignore[attr-defined]
            score = np.linalg.norm((np.asarray(expert_actions) - np.asarray(actions)) / span, axis=1)
        for step in sorted(int(i) for i in np.argsort(-score, kind="stable")[:k] if score[i] > 0):
            suggested = as_json_action(np.asarray(expert_actions[step]))
            states.append(
                CriticalState(
                    episode=trajectory.episode,
                    step=step,
                    rationale=(
                        f"{ORACLE_LABEL}: the expert acts differently here; one-step advantage of the "
                        f"agent's action under the expert's value function {advantage[step]:+.2f}"
                    ),
                    suggested_action=suggested,
                    implicit_reward=float(np.sign(advantage[step])),
                    agent_action=as_json_action(actions[step]),
                    return_so_far=return_so_far(trajectory, step),
                    state_text=describer.describe_state(obs[step], obs[step - 1] if step > 0 else None),
                    suggested_action_text=describer.describe_action(np.asarray(suggested)),
                    agent_action_text=describer.describe_action(actions[step]),
                )
            )
    return states
