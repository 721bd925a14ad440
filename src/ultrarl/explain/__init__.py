"""Stages 3-4, explanation: critical states, suggested actions and implicit rewards from an LLM."""

from ultrarl.explain.explainer import CriticalState, Explainer, read_explanations, write_explanations
from ultrarl.explain.prompts import PROMPT_VERSION, build_episode_prompt
from ultrarl.explain.validation import validate_answer

__all__ = [
    "PROMPT_VERSION",
    "CriticalState",
    "Explainer",
    "build_episode_prompt",
    "read_explanations",
    "validate_answer",
    "write_explanations",
]
