"""The LLM's settings: which model, which server, how patient, how much it may cost."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ultrarl.errors import checked_value
from ultrarl.llm.factory import parse_llm_spec


class LLMSettings(BaseModel):
    """The API key is never a setting: only the name of the environment variable that holds it."""

    model_config = ConfigDict(extra="forbid")
    cli_prefix: ClassVar[str] = "llm-"

    model: str = Field(
        "local", description="local (SmolLM2-135M), local:gemma3 or openai:MODEL", json_schema_extra={"flag": "llm"}
    )
    base_url: str | None = Field(None, description="an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    max_tokens: int = Field(400, gt=0, description="completion tokens per answer")
    concurrency: int = Field(4, gt=0, description="parallel requests to a server (the local model runs one)")
    max_retries: int = Field(3, ge=0, description="retries of timeouts, 429 and 5xx, with backoff and jitter")
    timeout_s: float = Field(120.0, gt=0, description="seconds per request")
    max_reasks: int = Field(1, ge=0, description="re-asks quoting the validation error")
    max_calls: int | None = Field(None, gt=0, description="budget cap: LLM calls per run (unset: no cap)")
    max_total_tokens: int | None = Field(None, gt=0, description="budget cap: tokens per run (unset: no cap)")
    cache_dir: str | None = Field(
        None, description="LLM response cache (unset: $ULTRARL_CACHE_DIR or ~/.cache/ultrarl)",
        json_schema_extra={"flag": "cache-dir"},
    )
    use_cache: bool = Field(
        True, description="read and write the LLM response cache", json_schema_extra={"flag": "cache"}
    )
    prefix_cache: bool = Field(
        False, description="embedded model: keep the evaluated system prompt and environment context between "
                           "episodes and read only each episode (faster; its answers differ from those without "
                           "it and are cached apart)",
    )
    retry_failures: bool = Field(
        False, description="ask again the questions the cache records as failed (off: replay the failure)",
        json_schema_extra={"flag": "retry-failures"},
    )

    @field_validator("model")
    @classmethod
    def _known_llm(cls, value: str) -> str:
        return checked_value(parse_llm_spec, value)
