"""The embedded model gives the same answer on every machine and every bench worker: its answer
must not depend on how many threads read the prompt (ULTRARL_LLM_THREADS, a worker's share of the
cores). A real llama.cpp model answers a real identification prompt here."""

from __future__ import annotations

from pathlib import Path

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
        answers.append(backend.chat(prompt.messages, prompt.schema, 400, 0.0, 0).text)
    assert answers[0] == answers[1] and answers[0]
