"""Validation of every field the LLM returns.

Small models ignore numeric bounds even under a JSON schema, and remote models ignore schemas
they do not support, so nothing from an answer is trusted: a step must lie inside the episode,
a discrete action must be a valid index or name, a continuous action must have the right length
(values are clipped to the bounds), the implicit reward must be a finite number (clipped to
[-1, 1]). Anything else is dropped and counted; a field that cannot be read at all never raises
anything but :class:`InvalidAnswer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from ultrarl.llm.client import InvalidAnswer

MAX_RATIONALE_CHARS = 500


@dataclass(frozen=True)
class Advice:
    step: int
    rationale: str
    suggested_action: int | list[float]
    implicit_reward: float


@dataclass
class ValidatedAnswer:
    advice: list[Advice]
    dropped: int = 0
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
) -> ValidatedAnswer:
    """The usable advice in an answer. Raises InvalidAnswer when nothing in it is usable."""
    if not isinstance(value, dict):
        raise InvalidAnswer("the answer must be a JSON object")
    items = value.get("critical_steps")
    if not isinstance(items, list):
        raise InvalidAnswer('the answer must have a list "critical_steps"')
    result = ValidatedAnswer(advice=[])
    discrete = isinstance(action_space, gym.spaces.Discrete)
    if not discrete:
        low = np.asarray(action_space.low, dtype=np.float64).ravel()  # type: ignore[attr-defined]
        high = np.asarray(action_space.high, dtype=np.float64).ravel()  # type: ignore[attr-defined]
    seen_steps: set[int] = set()

    def drop(reason: str) -> None:
        result.dropped += 1
        result.reasons.append(reason)

    for item in items:
        if len(result.advice) >= k:
            drop(f"more than {k} critical steps")
            continue
        if not isinstance(item, dict):
            drop("a critical step that is not an object")
            continue
        step = _parse_step(item.get("step"), episode_length)
        if step is None:
            drop(f"step {str(item.get('step'))[:40]!r} is not inside the episode (0..{episode_length - 1})")
            continue
        if step in seen_steps:
            drop(f"step {step} given twice")
            continue
        action: int | list[float]
        if discrete:
            parsed = _parse_discrete(item.get("suggested_action"), action_names)
            if parsed is None:
                drop(f"suggested action {str(item.get('suggested_action'))[:40]!r} is not a valid action")
                continue
            action = parsed
        else:
            parsed_c = _parse_continuous(item.get("suggested_action"), low, high)
            if parsed_c is None:
                drop(f"suggested action {str(item.get('suggested_action'))[:40]!r} is not {len(low)} finite numbers")
                continue
            action, was_clipped = parsed_c
            result.clipped += int(was_clipped)
        reward = _finite_number(item.get("implicit_reward"))
        if reward is None:
            drop(f"implicit reward {str(item.get('implicit_reward'))[:40]!r} is not a finite number")
            continue
        if not -1.0 <= reward <= 1.0:
            result.clipped += 1
            reward = min(1.0, max(-1.0, reward))
        rationale = item.get("rationale")
        rationale = " ".join(rationale.split())[:MAX_RATIONALE_CHARS] if isinstance(rationale, str) else ""
        seen_steps.add(step)
        result.advice.append(Advice(step, rationale, action, reward))
    if not result.advice:
        raise InvalidAnswer("no usable critical step: " + "; ".join(result.reasons[:3]) if result.reasons else "no critical steps given")
    return result
