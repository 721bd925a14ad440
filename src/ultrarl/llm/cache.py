"""A content-addressed cache of LLM outcomes (SQLite, JSON values, never pickle): validated
answers, and questions the model failed (no valid answer after the re-asks) with the reason, so
a re-run asks nothing and builds the same guidance either way."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    """``$ULTRARL_CACHE_DIR``, else the user's cache directory."""
    if env := os.environ.get("ULTRARL_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ultrarl"


def cache_key(**parts: Any) -> str:
    """sha256 of the canonical JSON of everything that determines the answer."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    """key -> JSON value. Thread-safe; one connection per call keeps it safe across processes."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "responses.sqlite"
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS failures (key TEXT PRIMARY KEY, reason TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, key: str) -> Any | None:
        with self._lock, self._connect() as db:
            row = db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        with self._lock, self._connect() as db:
            db.execute("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", (key, json.dumps(value)))
            db.execute("DELETE FROM failures WHERE key = ?", (key,))

    def get_failure(self, key: str) -> str | None:
        """Why the model failed this question, if it did and no answer was cached since."""
        with self._lock, self._connect() as db:
            row = db.execute("SELECT reason FROM failures WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put_failure(self, key: str, reason: str) -> None:
        with self._lock, self._connect() as db:
            db.execute("INSERT OR REPLACE INTO failures (key, reason) VALUES (?, ?)", (key, reason))
