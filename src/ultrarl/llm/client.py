"""Asking a backend for a validated JSON answer, through the cache and the ledger.

The flow for one question: cache lookup -> model call -> JSON extraction -> validation (the
caller's function) -> on failure one bounded re-ask that quotes the error -> on failure again,
``None`` and a counted failure. Validated answers are cached, and so is a failure (the reason,
never the bad answer): a re-run makes no call and gets the same outcome, so it builds the same
guidance table. ``retry_failures`` asks failed questions again on purpose. Transport errors and
budget skips are not outcomes of the model and are never cached.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ultrarl.llm.backend import ChatBackend, Messages, TransientLLMError
from ultrarl.llm.cache import ResponseCache, cache_key
from ultrarl.llm.ledger import UsageLedger

T = TypeVar("T")


class InvalidAnswer(ValueError):
    """Raised by a validator for an answer that cannot be used at all.

    :param copied: the answer copies the prompt (its placeholders or example) instead of
        answering; the ledger counts these apart from parse failures
    """

    def __init__(self, message: str, copied: bool = False) -> None:
        super().__init__(message)
        self.copied = copied


def extract_json(text: str) -> Any:
    """The first JSON object in ``text`` (models like to wrap it in prose or code fences)."""
    start = text.find("{")
    if start < 0:
        raise InvalidAnswer("the answer contains no JSON object")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise InvalidAnswer(f"the answer is not valid JSON: {exc.msg}") from exc
    except RecursionError as exc:  # a runaway model can nest brackets thousands deep
        raise InvalidAnswer("the answer's JSON is nested too deeply") from exc
    return value


class LLMClient:
    def __init__(
        self,
        backend: ChatBackend,
        cache: ResponseCache | None,
        ledger: UsageLedger | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        seed: int = 0,
        max_reasks: int = 1,
        max_calls: int | None = None,
        max_total_tokens: int | None = None,
        retry_failures: bool = False,
    ) -> None:
        self.backend = backend
        self.cache = cache
        self.ledger = ledger or UsageLedger()
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.max_reasks = max_reasks
        self.max_calls = max_calls
        self.max_total_tokens = max_total_tokens
        self.retry_failures = retry_failures
        self.budget_message: str | None = None  # set once the budget cap stops querying
        self._calls_started = 0  # calls sent or in flight: parallel workers must not overshoot the cap
        self._budget_lock = threading.Lock()

    @property
    def spec(self) -> str:
        return f"{self.backend.name}:{self.backend.model}"

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def key_for(
        self, messages: Messages, schema: dict[str, Any] | None, template_version: str, shared_prefix: str = ""
    ) -> str:
        # Where a backend keeps the shared prefix evaluated, the answer depends on where the prompt
        # is split too; elsewhere the key stays as it always was (the caches stay valid).
        split = {"shared_prefix": shared_prefix} if self.backend.config.get("prefix_reuse") else {}
        return cache_key(
            backend=self.backend.name,
            model=self.backend.model,
            **({"backend_config": self.backend.config} if self.backend.config else {}),
            **split,
            template=template_version,
            messages=messages,
            schema=schema,
            sampling={"max_tokens": self.max_tokens, "temperature": self.temperature, "seed": self.seed},
        )

    def ask_json(
        self,
        messages: Messages,
        schema: dict[str, Any] | None,
        validate: Callable[[Any], T],
        template_version: str,
        shared_prefix: str = "",
    ) -> T | None:
        """A validated answer, or None (counted as a failure) when the model never gave one.
        ``shared_prefix``: what the backend may keep evaluated (``ChatBackend.chat``)."""
        key = self.key_for(messages, schema, template_version, shared_prefix)
        if self.cache is not None:
            cached = self._from_cache(key, validate)
            if cached is not None:
                return cached[0]
        conversation = list(messages)
        for attempt in range(self.max_reasks + 1):
            if not self._reserve_call():
                self.ledger.add(skipped_by_budget=1)
                return None
            try:
                reply = self.backend.chat(conversation, schema, self.max_tokens, self.temperature, self.seed + attempt,
                                          shared_prefix)
            except TransientLLMError as exc:
                self.ledger.add(retries=exc.retries, failed_episodes=1)
                return None
            self.ledger.add(retries=reply.retries)
            self.ledger.record_call(reply.prompt_tokens, reply.completion_tokens, reply.latency_s)
            try:
                value = extract_json(reply.text)
                result = validate(value)
            except InvalidAnswer as exc:
                self.ledger.add(**({"copied_answers": 1} if exc.copied else {"parse_failures": 1}))
                if attempt == self.max_reasks:
                    if self.cache is not None:
                        self.cache.put_failure(key, str(exc))
                    break
                self.ledger.add(reasks=1)
                conversation = [
                    *messages,
                    {"role": "assistant", "content": reply.text[:2000]},
                    {"role": "user", "content": f"That answer was rejected: {exc}. Reply again with valid JSON only."},
                ]
                continue
            if self.cache is not None:
                self.cache.put(key, value)
            return result
        self.ledger.add(failed_episodes=1)
        return None

    def _from_cache(self, key: str, validate: Callable[[Any], T]) -> tuple[T | None] | None:
        """The cached outcome as a 1-tuple (a result, or None for a cached failure); None: ask."""
        assert self.cache is not None
        if (cached := self.cache.get(key)) is not None:
            try:
                result = validate(cached)
            except InvalidAnswer:
                return None  # a validator grew stricter since the answer was cached: ask again
            self.ledger.add(cache_hits=1)
            return (result,)
        if not self.retry_failures and self.cache.get_failure(key) is not None:
            self.ledger.add(cache_hits=1, cached_failures=1, failed_episodes=1)
            return (None,)
        return None

    def _reserve_call(self) -> bool:
        """Take one call from the optional budget; False once the call or token cap is reached
        (tokens are known only after a call, so the token cap can be passed by the calls in flight)."""
        ledger = self.ledger
        with self._budget_lock:
            if self.max_calls is not None and self._calls_started >= self.max_calls:
                self.budget_message = f"LLM call budget of {self.max_calls} calls spent; continuing with the guidance so far"
            elif (
                self.max_total_tokens is not None
                and ledger.prompt_tokens + ledger.completion_tokens >= self.max_total_tokens
            ):
                self.budget_message = (
                    f"LLM token budget of {self.max_total_tokens} tokens spent; continuing with the guidance so far"
                )
            if self.budget_message is not None:
                return False
            self._calls_started += 1
            return True
