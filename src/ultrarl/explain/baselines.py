"""Critical states without an LLM, for the baselines: the mask network (StateMask-R, RICE),
uniformly random steps (``random``), uniformly random advice (``random-advice``, the lower bound
of advice) and the expert advisor (``oracle``).

Each returns the same ``CriticalState`` records as the LLM path, so explanations.jsonl, the
report and the reset pool are built the same way for every method.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from ultrarl.envs.actions import uniform_action
from ultrarl.envs.rollout import Trajectory
from ultrarl.explain.explainer import CriticalState, as_json_action
from ultrarl.explain.mask_network import MaskNetwork, critical_steps_by_mask, random_critical_steps
from ultrarl.explain.prompts import return_so_far
from ultrarl.interpret.describer import StateDescriber


def _record(trajectory: Trajectory, step: int, describer: StateDescriber, rationale: str) -> CriticalState:
    obs, action = trajectory.observations, trajectory.actions[step]
    return CriticalState(
        episode=trajectory.episode,
        step=step,
        rationale=rationale,
        suggested_action=as_json_action(action),  # no suggestion: resets only
        implicit_reward=0.0,
        agent_action=as_json_action(action),
        return_so_far=return_so_far(trajectory, step),
        state_text=describer.describe_state(obs[step], obs[step - 1] if step > 0 else None),
        suggested_action_text="(none: reset only)",
        agent_action_text=describer.describe_action(action),
    )


def mask_critical_states(
    mask: MaskNetwork, trajectories: list[Trajectory], describer: StateDescriber, k: int
) -> list[CriticalState]:
    states = []
    for trajectory in trajectories:
        importance = mask.importance(trajectory.observations)
        for step in critical_steps_by_mask(mask, trajectory, k):
            states.append(_record(trajectory, step, describer,
                                  f"mask network keeps the agent's action here with probability {importance[step]:.2f}"))
    return states


def random_critical_states(
    trajectories: list[Trajectory], describer: StateDescriber, k: int, seed: int
) -> list[CriticalState]:
    rng = np.random.default_rng(seed)
    return [
        _record(trajectory, step, describer, "uniformly random step (baseline)")
        for trajectory in trajectories
        for step in random_critical_steps(trajectory, k, rng)
    ]


RANDOM_PLAN_SEGMENTS = 4  # at most this many held actions in a random plan, as an LLM writes a few


def random_advice(action_space: gym.Space, plan_steps: int, rng: np.random.Generator
                  ) -> tuple[int | list[float], list[int | list[float]], float]:
    """Advice worth nothing: a plan of 1-4 uniformly random actions, each held for a share of a
    uniformly random length of 1..``plan_steps`` steps, and a uniformly random rating.
    Returns (suggested action, the plan's further actions, rating)."""
    length = int(rng.integers(1, plan_steps + 1))
    segments = int(rng.integers(1, min(RANDOM_PLAN_SEGMENTS, length) + 1))
    cuts = np.sort(rng.choice(np.arange(1, length), size=segments - 1, replace=False)) if segments > 1 else []
    bounds = [0, *cuts, length]
    plan: list[int | list[float]] = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        plan += [as_json_action(np.asarray(uniform_action(action_space, rng)))] * int(end - start)
    return plan[0], plan[1:], float(rng.uniform(-1.0, 1.0))


def random_advice_states(
    trajectories: list[Trajectory], describer: StateDescriber, k: int, seed: int, plan_steps: int
) -> list[CriticalState]:
    """Uniformly random steps with uniformly random advice, in the LLM's answer format."""
    rng = np.random.default_rng(seed)
    states = []
    for trajectory in trajectories:
        for step in random_critical_steps(trajectory, k, rng):
            suggested, plan, rating = random_advice(describer.action_space, plan_steps, rng)
            record = _record(trajectory, step, describer, "uniformly random advice (lower bound)")
            states.append(record.model_copy(update={
                "suggested_action": suggested, "plan": plan, "implicit_reward": rating,
                "suggested_action_text": describer.describe_action(np.asarray(suggested))}))
    return states


def corrupt_advice(states: list[CriticalState], action_space: gym.Space, probability: float, plan_steps: int,
                   seed: int) -> list[CriticalState]:
    """Each state's advice replaced, with ``probability``, by uniformly random advice (how good
    must advice be to help?); the states themselves stay."""
    if probability <= 0:
        return states
    rng = np.random.default_rng(seed)
    corrupted = []
    for state in states:
        if rng.random() < probability:
            suggested, plan, rating = random_advice(action_space, plan_steps, rng)
            state = state.model_copy(update={"suggested_action": suggested, "plan": plan, "implicit_reward": rating,
                                             "rationale": "replaced by uniformly random advice (advice_noise)"})
        corrupted.append(state)
    return corrupted
