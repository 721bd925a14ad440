"""Every LLM field is validated: bad ones are dropped and counted, never trusted, never raised."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

from ultrarl.explain.validation import validate_answer
from ultrarl.llm.client import InvalidAnswer

DISCRETE = gym.spaces.Discrete(2)
NAMES = ("push cart left", "push cart right")
BOX = gym.spaces.Box(low=np.array([-1.0, -2.0]), high=np.array([1.0, 2.0]), dtype=np.float32)


def item(step=3, action=1, reward=0.5, rationale="because"):  # type: ignore[no-untyped-def]
    return {"step": step, "rationale": rationale, "suggested_action": action, "implicit_reward": reward}


def test_discrete_action_by_index_and_by_name() -> None:
    answer = validate_answer(
        {"critical_steps": [item(1, 0), item(2, "Push cart RIGHT"), item(4, "1")]}, 10, DISCRETE, NAMES, k=3
    )
    assert [a.suggested_action for a in answer.advice] == [0, 1, 1]
    assert answer.dropped == 0


@pytest.mark.parametrize("bad_action", [2, -1, 1.5, "jump", None, True, [0, 1], {"a": 1}])
def test_invalid_discrete_action_is_dropped(bad_action: object) -> None:
    answer = validate_answer({"critical_steps": [item(1, bad_action), item(2, 0)]}, 10, DISCRETE, NAMES, k=3)
    assert answer.dropped == 1
    assert [a.step for a in answer.advice] == [2]


@pytest.mark.parametrize("bad_step", [-1, 10, 1e30, 2.5, "x", None, math.nan])
def test_step_outside_the_episode_is_dropped(bad_step: object) -> None:
    answer = validate_answer({"critical_steps": [item(bad_step), item(0)]}, 10, DISCRETE, NAMES, k=3)
    assert answer.dropped == 1 and [a.step for a in answer.advice] == [0]


def test_continuous_action_clipped_to_bounds_and_wrong_length_dropped() -> None:
    answer = validate_answer(
        {"critical_steps": [item(1, [5.0, -9.0]), item(2, [0.1]), item(3, [0.1, math.inf]), item(4, [0.5, 1.5])]},
        10, BOX, ("a", "b"), k=5,
    )
    assert [a.suggested_action for a in answer.advice] == [[1.0, -2.0], [0.5, 1.5]]
    assert answer.dropped == 2
    assert answer.clipped == 1


@pytest.mark.parametrize(("reward", "expected"), [(3.0, 1.0), (-7, -1.0), (0.25, 0.25)])
def test_reward_clipped_to_unit_interval(reward: float, expected: float) -> None:
    answer = validate_answer({"critical_steps": [item(1, 0, reward)]}, 10, DISCRETE, NAMES, k=3)
    assert answer.advice[0].implicit_reward == expected
    assert answer.clipped == int(reward != expected)


@pytest.mark.parametrize("reward", [math.nan, "good", None, True])
def test_unreadable_reward_is_dropped(reward: object) -> None:
    answer = validate_answer({"critical_steps": [item(1, 0, reward), item(2, 0)]}, 10, DISCRETE, NAMES, k=3)
    assert answer.dropped == 1


def test_duplicates_and_excess_steps_are_dropped() -> None:
    answer = validate_answer(
        {"critical_steps": [item(1), item(1), item(2), item(3), item(4)]}, 10, DISCRETE, NAMES, k=3
    )
    assert [a.step for a in answer.advice] == [1, 2, 3]
    assert answer.dropped == 2


@pytest.mark.parametrize("value", [[], "text", 3, {"steps": []}, {"critical_steps": "no"}, {"critical_steps": [1, 2]}])
def test_unusable_answers_raise_invalid_answer(value: object) -> None:
    with pytest.raises(InvalidAnswer):
        validate_answer(value, 10, DISCRETE, NAMES, k=3)


def test_rationale_is_normalised_and_bounded() -> None:
    answer = validate_answer({"critical_steps": [item(1, 0, 0.0, "a\n  b" + "x" * 2000)]}, 10, DISCRETE, NAMES, k=3)
    assert answer.advice[0].rationale.startswith("a b")
    assert len(answer.advice[0].rationale) == 500


@pytest.mark.parametrize("copied", ["<why this step matters>", "step 99", "Step 12.", "99", " #4 "])
def test_a_rationale_that_copies_the_prompt_is_dropped_and_counted_apart(copied: str) -> None:
    answer = validate_answer(
        {"critical_steps": [item(1, rationale=copied), item(2, rationale="the pole tips left at step 2")]},
        10, DISCRETE, NAMES, k=3,
    )
    assert [a.step for a in answer.advice] == [2]
    assert answer.dropped == 1 and answer.copied == 1
    with pytest.raises(InvalidAnswer) as raised:
        validate_answer({"critical_steps": [item(1, rationale=copied)]}, 10, DISCRETE, NAMES, k=3)
    assert raised.value.copied
    with pytest.raises(InvalidAnswer) as raised:  # a bad step is not a copy
        validate_answer({"critical_steps": [item(50)]}, 10, DISCRETE, NAMES, k=3)
    assert not raised.value.copied
