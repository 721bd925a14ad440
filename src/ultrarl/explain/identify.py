"""Identification, one stage for every method: critical states from an LLM, the mask network
(StateMask-R, RICE), uniformly random steps or an expert (the oracle).

``IDENTIFIERS`` maps a method's ``identify`` kind (``ultrarl.methods``) to its function; each
takes the same ``IdentifyContext`` and returns ``CriticalState`` records, so explanations.jsonl,
the guidance table and the reset pool are built the same way for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stable_baselines3 import PPO

from ultrarl.envs.actions import equivalent_actions
from ultrarl.envs.rollout import Trajectory
from ultrarl.errors import UltraRLError
from ultrarl.explain.baselines import mask_critical_states, random_advice_states, random_critical_states
from ultrarl.explain.explainer import CriticalState, Explainer
from ultrarl.explain.mask_network import train_mask_network
from ultrarl.explain.oracle import expert_plans, oracle_critical_states
from ultrarl.interpret.describer import StateDescriber
from ultrarl.methods import Identifier


@dataclass
class IdentifyContext:
    """What any identifier may need; each reads its own part.

    :param explainer: the LLM explainer (``llm``)
    :param on_episode: progress callback of the LLM explainer
    :param mask_timesteps: training budget of the mask network (``mask``)
    :param mask_alpha: the mask network's bonus per blinded step
    :param expert: the expert policy (``expert``)
    :param plan_steps: the longest plan an advisor gives (``random-advice``; the offline expert's)
    :param expert_plans: the expert answers with plans, played from snapshots (the offline oracle)
    """

    agent: PPO
    env_id: str
    trajectories: list[Trajectory]
    describer: StateDescriber
    k: int
    seed: int
    explainer: Explainer | None = None
    on_episode: Callable[[int, list[CriticalState]], None] | None = None
    mask_timesteps: int = 20_000
    mask_alpha: float = 0.01
    expert: PPO | None = None
    plan_steps: int = 1
    expert_plans: bool = False
    details: dict[str, Any] = field(default_factory=dict)  # what the identifier reports (timings, ...)
    artifacts: dict[str, Any] = field(default_factory=dict)  # what it produced besides states (the mask network)


def _by_llm(ctx: IdentifyContext) -> list[CriticalState]:
    assert ctx.explainer is not None, "the llm identifier needs an explainer"
    return ctx.explainer.explain(ctx.trajectories, on_episode=ctx.on_episode)


def _by_mask(ctx: IdentifyContext) -> list[CriticalState]:
    mask = train_mask_network(ctx.agent, ctx.env_id, ctx.mask_timesteps, ctx.mask_alpha, ctx.seed)
    ctx.details["mask_train_wall_time_s"] = mask.train_wall_time_s
    ctx.artifacts["mask_network"] = mask.model
    return mask_critical_states(mask, ctx.trajectories, ctx.describer, ctx.k)


def _by_random(ctx: IdentifyContext) -> list[CriticalState]:
    return random_critical_states(ctx.trajectories, ctx.describer, ctx.k, ctx.seed)


def _by_expert(ctx: IdentifyContext) -> list[CriticalState]:
    if ctx.expert is None:
        raise UltraRLError("--method oracle needs --expert PATH.zip, an expert SB3 PPO agent for the environment")
    states = oracle_critical_states(ctx.expert, ctx.agent, ctx.trajectories, ctx.describer, ctx.k,
                                    equivalent_actions(ctx.env_id))
    if ctx.expert_plans:
        states = expert_plans(ctx.expert, ctx.env_id, states, ctx.trajectories, ctx.plan_steps)
    return states


def _by_random_advice(ctx: IdentifyContext) -> list[CriticalState]:
    return random_advice_states(ctx.trajectories, ctx.describer, ctx.k, ctx.seed, ctx.plan_steps)


def _none(ctx: IdentifyContext) -> list[CriticalState]:
    return []


IDENTIFIERS: dict[Identifier, Callable[[IdentifyContext], list[CriticalState]]] = {
    "none": _none,
    "llm": _by_llm,
    "mask": _by_mask,
    "random": _by_random,
    "expert": _by_expert,
    "random-advice": _by_random_advice,
}


def identify_critical_states(kind: Identifier, ctx: IdentifyContext) -> list[CriticalState]:
    return IDENTIFIERS[kind](ctx)
