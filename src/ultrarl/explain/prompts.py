"""Prompt templates: Jinja2 files beside this module, versioned (the version is in the cache key)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import jinja2
import numpy as np

from ultrarl.envs.rollout import Trajectory
from ultrarl.interpret.compress import compress_episode
from ultrarl.interpret.describer import StateDescriber
from ultrarl.llm.backend import Messages

PROMPT_VERSION = "one-pass/v2"
_TEMPLATES = {"system": "system_v1.j2", "user": "user_v2.j2"}
PLAN_SEGMENTS = 4  # an answer's plan: at most this many held actions
# Chat-template wrapping (role markers, BOS) the token count of the raw text does not see.
CHAT_OVERHEAD_TOKENS = 24

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("ultrarl.explain", "templates"),
    undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty string
    keep_trailing_newline=False,
    autoescape=False,
)


@dataclass(frozen=True)
class EpisodePrompt:
    episode: int
    messages: Messages
    schema: dict[str, Any]
    shown_steps: list[int]
    prompt_tokens: int  # as counted by the backend's tokenizer (or estimate)
    uncompressed_tokens: int
    episode_length: int
    shared_prefix: str = ""  # the start of the user message that every episode's prompt shares

    def render_text(self) -> str:
        """The prompt as a person reads it (``explain --dry-run``)."""
        head = (
            f"===== episode {self.episode}: {self.prompt_tokens} prompt tokens "
            f"({self.uncompressed_tokens} before compression), {len(self.shown_steps)} of "
            f"{self.episode_length} steps shown ====="
        )
        body = "\n\n".join(f"--- {m['role']} ---\n{m['content']}" for m in self.messages)
        return f"{head}\n{body}\n"


def answer_schema(describer: StateDescriber, shown_steps: list[int], k: int, plan_steps: int = 1) -> dict[str, Any]:
    """JSON schema of the answer. Servers with grammar support constrain step and action shape
    with it; numeric bounds are ignored by some (llama.cpp), so validation never relies on it."""
    if describer.discrete:
        action: dict[str, Any] = {"type": "integer", "enum": list(range(len(describer.spec.action_names)))}
    else:
        dim = len(describer.spec.action_names)
        action = {"type": "array", "items": {"type": "number"}, "minItems": dim, "maxItems": dim}
    return {
        "type": "object",
        "properties": {
            "critical_steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": k,
                "items": {
                    "type": "object",
                    "properties": {
                        "step": {"type": "integer", "enum": shown_steps},
                        "rationale": {"type": "string", "maxLength": 300},
                        "suggested_action": action,
                        "plan": {
                            "type": "array",
                            "maxItems": PLAN_SEGMENTS if plan_steps > 1 else 0,
                            "items": {
                                "type": "object",
                                "properties": {"action": action,
                                               "steps": {"type": "integer", "minimum": 1,
                                                         "maximum": max(1, plan_steps - 1)}},
                                "required": ["action", "steps"],
                            },
                        },
                        "implicit_reward": {"type": "number", "minimum": -1, "maximum": 1},
                    },
                    "required": ["step", "rationale", "suggested_action", "plan", "implicit_reward"],
                },
            }
        },
        "required": ["critical_steps"],
    }


def _action_example(describer: StateDescriber) -> str:
    if describer.discrete:
        return "<action index>"
    return "[" + ", ".join(f"<{name}>" for name in describer.spec.action_names) + "]"


def episode_lines(trajectory: Trajectory, describer: StateDescriber) -> list[str]:
    """One line per step, in words (velocities of decoded observations use the step before)."""
    obs = trajectory.observations
    return [
        describer.describe_step(
            t, obs[t], trajectory.actions[t], float(trajectory.rewards[t]), obs[t - 1] if t > 0 else None
        )
        for t in range(trajectory.length)
    ]


def build_episode_prompt(
    trajectory: Trajectory,
    describer: StateDescriber,
    count_tokens: Any,
    k: int = 3,
    token_budget: int = 3000,
    plan_steps: int = 1,
) -> EpisodePrompt:
    """Render the prompt for one episode, compressing its steps so the whole prompt fits."""
    lines = episode_lines(trajectory, describer)
    common = {
        "context": describer.context,
        "legend": describer.quantity_legend(),
        "episode": trajectory.episode,
        "length": trajectory.length,
        "episode_return": trajectory.episode_return,
        "terminated": trajectory.terminated,
        "k": k,
        "action_instructions": describer.action_instructions(),
        "action_example": _action_example(describer),
        "plan_steps": plan_steps,
        "plan_segments": PLAN_SEGMENTS,
    }
    system = _env.get_template(_TEMPLATES["system"]).render()
    user_template = _env.get_template(_TEMPLATES["user"])
    frame = user_template.render(**common, omitted=True, episode_text="")
    overhead = count_tokens(system) + count_tokens(frame) + CHAT_OVERHEAD_TOKENS
    full_text = "\n".join(lines)
    uncompressed = overhead + count_tokens(full_text)
    episode_text, shown = compress_episode(
        lines, trajectory.rewards, trajectory.actions, max(token_budget - overhead, 64), count_tokens
    )
    user = user_template.render(**common, omitted=len(shown) < trajectory.length, episode_text=episode_text)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    # The environment's context and legend, up to the line that names the episode.
    other_episode = user_template.render(**{**common, "episode": "#"}, omitted=False, episode_text="")
    shared = os.path.commonprefix([user, other_episode])
    return EpisodePrompt(
        episode=trajectory.episode,
        messages=messages,
        schema=answer_schema(describer, shown, k, plan_steps),
        shown_steps=shown,
        prompt_tokens=count_tokens(system) + count_tokens(user) + CHAT_OVERHEAD_TOKENS,
        uncompressed_tokens=uncompressed,
        episode_length=trajectory.length,
        shared_prefix=shared[: shared.rfind("\n") + 1],
    )


def return_so_far(trajectory: Trajectory, step: int) -> float:
    return float(np.sum(trajectory.rewards[:step]))
