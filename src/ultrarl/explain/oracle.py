"""The oracle advisor: an expert policy in the LLM's place. An upper bound, labelled so everywhere.

Critical steps of an episode are those where the agent's *deterministic* action (its policy's
mean or mode, not the exploration noise of a sampled rollout action) differs most from the
expert's, actions that act alike counting as one (Pong's FIRE variants). The suggestion is the
expert's deterministic action; the implicit reward rates the agent's own action by its distance
to the expert's (``rate_action``: +1 equal, -1 a full range apart or, discrete, a different
action). During refinement the expert can also be asked live at every matched state
(``ModulationSettings.live_advisor``), which is the machinery's true upper bound.

The offline oracle answers once, as an LLM does, in the LLM's answer format: at each critical
state, its action and then its plan, the actions it takes from that state on for the plan's
length, found by playing the expert from the state's snapshot (``expert_plans``).
"""

from __future__ import annotations

import numpy as np
from gymnasium.spaces import Discrete
from stable_baselines3 import PPO

from ultrarl.envs.actions import action_distance, rate_action
from ultrarl.envs.factory import make_env
from ultrarl.envs.rollout import Trajectory
from ultrarl.envs.snapshot import restore_snapshot
from ultrarl.explain.explainer import CriticalState, as_json_action
from ultrarl.explain.prompts import return_so_far
from ultrarl.interpret.describer import StateDescriber


def expert_advisor(expert: PPO):  # type: ignore[no-untyped-def]
    """The expert as a live advisor: observations to its deterministic actions."""

    def advise(observations: np.ndarray) -> np.ndarray:
        actions, _ = expert.predict(np.asarray(observations, dtype=np.float32), deterministic=True)
        return np.asarray(actions)

    return advise


def ranked_steps(distance: np.ndarray, discrete: bool, seed: int) -> np.ndarray:
    """Steps by decreasing distance. Discrete distances are 0 or 1, so every disagreement ties:
    ties go in a seeded random order there, never "the first steps of the episode". (Box
    distances keep their stable order, as in the published MountainCar and Hopper benches.)"""
    order = np.random.default_rng(seed).permutation(len(distance)) if discrete else np.arange(len(distance))
    return order[np.argsort(-distance[order], kind="stable")]


def oracle_critical_states(
    expert: PPO, agent: PPO, trajectories: list[Trajectory], describer: StateDescriber, k: int,
    equivalent: tuple[int, ...] | None = None,
) -> list[CriticalState]:
    """:param equivalent: discrete actions that act alike (``envs.actions.equivalent_actions``)."""
    states: list[CriticalState] = []
    space = describer.action_space
    for trajectory in trajectories:
        obs = trajectory.observations
        expert_actions, _ = expert.predict(obs, deterministic=True)
        agent_actions, _ = agent.predict(obs, deterministic=True)
        distance = action_distance(agent_actions, expert_actions, space, equivalent)
        ratings = rate_action(agent_actions, expert_actions, space, equivalent)
        ranked = ranked_steps(distance, isinstance(space, Discrete), trajectory.episode)
        for step in sorted(int(i) for i in ranked[:k] if distance[i] > 0):
            suggested = as_json_action(np.asarray(expert_actions[step]))
            states.append(
                CriticalState(
                    episode=trajectory.episode,
                    step=step,
                    rationale=(
                        f"oracle (expert advisor; upper bound, not an LLM): the agent's deterministic action is "
                        f"{distance[step]:.2f} of the action range away from the expert's"
                    ),
                    suggested_action=suggested,
                    implicit_reward=float(ratings[step]),
                    agent_action=as_json_action(agent_actions[step]),
                    return_so_far=return_so_far(trajectory, step),
                    state_text=describer.describe_state(obs[step], obs[step - 1] if step > 0 else None),
                    suggested_action_text=describer.describe_action(np.asarray(suggested)),
                    agent_action_text=describer.describe_action(agent_actions[step]),
                )
            )
    return states


def expert_plans(expert: PPO, env_id: str, states: list[CriticalState], trajectories: list[Trajectory],
                 plan_steps: int) -> list[CriticalState]:
    """Each state with the expert's plan: the actions it takes after its suggestion, playing
    deterministically from the state's snapshot for up to ``plan_steps`` steps in all (fewer if
    the episode ends). Without snapshots, a state keeps its suggestion alone."""
    by_episode = {t.episode: t for t in trajectories}
    env = make_env(env_id, seed=0)
    try:
        planned = []
        for state in states:
            snapshots = by_episode[state.episode].snapshots
            if snapshots is None or plan_steps <= 1:
                planned.append(state)
                continue
            obs = restore_snapshot(env, snapshots[state.step])
            actions = []
            for _ in range(plan_steps):
                action, _ = expert.predict(np.asarray(obs, dtype=np.float32), deterministic=True)
                actions.append(as_json_action(np.asarray(action)))
                obs, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
            planned.append(state.model_copy(update={"suggested_action": actions[0], "plan": actions[1:]}))
        return planned
    finally:
        env.close()
