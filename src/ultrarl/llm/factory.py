"""``--llm SPEC`` to a ready client: ``local``, ``local:MODEL``, ``openai:MODEL``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ultrarl.errors import UltraRLError
from ultrarl.llm.cache import ResponseCache, default_cache_dir
from ultrarl.llm.client import LLMClient
from ultrarl.llm.local_backend import DEFAULT_LOCAL_MODEL, LOCAL_MODELS


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


def make_llm_client(
    spec: str = "local",
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    cache_dir: Path | None = None,
    use_cache: bool = True,
    max_tokens: int = 400,
    seed: int = 0,
    concurrency: int = 4,
    max_retries: int = 3,
    timeout_s: float = 120.0,
    max_reasks: int = 1,
    max_calls: int | None = None,
    max_total_tokens: int | None = None,
) -> LLMClient:
    backend_name, model = parse_llm_spec(spec)
    if backend_name == "local":
        from ultrarl.llm.local_backend import LocalLlamaBackend

        backend = LocalLlamaBackend(model)
    else:
        from ultrarl.llm.openai_backend import OpenAIBackend

        backend = OpenAIBackend(  # type: ignore[assignment]
            model, base_url=base_url, api_key_env=api_key_env, timeout_s=timeout_s, max_retries=max_retries,
            max_concurrency=concurrency,
        )
    cache = ResponseCache(cache_dir or default_cache_dir()) if use_cache else None
    return LLMClient(
        backend, cache, max_tokens=max_tokens, seed=seed, max_reasks=max_reasks, max_calls=max_calls,
        max_total_tokens=max_total_tokens,
    )
