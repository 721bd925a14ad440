"""Critical states without an LLM, for the baselines: the mask network (StateMask-R, RICE),
uniformly random steps (``random``) and the expert advisor (``oracle``).

Each returns the same ``CriticalState`` records as the LLM path, so explanations.jsonl, the
report and the reset pool are built the same way for every method.
"""

from __future__ import annotations

import numpy as np

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
