"""Any OpenAI-compatible chat server (OpenAI, vLLM, Ollama, llama.cpp server, LM Studio),
through the official ``openai`` SDK.

The API key is read from an environment variable at construction and handed to the SDK only;
it is never part of a cache key, a log line, a run directory or an error message.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ultrarl.errors import LLMUnavailableError
from ultrarl.llm.backend import ChatResult, Messages

# The structured-output cascade: the strongest format the server accepts is remembered.
_FORMATS = ("json_schema", "json_object", "text")


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        max_retries: int = 2,
        max_concurrency: int = 4,
    ) -> None:
        import openai

        self._openai = openai
        api_key = os.environ.get(api_key_env)
        if not api_key:
            if base_url is None:
                raise LLMUnavailableError(f"environment variable {api_key_env} is not set (needed for the OpenAI API)")
            api_key = "not-needed"  # local servers accept any key
        self.model = model
        self.base_url = base_url
        self.max_concurrency = max_concurrency
        # The SDK retries connection errors, 408/409/429 and 5xx with exponential backoff and jitter.
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries)
        self._format_index = 0

    def _where(self) -> str:
        return self.base_url or "the OpenAI API"

    def chat(
        self, messages: Messages, schema: dict[str, Any] | None, max_tokens: int, temperature: float, seed: int
    ) -> ChatResult:
        openai = self._openai
        while True:
            fmt = _FORMATS[self._format_index] if schema is not None else "text"
            kwargs: dict[str, Any] = {}
            if fmt == "json_schema":
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "explanation", "schema": schema, "strict": False},
                }
            elif fmt == "json_object":
                kwargs["response_format"] = {"type": "json_object"}
            start = time.perf_counter()
            try:
                response = self._client.chat.completions.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=max_tokens,
                    temperature=temperature,
                    seed=seed,
                    **kwargs,
                )
            except openai.BadRequestError as exc:
                if fmt != "text" and self._format_index < len(_FORMATS) - 1:
                    self._format_index += 1  # the server refused this response format: step down
                    continue
                raise LLMUnavailableError(f"LLM server at {self._where()} rejected the request: {_short(exc)}") from exc
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise LLMUnavailableError(f"LLM server at {self._where()} refused the credentials ({exc.status_code})") from exc
            except openai.APIConnectionError as exc:
                raise LLMUnavailableError(f"cannot reach the LLM server at {self._where()}: {_short(exc)}") from exc
            except openai.APIStatusError as exc:
                raise LLMUnavailableError(f"LLM server at {self._where()} answered HTTP {exc.status_code}") from exc
            latency = time.perf_counter() - start
            text = (response.choices[0].message.content or "") if response.choices else ""
            usage = response.usage
            return ChatResult(
                text=text,
                prompt_tokens=int(usage.prompt_tokens) if usage else self.count_tokens(str(messages)),
                completion_tokens=int(usage.completion_tokens) if usage else self.count_tokens(text),
                latency_s=latency,
            )

    def count_tokens(self, text: str) -> int:
        # No tokenizer for a remote model: ~3.5 characters per token errs on the long side.
        return int(len(text) / 3.5) + 1


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]
