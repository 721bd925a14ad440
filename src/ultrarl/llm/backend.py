"""The interface every LLM backend implements, and what one chat call returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ChatResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    retries: int = 0  # retryable failures before this answer came back


class TransientLLMError(Exception):
    """A retryable failure that outlasted its retries: this question gets no answer, the run goes on."""

    def __init__(self, message: str, retries: int) -> None:
        super().__init__(message)
        self.retries = retries


Messages = list[dict[str, str]]


class ChatBackend(Protocol):
    """A chat model that can be asked for JSON. Implementations: local llama.cpp, OpenAI SDK."""

    name: str  # "local" or "openai"
    model: str  # model id, part of the cache key
    max_concurrency: int  # 1 for in-process models
    # Settings of the backend that change its answers: part of the cache key and the manifest.
    config: dict[str, Any]

    def chat(
        self,
        messages: Messages,
        schema: dict[str, Any] | None,
        max_tokens: int,
        temperature: float,
        seed: int,
        shared_prefix: str = "",
    ) -> ChatResult:
        """An answer to ``messages``. ``shared_prefix`` is the start of the first user message
        that every question of the run shares (the environment's context): a backend may keep
        it evaluated between calls."""
        ...

    def count_tokens(self, text: str) -> int: ...
