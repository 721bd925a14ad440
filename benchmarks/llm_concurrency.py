"""Wall time of `ultrarl explain` through llama.cpp's OpenAI-compatible server with the embedded
model, at concurrency 1 and 4, side by side in one run (no cache). Prints one JSON object.

    .venv/bin/python benchmarks/llm_concurrency.py [--episodes 8] [--env CartPole-v1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ultrarl.cli import main as ultrarl_main
from ultrarl.llm.local_server import local_llama_server
from ultrarl.pipeline import pretrain
from ultrarl.settings import PretrainSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--env", default="CartPole-v1")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ultrarl-bench-"))
    agent = work / "agent.zip"
    pretrain(PretrainSettings(env_id=args.env, timesteps=2048, seed=0, out=str(agent)), progress_bar=False)
    with local_llama_server("smollm2") as url:
        results = {}
        for concurrency in (1, 4):
            run_dir = work / f"c{concurrency}"
            start = time.perf_counter()
            code = ultrarl_main([
                "explain", args.env, "--agent", str(agent), "--episodes", str(args.episodes), "--eval-episodes", "1",
                "--token-budget", "1000", "--llm", "openai:smollm2", "--llm-base-url", url, "--no-cache",
                "--llm-concurrency", str(concurrency), "--run-dir", str(run_dir),
            ])
            usage = json.loads((run_dir / "llm_usage.json").read_text())
            results[f"concurrency_{concurrency}"] = {
                "exit_code": code, "command_wall_s": time.perf_counter() - start,
                "llm_wall_s": usage["wall_time_s"], "calls": usage["calls"],
                "prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
            }
        results["llm_wall_ratio_4_over_1"] = results["concurrency_4"]["llm_wall_s"] / results["concurrency_1"]["llm_wall_s"]
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
