"""Wall time of the embedded model's identification with and without the shared-prefix cache
(``--llm-prefix-cache``), measured side by side: the same prompts, each asked of both models in
turn, so that a busy machine slows both alike.

    python benchmarks/prefix_cache.py Hopper-v5 --agent runs/hopper_agent.zip --episodes 16 [--prompt-only]
"""

from __future__ import annotations

import argparse
import time

from ultrarl.llm.local_backend import LocalLlamaBackend
from ultrarl.pipeline import preview_prompts
from ultrarl.settings import ExplainSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("env_id")
    parser.add_argument("--agent", required=True)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--token-budget", type=int, default=1500)
    parser.add_argument("--prompt-only", action="store_true", help="only the second measurement")
    args = parser.parse_args()
    prompts = preview_prompts(ExplainSettings(env_id=args.env_id, agent=args.agent, episodes=args.episodes,
                                              token_budget=args.token_budget, seed=0))
    backends = {"from an empty context": LocalLlamaBackend(),
                "shared prefix kept": LocalLlamaBackend(prefix_cache=True)}
    tokens = [p.prompt_tokens for p in prompts]
    shared = backends["shared prefix kept"].count_tokens(prompts[0].shared_prefix)
    print(f"{len(prompts)} prompts of {min(tokens)}-{max(tokens)} tokens, {shared} of them shared (+ system message)")
    # Whole answers (what identification costs), then the prompt alone (one token generated): the
    # answers differ between the modes, and so do their lengths, so only the second isolates reading.
    passes = [("whole answers", 400), ("reading the prompt (1 token generated)", 1)]
    for what, max_tokens in passes[1:] if args.prompt_only else passes:
        seconds = dict.fromkeys(backends, 0.0)
        generated = dict.fromkeys(backends, 0)
        answers: dict[str, list[str]] = {name: [] for name in backends}
        for index, prompt in enumerate(prompts):
            for name, backend in backends.items():
                start = time.perf_counter()
                reply = backend.chat(prompt.messages, prompt.schema, max_tokens, 0.0, 0, prompt.shared_prefix)
                seconds[name] += time.perf_counter() - start
                generated[name] += reply.completion_tokens
                answers[name].append(reply.text)
            print(f"{what} {index + 1}/{len(prompts)}: " + ", ".join(f"{n} {s:.1f} s" for n, s in seconds.items()),
                  flush=True)
        print(f"== {what}")
        for name, total in seconds.items():
            print(f"{name}: {total:.1f} s ({total / len(prompts):.2f} s per call, {generated[name]} tokens generated)")
        print(f"ratio (kept / empty): {seconds['shared prefix kept'] / seconds['from an empty context']:.3f}")
        same = sum(a == b for a, b in zip(*answers.values()))
        print(f"identical answers in the two modes: {same} of {len(prompts)}", flush=True)


if __name__ == "__main__":
    main()
