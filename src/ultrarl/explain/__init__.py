"""Stages 3-4, identification: critical states, suggested actions and implicit rewards from an
LLM, or from the baselines' identifiers (mask network, random, expert)."""

from ultrarl.explain.explainer import CriticalState, Explainer, read_explanations, write_explanations
from ultrarl.explain.identify import IDENTIFIERS, IdentifyContext, identify_critical_states
from ultrarl.explain.prompts import PROMPT_VERSION, build_episode_prompt
from ultrarl.explain.validation import validate_answer

__all__ = [
    "IDENTIFIERS",
    "PROMPT_VERSION",
    "CriticalState",
    "Explainer",
    "IdentifyContext",
    "build_episode_prompt",
    "identify_critical_states",
    "read_explanations",
    "validate_answer",
    "write_explanations",
]
