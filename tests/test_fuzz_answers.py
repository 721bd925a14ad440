"""Property-based fuzzing of LLM answers: whatever a model (or a broken server) returns, parsing
and validation never raise anything but ``InvalidAnswer``, every rejected critical step is
counted, and what passes is inside the episode and the action space.

Examples per test are fixed (derandomised, no example database) so CI runs the same inputs;
the total is asserted to be at least 4,500 of the 5,000 drawn (the module's tests in one
process, in file order: ``make test`` runs a file on one worker).
"""

from __future__ import annotations

import json
import math
from typing import Any

import gymnasium as gym
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ultrarl.explain.validation import MAX_RATIONALE_CHARS, validate_answer
from ultrarl.llm.backend import ChatResult
from ultrarl.llm.client import InvalidAnswer, LLMClient, extract_json

EPISODE_LENGTH = 50
K = 3
DISCRETE = gym.spaces.Discrete(3)
DISCRETE_NAMES = ("left", "stay", "right")
CONTINUOUS = gym.spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)
CONTINUOUS_NAMES = ("thigh", "leg", "foot")

COUNTS = {"examples": 0, "rejected_answers": 0, "dropped_steps": 0, "accepted_steps": 0}
def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples, derandomize=True, database=None, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )

# Values a model might put anywhere: wrong types, huge and non-finite numbers, odd strings.
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 49, 50, 51, 0.5, 1e308, -1e308, 2**63, float("nan")]),
)
strings = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["left", "RIGHT", " stay ", "jump", "3", "-1", "49", "50", "1e400", "9" * 400, "NaN", ""]),
    st.tuples(st.text(min_size=1, max_size=8), st.integers(300, 3000)).map(lambda t: t[0] * t[1]),  # enormous
)
scalars = st.one_of(st.none(), st.booleans(), numbers, strings)
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(st.text(max_size=10), children, max_size=5)),
    max_leaves=10,
)
actions = st.one_of(
    json_like,
    st.lists(numbers, min_size=0, max_size=6),
    st.lists(st.floats(-2, 2), min_size=3, max_size=3),
    st.integers(-3, 5),
    st.sampled_from(list(DISCRETE_NAMES) + ["fly"]),
)
critical_step = st.fixed_dictionaries(
    {},
    optional={
        "step": st.one_of(st.integers(-5, 60), numbers, strings, json_like),
        "rationale": st.one_of(strings, json_like),
        "suggested_action": actions,
        "implicit_reward": st.one_of(st.floats(-3, 3), numbers, strings, json_like),
        "extra": json_like,
    },
)
# Nearly right answers, one field often off: they exercise the per-step drop counting.
plausible_step = st.fixed_dictionaries(
    {
        "step": st.one_of(st.integers(-2, 52), st.sampled_from(["3", "-1", "49", "50", "²"])),
        "rationale": st.text(max_size=30),
        "suggested_action": st.one_of(
            st.lists(st.one_of(st.floats(-3, 3), st.sampled_from([math.nan, math.inf])), min_size=2, max_size=4),
            st.lists(st.floats(-1, 1), min_size=3, max_size=3),
            st.integers(-1, 3),
            st.sampled_from(list(DISCRETE_NAMES) + ["LEFT", "fly", "1"]),
        ),
        "implicit_reward": st.one_of(st.floats(-3, 3), st.sampled_from([math.nan, "0.5", None, True])),
    }
)
answers = st.one_of(
    st.fixed_dictionaries({"critical_steps": st.lists(plausible_step, max_size=6)}),
    json_like,
    st.fixed_dictionaries({"critical_steps": st.lists(st.one_of(critical_step, json_like), max_size=8)}),
    st.fixed_dictionaries({"critical_steps": json_like}),
)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


raw_texts = st.one_of(
    st.text(max_size=300),
    answers.map(lambda a: json.dumps(a, allow_nan=True)),
    answers.map(lambda a: "Sure! ```json\n" + json.dumps(a, allow_nan=True) + "\n``` hope this helps"),
    answers.map(lambda a: json.dumps(a, allow_nan=True)[: len(json.dumps(a, allow_nan=True)) // 2]),  # truncated
    st.integers(1, 5000).map(lambda d: '{"critical_steps": ' + _nested(d) + "}"),  # deeply nested
    st.integers(1, 5000).map(lambda d: "{" * d),
)


def _check(value: Any, space: gym.Space, names: tuple[str, ...]) -> None:
    """The invariants: only InvalidAnswer escapes; accepted + dropped = the items given."""
    COUNTS["examples"] += 1
    try:
        result = validate_answer(value, EPISODE_LENGTH, space, names, K)
    except InvalidAnswer:
        COUNTS["rejected_answers"] += 1
        return
    items = value["critical_steps"]
    assert len(result.advice) + result.dropped == len(items)
    assert len(result.advice) <= K and len(result.reasons) == result.dropped
    COUNTS["dropped_steps"] += result.dropped
    COUNTS["accepted_steps"] += len(result.advice)
    steps = [a.step for a in result.advice]
    assert len(set(steps)) == len(steps)
    for advice in result.advice:
        assert isinstance(advice.step, int) and 0 <= advice.step < EPISODE_LENGTH
        assert -1.0 <= advice.implicit_reward <= 1.0 and math.isfinite(advice.implicit_reward)
        assert isinstance(advice.rationale, str) and len(advice.rationale) <= MAX_RATIONALE_CHARS
        if isinstance(space, gym.spaces.Discrete):
            assert isinstance(advice.suggested_action, int) and 0 <= advice.suggested_action < space.n
        else:
            action = np.asarray(advice.suggested_action)
            assert action.shape == (3,) and np.all(np.isfinite(action)) and np.all(np.abs(action) <= 1.0)


@fuzz(1500)
@given(raw_texts)
def test_raw_text_never_escapes_as_an_exception(text: str) -> None:
    try:
        value = extract_json(text)
    except InvalidAnswer:
        COUNTS["examples"] += 1
        COUNTS["rejected_answers"] += 1
        return
    _check(value, CONTINUOUS, CONTINUOUS_NAMES)


@fuzz(1500)
@given(answers)
def test_structured_answers_for_a_continuous_space(value: Any) -> None:
    _check(value, CONTINUOUS, CONTINUOUS_NAMES)


@fuzz(1500)
@given(answers)
def test_structured_answers_for_a_discrete_space(value: Any) -> None:
    _check(value, DISCRETE, DISCRETE_NAMES)


class _ScriptedBackend:
    """A test double for the LLM: returns the fuzzed text (control flow, not model quality)."""

    name = "scripted"
    model = "fuzz"
    max_concurrency = 1
    config: dict = {}

    def __init__(self, text: str) -> None:
        self.text = text

    def chat(self, messages, schema, max_tokens, temperature, seed, shared_prefix="") -> ChatResult:  # type: ignore[no-untyped-def]
        return ChatResult(text=self.text, prompt_tokens=10, completion_tokens=len(self.text) // 4, latency_s=0.0)

    def count_tokens(self, text: str) -> int:
        return len(text) // 4


@fuzz(500)
@given(raw_texts)
def test_the_client_counts_every_unusable_answer(text: str) -> None:
    client = LLMClient(_ScriptedBackend(text), cache=None, max_reasks=1)

    def validate(value: Any) -> Any:
        return validate_answer(value, EPISODE_LENGTH, DISCRETE, DISCRETE_NAMES, K)

    result = client.ask_json([{"role": "user", "content": "q"}], None, validate, "fuzz")
    usage = client.ledger.to_dict()
    COUNTS["examples"] += 1
    if result is None:
        # an answer that only copies the prompt (a bare step number as rationale) is counted apart
        assert usage["failed_episodes"] == 1 and usage["reasks"] == 1
        assert usage["parse_failures"] + usage["copied_answers"] == 2
    else:
        assert usage["failed_episodes"] == 0


def test_at_least_forty_five_hundred_answers_were_fuzzed() -> None:
    # Runs after the property tests of this module (pytest keeps file order).
    assert COUNTS["examples"] >= 4_500, COUNTS  # of 5,000 drawn
    print(f"fuzzed answers: {COUNTS}")
