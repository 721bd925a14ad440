"""Validation of every field the LLM returns.

Small models ignore numeric bounds even under a JSON schema, and remote models ignore schemas
they do not support, so nothing from an answer is trusted: a step must lie inside the episode,
a discrete action must be a valid index or name, a continuous action must have the right length
(values are clipped to the bounds), the implicit reward must be a finite number (clipped to
[-1, 1]). Anything else is dropped and counted; a field that cannot be read at all never raises
anything but :class:`InvalidAnswer`.

A critical step whose rationale copies the prompt instead of answering (the template's
placeholder ``<why this step matters>``, or a bare step number such as "step 99", both seen from
the embedded models) is dropped and counted apart: its suggestion is no advice either.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from ultrarl.llm.client import InvalidAnswer

MAX_RATIONALE_CHARS = 500
# A rationale that is a placeholder ("<why this step matters>") or only names the step ("step 99").
_COPIED_RATIONALE = re.compile(r"^\s*(<[^<>]*>|(step\s*)?#?\d+)\s*[.:]?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Advice:
    step: int
    rationale: str
    suggested_action: int | list[float]
    implicit_reward: float
    plan: tuple[int | list[float], ...] = ()  # the further actions, one per step, after the suggested one


@dataclass(frozen=True)
class Dropped:
    """Why a critical step is not used."""

    reason: str
    copied: bool = False


@dataclass
class ValidatedAnswer:
    advice: list[Advice]
    dropped: int = 0  # critical steps dropped, copies included
    copied: int = 0  # of which copied the prompt instead of answering
    clipped: int = 0
    reasons: list[str] = field(default_factory=list)


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # ints beyond float range
        return None
    return number if math.isfinite(number) else None


def _parse_step(value: Any, episode_length: int) -> int | None:
    number = _finite_number(value)
    if number is None and isinstance(value, str) and _is_ascii_integer(value.strip().lstrip("-")):
        number = _finite_number(float(value.strip()))  # "1e400"-sized digit strings become inf: refused
    if number is None or number != int(number) or not 0 <= number < episode_length:
        return None
    return int(number)


def _is_ascii_integer(text: str) -> bool:
    # str.isdigit() accepts "²" and other Unicode digits that int() and float() refuse.
    return text.isascii() and text.isdigit()


def _parse_discrete(value: Any, action_names: tuple[str, ...]) -> int | None:
    n = len(action_names)
    if isinstance(value, str):
        text = value.strip().lower()
        for index, name in enumerate(action_names):
            if text == name.lower():
                return index
        if _is_ascii_integer(text):
            value = int(text)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    number = _finite_number(value)
    if number is None or number != int(number) or not 0 <= number < n:
        return None
    return int(number)


def _parse_continuous(value: Any, low: np.ndarray, high: np.ndarray) -> tuple[list[float], bool] | None:
    if not isinstance(value, list):
        value = [value]
    if len(value) != len(low):
        return None
    numbers = [_finite_number(v) for v in value]
    if any(v is None for v in numbers):
        return None
    raw = np.asarray(numbers, dtype=np.float64)
    clipped = np.clip(raw, low, high)
    return [float(v) for v in clipped], bool(np.any(clipped != raw))


def validate_answer(
    value: Any,
    episode_length: int,
    action_space: gym.Space,
    action_names: tuple[str, ...],
    k: int,
    plan_steps: int = 1,
) -> ValidatedAnswer:
    """The usable advice in an answer. Raises InvalidAnswer when nothing in it is usable."""
    if not isinstance(value, dict):
        raise InvalidAnswer("the answer must be a JSON object")
    items = value.get("critical_steps")
    if not isinstance(items, list):
        raise InvalidAnswer('the answer must have a list "critical_steps"')
    result = ValidatedAnswer(advice=[])
    seen_steps: set[int] = set()
    for item in items:
        parsed = _parse_item(item, episode_length, action_space, action_names, plan_steps)
        if len(result.advice) >= k:
            parsed = Dropped(f"more than {k} critical steps")
        elif not isinstance(parsed, Dropped) and parsed[0].step in seen_steps:
            parsed = Dropped(f"step {parsed[0].step} given twice")
        if isinstance(parsed, Dropped):
            result.dropped += 1
            result.copied += int(parsed.copied)
            result.reasons.append(parsed.reason)
            continue
        advice, clipped = parsed
        seen_steps.add(advice.step)
        result.advice.append(advice)
        result.clipped += clipped
    if not result.advice:
        message = "no usable critical step: " + "; ".join(result.reasons[:3]) if result.reasons else "no critical steps given"
        raise InvalidAnswer(message, copied=result.copied > 0 and result.copied == result.dropped)
    return result


def _parse_item(
    item: Any, episode_length: int, action_space: gym.Space, action_names: tuple[str, ...], plan_steps: int
) -> tuple[Advice, int] | Dropped:
    """One critical step as advice and its number of clipped fields, or why it is dropped."""
    if not isinstance(item, dict):
        return Dropped("a critical step that is not an object")
    rationale = item.get("rationale")
    rationale = " ".join(rationale.split())[:MAX_RATIONALE_CHARS] if isinstance(rationale, str) else ""
    if _COPIED_RATIONALE.match(rationale):
        return Dropped(f"the rationale {rationale[:40]!r} copies the prompt instead of answering", copied=True)
    step = _parse_step(item.get("step"), episode_length)
    if step is None:
        return Dropped(f"step {str(item.get('step'))[:40]!r} is not inside the episode (0..{episode_length - 1})")
    action = _parse_action(item.get("suggested_action"), action_space, action_names)
    if isinstance(action, str):
        return Dropped(action)
    reward = _finite_number(item.get("implicit_reward"))
    if reward is None:
        return Dropped(f"implicit reward {str(item.get('implicit_reward'))[:40]!r} is not a finite number")
    plan, plan_clipped = _parse_plan(item.get("plan"), action_space, action_names, plan_steps - 1)
    clipped = action[1] + int(not -1.0 <= reward <= 1.0) + plan_clipped
    return Advice(step, rationale, action[0], min(1.0, max(-1.0, reward)), plan), clipped


def _parse_plan(
    value: Any, action_space: gym.Space, action_names: tuple[str, ...], max_steps: int
) -> tuple[tuple[int | list[float], ...], int]:
    """The plan's segments ({"action", "steps"}) as one action per step, at most ``max_steps``;
    it ends at the first segment that cannot be read. Returns the actions and 1 if anything was
    cut or clipped (a missing plan is no plan: the suggestion alone)."""
    if value is None or max_steps <= 0:
        return (), 0
    if not isinstance(value, list):
        return (), 1
    actions: list[int | list[float]] = []
    cut = 0
    for segment in value:
        steps = _finite_number(segment.get("steps")) if isinstance(segment, dict) else None
        action = _parse_action(segment.get("action"), action_space, action_names) if isinstance(segment, dict) else ""
        if steps is None or steps < 1 or steps != int(steps) or isinstance(action, str):
            return tuple(actions), 1
        cut |= action[1]
        room = max_steps - len(actions)
        cut |= int(steps) > room
        actions += [action[0]] * min(int(steps), room)
        if len(actions) >= max_steps:
            break
    return tuple(actions), int(cut)


def _parse_action(
    value: Any, action_space: gym.Space, action_names: tuple[str, ...]
) -> tuple[int | list[float], int] | str:
    """A suggested action and whether it was clipped, or why it is not an action."""
    if isinstance(action_space, gym.spaces.Discrete):
        index = _parse_discrete(value, action_names)
        return (index, 0) if index is not None else f"suggested action {str(value)[:40]!r} is not a valid action"
    low = np.asarray(action_space.low, dtype=np.float64).ravel()  # type: ignore[attr-defined]
    high = np.asarray(action_space.high, dtype=np.float64).ravel()  # type: ignore[attr-defined]
    parsed = _parse_continuous(value, low, high)
    if parsed is None:
        return f"suggested action {str(value)[:40]!r} is not {len(low)} finite numbers"
    return parsed[0], int(parsed[1])
