"""``--llm SPEC`` to a ready client: ``local``, ``local:MODEL``, ``openai:MODEL``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ultrarl.errors import UltraRLError
from ultrarl.llm.cache import ResponseCache, default_cache_dir
from ultrarl.llm.client import LLMClient
from ultrarl.llm.local_backend import DEFAULT_LOCAL_MODEL, LOCAL_MODELS

if TYPE_CHECKING:
    from ultrarl.llm.settings import LLMSettings


def parse_llm_spec(spec: str) -> tuple[str, str]:
    """('local', 'smollm2') or ('openai', 'gpt-4o-mini'); a one-line error for anything else."""
    backend, _, model = spec.partition(":")
    if backend == "local":
        model = model or DEFAULT_LOCAL_MODEL
        if model not in LOCAL_MODELS:
            raise UltraRLError(f"unknown local model '{model}' in --llm {spec}; choose one of: {', '.join(LOCAL_MODELS)}")
        return backend, model
    if backend == "openai" and model:
        return backend, model
    raise UltraRLError(f"invalid --llm '{spec}': use local, local:MODEL ({', '.join(LOCAL_MODELS)}) or openai:MODEL")


def token_counter(spec: str) -> Callable[[str], int]:
    """The tokenizer of the model behind ``spec`` where we have it (local), else an estimate."""
    backend_name, model = parse_llm_spec(spec)
    if backend_name == "local":
        from ultrarl.llm.local_backend import LocalLlamaBackend

        return LocalLlamaBackend(model).count_tokens
    from ultrarl.llm.openai_backend import estimate_tokens

    return estimate_tokens


def make_llm_client(settings: LLMSettings, seed: int = 0) -> LLMClient:
    """A client for ``settings.model`` with its cache, ledger and budget."""
    backend_name, model = parse_llm_spec(settings.model)
    if backend_name == "local":
        from ultrarl.llm.local_backend import LocalLlamaBackend

        backend = LocalLlamaBackend(model, prefix_cache=settings.prefix_cache)
    else:
        from ultrarl.llm.openai_backend import OpenAIBackend

        backend = OpenAIBackend(  # type: ignore[assignment]
            model, base_url=settings.base_url, api_key_env=settings.api_key_env, timeout_s=settings.timeout_s,
            max_retries=settings.max_retries, max_concurrency=settings.concurrency,
        )
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()
    cache = ResponseCache(cache_dir) if settings.use_cache else None
    return LLMClient(
        backend, cache, max_tokens=settings.max_tokens, seed=seed, max_reasks=settings.max_reasks,
        max_calls=settings.max_calls, max_total_tokens=settings.max_total_tokens,
        retry_failures=settings.retry_failures,
    )
