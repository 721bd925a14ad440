"""Counting what the LLM cost and how often it failed, per run."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class UsageLedger:
    calls: int = 0  # requests actually sent to a model
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed_episodes: int = 0  # episodes for which no valid answer came back (after re-asks)
    parse_failures: int = 0  # answers that were not valid JSON / did not fit the schema
    copied_answers: int = 0  # answers that only copied the prompt's placeholders (no usable step)
    copied_fields: int = 0  # critical steps dropped because they copied the prompt
    dropped_fields: int = 0  # critical steps dropped by validation (bad step, action, reward)
    clipped_fields: int = 0  # values clipped into range (continuous actions, rewards)
    reasks: int = 0
    retries: int = 0  # retryable transport failures (timeouts, 429, 5xx) that were retried
    skipped_by_budget: int = 0  # questions not asked because the call/token budget was spent
    cached_failures: int = 0  # failed questions answered from the cache's record of the failure
    latencies_s: list[float] = field(default_factory=list)
    wall_time_s: float = 0.0  # elapsed time of the explanation stage (parallel calls overlap)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def record_call(self, prompt_tokens: int, completion_tokens: int, latency_s: float) -> None:
        with self._lock:
            self.calls += 1
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.latencies_s.append(latency_s)

    def add_wall_time(self, seconds: float) -> None:
        with self._lock:
            self.wall_time_s += seconds

    def to_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_s) if self.latencies_s else np.zeros(1)
        return {
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            # Every rejected item: episodes without a usable answer plus critical steps dropped.
            "failures": self.failed_episodes + self.dropped_fields,
            "failed_episodes": self.failed_episodes,
            "parse_failures": self.parse_failures,
            "copied_answers": self.copied_answers,
            "copied_fields": self.copied_fields,
            "dropped_fields": self.dropped_fields,
            "clipped_fields": self.clipped_fields,
            "reasks": self.reasks,
            "retries": self.retries,
            "skipped_by_budget": self.skipped_by_budget,
            "cached_failures": self.cached_failures,
            "wall_time_s": self.wall_time_s,
            "latency_s_total": float(np.sum(self.latencies_s)),
            "latency_s_p50": float(np.percentile(lat, 50)),
            "latency_s_p95": float(np.percentile(lat, 95)),
        }
