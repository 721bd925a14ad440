"""Evaluation through ``DeterministicActor`` against SB3's own ``predict``, side by side in one
process: the same episodes both ways, interleaved ``--repeats`` times (ABAB...) so that load on a
shared machine hits both alike. Prints each repeat's wall times and ratio, and whether the
returns are the same (they must be, bit for bit).

    .venv/bin/python benchmarks/evaluation_speed.py MountainCarContinuous-v0 \\
        benchmarks/agents/MountainCarContinuous-v0/seed0.zip --episodes 4 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

from stable_baselines3.common.evaluation import evaluate_policy

from ultrarl.envs.factory import make_vec_env
from ultrarl.evaluate.evaluation import evaluate_agent
from ultrarl.refine.refiner import load_checked_agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("env_id")
    parser.add_argument("agent")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    agent = load_checked_agent(args.agent, args.env_id)
    ratios = []
    for repeat in range(1, args.repeats + 1):
        start = time.perf_counter()
        ours = evaluate_agent(agent, args.env_id, args.episodes, args.seed)
        actor_s = time.perf_counter() - start
        env = make_vec_env(args.env_id, n_envs=1, seed=args.seed)
        start = time.perf_counter()
        returns, lengths = evaluate_policy(agent, env, n_eval_episodes=args.episodes, deterministic=True,
                                           return_episode_rewards=True)
        sb3_s = time.perf_counter() - start
        env.close()
        same = ours.returns == [float(r) for r in returns] and ours.lengths == list(lengths)
        ratios.append(sb3_s / actor_s)
        print(f"repeat {repeat}: {sum(lengths)} steps; SB3 predict {sb3_s:.2f} s, DeterministicActor {actor_s:.2f} s, "
              f"ratio {ratios[-1]:.2f}; returns {'the same' if same else 'DIFFERENT'}")
    print(f"median ratio {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
