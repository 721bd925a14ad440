"""Fitting a long episode into a prompt token budget without losing the steps that matter.

Kept first: the last steps before the episode ended (a fall is usually caused there), the first
step, steps where the reward dropped sharply and steps where the action changed the most. The
remaining budget is spent on evenly spaced steps, so the LLM still sees the episode's arc. Step
numbers are always the original ones, so the LLM can cite them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

TAIL_STEPS = 8  # steps before the end that are always kept


def salience(rewards: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Per-step score: reward drop from the previous step plus action change (both z-scored)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    acts = np.asarray(actions, dtype=np.float64).reshape(len(rewards), -1)
    reward_drop = np.zeros_like(rewards)
    reward_drop[1:] = np.maximum(rewards[:-1] - rewards[1:], 0.0)
    action_change = np.zeros_like(rewards)
    action_change[1:] = np.linalg.norm(np.diff(acts, axis=0), axis=1)
    return _zscore(reward_drop) + _zscore(action_change)


def _zscore(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


def select_steps(
    line_tokens: Sequence[int],
    rewards: np.ndarray,
    actions: np.ndarray,
    budget_tokens: int,
    gap_tokens: int = 8,
) -> list[int]:
    """Indices of the steps to show, in order, whose lines (plus gap markers) fit the budget."""
    n = len(line_tokens)
    if sum(line_tokens) <= budget_tokens:
        return list(range(n))
    chosen: set[int] = set()
    spent = 0

    def try_add(i: int) -> bool:
        nonlocal spent
        if i in chosen:
            return True
        cost = line_tokens[i] + gap_tokens  # worst case: each kept line opens a gap marker
        if spent + cost > budget_tokens:
            return False
        chosen.add(i)
        spent += cost
        return True

    for i in [n - 1 - k for k in range(min(TAIL_STEPS, n))] + [0]:
        try_add(i)
    # Up to 40% of the budget for salient steps, the rest for an even spread.
    salient_budget = 0.4 * budget_tokens
    for i in np.argsort(-salience(rewards, actions), kind="stable"):
        if spent >= salient_budget:
            break
        try_add(int(i))
    remaining = [i for i in range(n) if i not in chosen]
    mean_cost = float(np.mean([line_tokens[i] for i in remaining])) + gap_tokens if remaining else 1.0
    slots = int((budget_tokens - spent) // mean_cost)
    if slots > 0 and remaining:
        for i in np.unique(np.linspace(0, len(remaining) - 1, num=min(slots, len(remaining))).round().astype(int)):
            try_add(remaining[int(i)])
    # An answer must name a shown step: where the instructions leave no room, the last one still goes.
    return sorted(chosen) or [n - 1]


def render_selected(lines: Sequence[str], selected: Sequence[int]) -> str:
    """Join the kept lines, marking every run of omitted steps with its range."""
    out: list[str] = []
    previous = -1
    for i in selected:
        if i > previous + 1:
            out.append(f"... steps {previous + 1}-{i - 1} omitted ...")
        out.append(lines[i])
        previous = i
    if previous < len(lines) - 1:
        out.append(f"... steps {previous + 1}-{len(lines) - 1} omitted ...")
    return "\n".join(out)


def compress_episode(
    lines: Sequence[str],
    rewards: np.ndarray,
    actions: np.ndarray,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
) -> tuple[str, list[int]]:
    """The episode text within ``budget_tokens`` and the step numbers it shows."""
    selected = select_steps([count_tokens(line) + 1 for line in lines], rewards, actions, budget_tokens)
    return render_selected(lines, selected), selected
