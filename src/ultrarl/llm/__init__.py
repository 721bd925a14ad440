"""The LLM layer: local llama.cpp or any OpenAI-compatible server, cached, counted, validated."""

from ultrarl.llm.cache import ResponseCache, cache_key, default_cache_dir
from ultrarl.llm.client import InvalidAnswer, LLMClient, extract_json
from ultrarl.llm.factory import make_llm_client, parse_llm_spec
from ultrarl.llm.ledger import UsageLedger

__all__ = [
    "InvalidAnswer",
    "LLMClient",
    "ResponseCache",
    "UsageLedger",
    "cache_key",
    "default_cache_dir",
    "extract_json",
    "make_llm_client",
    "parse_llm_spec",
]
