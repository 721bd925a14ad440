"""The embedded model gives the same answer on every machine and every bench worker: its answer
must not depend on how many threads read the prompt (ULTRARL_LLM_THREADS, a worker's share of the
cores). A real llama.cpp model answers a real identification prompt here."""

from __future__ import annotations

from pathlib import Path

import pytest

from ultrarl.llm.local_backend import LocalLlamaBackend
from ultrarl.pipeline import preview_prompts
from ultrarl.settings import ExplainSettings

AGENT = Path(__file__).parents[1] / "benchmarks" / "agents" / "MountainCarContinuous-v0" / "seed100.zip"


def test_answers_do_not_depend_on_the_prompt_thread_count() -> None:
    prompt = preview_prompts(ExplainSettings(env_id="MountainCarContinuous-v0", agent=str(AGENT), episodes=1,
                                             token_budget=1500, seed=0))[0]
    answers = []
    for threads in (1, 2):
        backend = LocalLlamaBackend("smollm2", n_threads=threads)
        assert backend.prompt_threads == threads and backend.config["generation_threads"] == 1
        # 120 tokens: each attends to every prompt position the threads computed
        answers.append(backend.chat(prompt.messages, prompt.schema, 120, 0.0, 0).text)
    assert answers[0] == answers[1] and answers[0]


# The longest test of the default suite (78 s warm, more from a fresh clone), for an option that is
# off by default: behind the slow marker, so the default run stays under 15 minutes on 2 cores.
@pytest.mark.slow
def test_the_shared_prefix_cache_gives_each_prompt_one_answer_whatever_was_asked_before() -> None:
    """With ``prefix_cache`` the model keeps the evaluated system prompt and environment context
    and reads only each episode: an answer must still depend on its own prompt alone (not on the
    call before it, as llama.cpp's own reuse of the previous prompt does), and less is read."""
    first, second = preview_prompts(ExplainSettings(env_id="MountainCarContinuous-v0", agent=str(AGENT), episodes=2,
                                                    token_budget=1500, seed=0))
    assert first.shared_prefix.startswith("Environment: MountainCarContinuous")
    assert first.shared_prefix.endswith("car velocity (m/s).\n\n")  # up to the line naming the episode
    assert first.shared_prefix == second.shared_prefix and first.messages[1]["content"].startswith(first.shared_prefix)

    def ask(backend: LocalLlamaBackend, prompt) -> str:  # type: ignore[no-untyped-def]
        return backend.chat(prompt.messages, prompt.schema, 150, 0.0, 0, prompt.shared_prefix).text

    cached = LocalLlamaBackend("smollm2", prefix_cache=True)
    assert cached.config["prefix_reuse"] == "shared-prefix"
    answers = [ask(cached, first), ask(cached, second), ask(cached, first)]
    held = len(cached._prefix_tokens)
    assert held > 0.5 * cached.count_tokens(first.shared_prefix)  # the context is held, not only the system turn
    assert list(cached._llama.input_ids[:held]) == cached._prefix_tokens
    fresh = LocalLlamaBackend("smollm2", prefix_cache=True)
    assert answers[0] == answers[2] == ask(fresh, first)  # asked first, after another prompt, by a new model
    assert answers[1] == ask(fresh, second)
    # a call without the cache re-reads everything from position 0: the held prefix is then not
    # the probe's evaluation any more, and must be evaluated again, not trusted
    cached.chat(first.messages, first.schema, 150, 0.0, 0)
    assert ask(cached, first) == answers[0]
