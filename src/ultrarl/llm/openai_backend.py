"""Any OpenAI-compatible chat server (OpenAI, vLLM, Ollama, llama.cpp server, LM Studio),
through the official ``openai`` SDK.

The API key is read from an environment variable at construction and handed to the SDK only;
it is never part of a cache key, a log line, a run directory or an error message (messages
from the server are redacted before they are shown).

Failures are sorted in two kinds. Retryable ones (connection errors, timeouts, 429 rate
limits, 5xx) are retried a bounded number of times with exponential backoff and jitter; a
question that still fails is :class:`TransientLLMError`, which the client counts as a failed
episode while the run goes on. The others (400 after the structured-output cascade, 401, 403,
an exhausted quota, a server that cannot be reached at all) stop the run with one line.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from ultrarl.errors import LLMUnavailableError
from ultrarl.llm.backend import ChatResult, Messages, TransientLLMError

# The structured-output cascade, strongest first; the one the server accepts is remembered.
# "json_object+schema" is llama-cpp-python's server extension (the schema becomes a grammar).
_FORMATS = ("json_schema", "json_object+schema", "json_object", "text")


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_concurrency: int = 4,
    ) -> None:
        import openai

        self._openai = openai
        api_key = os.environ.get(api_key_env)
        if not api_key:
            if base_url is None:
                raise LLMUnavailableError(f"environment variable {api_key_env} is not set (needed for the OpenAI API)")
            api_key = "not-needed"  # local servers accept any key
        self._secret = api_key
        self.model = model
        self.config: dict[str, Any] = {}  # what the server does is the server's: the model id names it
        self.base_url = base_url
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        # Retries are ours (counted in the ledger, quota errors not retried), not the SDK's.
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)
        self._format_index = 0

    def _where(self) -> str:
        return self.base_url or "the OpenAI API"

    def _redact(self, text: str) -> str:
        text = " ".join(str(text).split())[:200]
        return text.replace(self._secret, "[redacted]") if self._secret else text

    def _request(self, messages: Messages, schema: dict[str, Any] | None, max_tokens: int, temperature: float,
                 seed: int) -> Any:
        """One request, stepping down the structured-output cascade on a 400."""
        openai = self._openai
        while True:
            fmt = _FORMATS[self._format_index] if schema is not None else "text"
            kwargs: dict[str, Any] = {}
            if fmt == "json_schema":
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "explanation", "schema": schema, "strict": False},
                }
            elif fmt == "json_object+schema":
                kwargs["response_format"] = {"type": "json_object", "schema": schema}
            elif fmt == "json_object":
                kwargs["response_format"] = {"type": "json_object"}
            try:
                return self._client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=max_tokens,  # type: ignore[arg-type]
                    temperature=temperature, seed=seed, **kwargs,
                )
            except (openai.BadRequestError, openai.UnprocessableEntityError, openai.InternalServerError) as exc:
                # Servers refuse an unknown response format with 400, 422, or (llama-cpp-python) a
                # 500 that names the field: step down the cascade. Other 5xx are retried by chat().
                refused_format = fmt != "text" and (
                    not isinstance(exc, openai.InternalServerError) or "response_format" in str(exc)
                )
                if refused_format and self._format_index < len(_FORMATS) - 1:
                    self._format_index += 1
                    continue
                if isinstance(exc, openai.InternalServerError):
                    raise
                raise LLMUnavailableError(
                    f"LLM server at {self._where()} rejected the request: {self._redact(exc.message)}"
                ) from exc

    def chat(
        self, messages: Messages, schema: dict[str, Any] | None, max_tokens: int, temperature: float, seed: int,
        shared_prefix: str = "",  # unused: a server caches prompts as it does (llama.cpp's cache_prompt
        # reuses the previous request's prefix, so its answers can depend on the request before)
    ) -> ChatResult:
        openai = self._openai
        retries = 0
        while True:
            start = time.perf_counter()
            try:
                response = self._request(messages, schema, max_tokens, temperature, seed)
                break
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise LLMUnavailableError(
                    f"LLM server at {self._where()} refused the credentials (HTTP {exc.status_code})"
                ) from exc
            except openai.RateLimitError as exc:
                if "quota" in str(exc).lower():
                    raise LLMUnavailableError(f"LLM server at {self._where()}: quota exhausted (HTTP 429)") from exc
                problem = "rate limited (HTTP 429)"
            except openai.APITimeoutError:
                problem = "timed out"
            except openai.APIConnectionError as exc:
                if retries >= self.max_retries:
                    raise LLMUnavailableError(
                        f"cannot reach the LLM server at {self._where()}: {self._redact(str(exc))}"
                    ) from exc
                problem = "connection failed"
            except openai.InternalServerError as exc:
                problem = f"server error (HTTP {exc.status_code})"
            except openai.APIStatusError as exc:
                raise LLMUnavailableError(f"LLM server at {self._where()} answered HTTP {exc.status_code}") from exc
            if retries >= self.max_retries:
                raise TransientLLMError(f"LLM server at {self._where()} {problem} after {retries} retries", retries)
            # Exponential backoff with full jitter, so parallel workers do not retry in lockstep.
            time.sleep(random.uniform(0, self.backoff_s * 2**retries))
            retries += 1
        latency = time.perf_counter() - start
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = response.usage
        return ChatResult(
            text=text,
            prompt_tokens=int(usage.prompt_tokens) if usage else self.count_tokens(str(messages)),
            completion_tokens=int(usage.completion_tokens) if usage else self.count_tokens(text),
            latency_s=latency,
            retries=retries,
        )

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)


def estimate_tokens(text: str) -> int:
    """No tokenizer for a remote model: ~3.5 characters per token errs on the long side."""
    return int(len(text) / 3.5) + 1
