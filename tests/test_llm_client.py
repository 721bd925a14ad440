"""Control flow of the LLM client (a test double stands in for the model here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ultrarl.errors import UltraRLError
from ultrarl.llm.backend import ChatResult
from ultrarl.llm.cache import ResponseCache
from ultrarl.llm.client import InvalidAnswer, LLMClient, extract_json
from ultrarl.llm.factory import parse_llm_spec


class ScriptedBackend:
    name = "scripted"
    model = "script-1"
    max_concurrency = 1
    config: dict = {}

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.requests: list[list[dict[str, str]]] = []
        self.shared_prefixes: list[str] = []

    def chat(self, messages, schema, max_tokens, temperature, seed, shared_prefix=""):  # type: ignore[no-untyped-def]
        self.requests.append(messages)
        self.shared_prefixes.append(shared_prefix)
        return ChatResult(self.replies.pop(0), prompt_tokens=10, completion_tokens=5, latency_s=0.01)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def needs_answer(value: Any) -> int:
    if not isinstance(value, dict) or not isinstance(value.get("answer"), int):
        raise InvalidAnswer('"answer" must be an integer')
    return value["answer"]


MESSAGES = [{"role": "user", "content": "question"}]


def test_extract_json_from_prose_and_fences() -> None:
    assert extract_json('Sure! ```json\n{"a": [1, 2]}\n``` done') == {"a": [1, 2]}
    with pytest.raises(InvalidAnswer):
        extract_json("no json here")
    with pytest.raises(InvalidAnswer):
        extract_json('{"a": [1, 2')


def test_cached_answer_costs_no_call(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    first = LLMClient(ScriptedBackend(['{"answer": 4}']), cache)
    assert first.ask_json(MESSAGES, None, needs_answer, "v1") == 4
    backend = ScriptedBackend([])
    second = LLMClient(backend, cache)
    assert second.ask_json(MESSAGES, None, needs_answer, "v1") == 4
    assert backend.requests == [] and second.ledger.cache_hits == 1 and second.ledger.calls == 0
    # A different template version is a different question.
    third = LLMClient(ScriptedBackend(['{"answer": 5}']), cache)
    assert third.ask_json(MESSAGES, None, needs_answer, "v2") == 5


def test_invalid_answer_is_reasked_once_with_the_error(tmp_path: Path) -> None:
    backend = ScriptedBackend(['{"answer": "four"}', '{"answer": 4}'])
    client = LLMClient(backend, ResponseCache(tmp_path))
    assert client.ask_json(MESSAGES, None, needs_answer, "v1") == 4
    assert client.ledger.reasks == 1 and client.ledger.parse_failures == 1 and client.ledger.calls == 2
    assert "rejected" in backend.requests[1][-1]["content"]


def test_failure_after_reasks_is_counted_and_replayed_from_the_cache(tmp_path: Path) -> None:
    """A failed question is cached as a failure (never the bad answer): a re-run makes no call
    and fails the same way; retry_failures asks again, and a valid answer then replaces it."""
    cache = ResponseCache(tmp_path)
    client = LLMClient(ScriptedBackend(["garbage", '{"answer": null}']), cache)
    assert client.ask_json(MESSAGES, None, needs_answer, "v1") is None
    assert client.ledger.to_dict()["failed_episodes"] == 1
    assert client.ledger.to_dict()["failures"] == 1
    key = client.key_for(MESSAGES, None, "v1")
    assert cache.get(key) is None and "integer" in (cache.get_failure(key) or "")

    replay_backend = ScriptedBackend(['{"answer": 4}'])
    replay = LLMClient(replay_backend, cache)
    assert replay.ask_json(MESSAGES, None, needs_answer, "v1") is None
    assert replay_backend.requests == [] and replay.ledger.to_dict()["cached_failures"] == 1
    assert replay.ledger.to_dict()["failed_episodes"] == 1

    retry = LLMClient(ScriptedBackend(['{"answer": 4}']), cache, retry_failures=True)
    assert retry.ask_json(MESSAGES, None, needs_answer, "v1") == 4
    assert cache.get_failure(key) is None
    assert LLMClient(ScriptedBackend([]), cache).ask_json(MESSAGES, None, needs_answer, "v1") == 4


def test_cache_values_are_json(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    cache.put("k", {"x": [1, 2.5, "s"]})
    import sqlite3

    raw = sqlite3.connect(cache.path).execute("SELECT value FROM responses").fetchone()[0]
    assert json.loads(raw) == {"x": [1, 2.5, "s"]}


@pytest.mark.parametrize("spec", ["gpt", "local:llama70b", "openai:", "vllm:x", ""])
def test_bad_llm_spec_is_a_user_error(spec: str) -> None:
    with pytest.raises(UltraRLError):
        parse_llm_spec(spec)


def test_llm_specs() -> None:
    assert parse_llm_spec("local") == ("local", "smollm2")
    assert parse_llm_spec("local:gemma3") == ("local", "gemma3")
    assert parse_llm_spec("openai:gpt-4o-mini") == ("openai", "gpt-4o-mini")


def test_copied_answers_are_counted_apart_from_parse_failures(tmp_path: Path) -> None:
    def no_copies(value: Any) -> int:
        if value.get("answer") == "<placeholder>":
            raise InvalidAnswer("copies the prompt", copied=True)
        return needs_answer(value)

    client = LLMClient(ScriptedBackend(['{"answer": "<placeholder>"}', "garbage"]), ResponseCache(tmp_path))
    assert client.ask_json(MESSAGES, None, no_copies, "v1") is None
    usage = client.ledger.to_dict()
    assert usage["copied_answers"] == 1 and usage["parse_failures"] == 1 and usage["failed_episodes"] == 1


def test_the_shared_prefix_reaches_the_backend_and_the_key_where_the_backend_keeps_it(tmp_path: Path) -> None:
    """A backend that keeps the shared prefix evaluated answers a prompt split there: the split
    is part of its answers' key. Elsewhere the key is what it always was."""
    backend = ScriptedBackend(['{"answer": 1}', '{"answer": 2}'])
    client = LLMClient(backend, ResponseCache(tmp_path))
    assert client.ask_json(MESSAGES, None, needs_answer, "v1", "the context\n") == 1
    assert backend.shared_prefixes == ["the context\n"]
    assert client.key_for(MESSAGES, None, "v1", "the context\n") == client.key_for(MESSAGES, None, "v1", "other")
    backend.config = {"prefix_reuse": "shared-prefix"}
    assert client.key_for(MESSAGES, None, "v1", "the context\n") != client.key_for(MESSAGES, None, "v1", "other")
    assert client.ask_json(MESSAGES, None, needs_answer, "v1", "the context\n") == 2  # not the other mode's answer
