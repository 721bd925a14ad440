"""llama-cpp-python's OpenAI-compatible server with the embedded model, on a free local port:
for tests and benchmarks of the OpenAI path without any network."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from ultrarl.errors import LLMUnavailableError
from ultrarl.llm.local_backend import DEFAULT_LOCAL_MODEL, local_model_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_llama_server(model: str = DEFAULT_LOCAL_MODEL, n_ctx: int = 4096, start_timeout_s: float = 60.0) -> Iterator[str]:
    """Yields the server's base URL (``http://127.0.0.1:PORT/v1``, model alias = ``model``); stops it after."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(local_model_path(model)), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", str(n_ctx), "--model_alias", model],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise LLMUnavailableError(f"the local llama.cpp server did not start on port {port}") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
