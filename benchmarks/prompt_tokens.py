"""Prompt tokens per episode before and after compression, per environment, with the local
model's own tokenizer. Episodes come from an untrained PPO policy (stochastic), or from
``--agent-dir DIR`` holding ``<name>.zip`` agents named after the env (``Hopper-v5.zip``).

    .venv/bin/python benchmarks/prompt_tokens.py --episodes 4 --budget 3000
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from stable_baselines3 import PPO

from ultrarl.envs.factory import make_vec_env
from ultrarl.envs.rollout import collect_trajectories
from ultrarl.explain.prompts import build_episode_prompt, episode_lines
from ultrarl.interpret.describer import StateDescriber
from ultrarl.llm.factory import token_counter

ENVS = [
    "Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Reacher-v5", "Swimmer-v5", "Ant-v5",
    "InvertedPendulum-v5", "InvertedDoublePendulum-v5", "ultrarl/SparseHopper-v5", "ultrarl/PongPoint-v0",
    "CartPole-v1",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--budget", type=int, default=3000)
    parser.add_argument("--llm", default="local")
    parser.add_argument("--agent-dir", type=Path, default=None)
    parser.add_argument("--envs", nargs="*", default=ENVS)
    args = parser.parse_args()
    count = token_counter(args.llm)
    print(f"tokenizer: {args.llm}; budget {args.budget} prompt tokens; {args.episodes} episodes per env")
    print(f"{'environment':32s} {'steps':>6s} {'tokens/step':>11s} {'before':>8s} {'after':>6s} {'shown':>6s} {'ms/prompt':>9s}")
    for env_id in args.envs:
        path = args.agent_dir / f"{env_id.replace('/', '_')}.zip" if args.agent_dir else None
        if path is not None and path.exists():
            agent = PPO.load(path, device="cpu")
        else:
            agent = PPO("MlpPolicy", make_vec_env(env_id), seed=0, device="cpu")
        trajectories = collect_trajectories(agent, env_id, args.episodes, seed=0)
        describer = StateDescriber(env_id, agent.observation_space, agent.action_space)
        start = time.perf_counter()
        prompts = [build_episode_prompt(t, describer, count, 3, args.budget) for t in trajectories]
        ms = 1000 * (time.perf_counter() - start) / len(prompts)
        steps = statistics.mean(t.length for t in trajectories)
        before = statistics.mean(p.uncompressed_tokens for p in prompts)
        after = statistics.mean(p.prompt_tokens for p in prompts)
        shown = statistics.mean(len(p.shown_steps) for p in prompts)
        lines = episode_lines(trajectories[0], describer)
        per_step = statistics.mean(count(line) for line in lines)
        print(f"{env_id:32s} {steps:6.0f} {per_step:11.0f} {before:8.0f} {after:6.0f} {shown:6.0f} {ms:9.0f}")


if __name__ == "__main__":
    main()
