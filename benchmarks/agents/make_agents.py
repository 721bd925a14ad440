"""Make the stuck agents and the experts that the stuck-agent benchmark ships (``MANIFEST.json``
records each file's command, seed, versions and SHA-256).

    python benchmarks/agents/make_agents.py [--only ENV_SLUG]

- Stuck agents: SB3 PPO with its default hyperparameters, ``PRETRAIN`` steps, one per seed.
  On MountainCarContinuous-v0 PPO learns to stand still (the action costs energy, the flag is
  never found); on SparseHopper-v5 the reward only starts once the torso is past x = 0.6.
- Experts (the oracle's advisor, an upper bound): on MountainCarContinuous-v0 a PPO policy
  network fitted by supervised learning to the energy-pumping controller a = sign(velocity)
  (reaches the flag from every start); on SparseHopper-v5 PPO trained on dense Hopper-v5; on
  PongPoint-v0 a PPO policy fitted to a paddle that follows the ball (``ultrarl.experts``).
- PongPoint-v0's agent is PPO trained until its evaluated win rate stopped improving
  (``--until-plateau``), not for a fixed budget.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from importlib.metadata import version
from pathlib import Path

from stable_baselines3 import PPO

from ultrarl.experts import EXPERT_MAKERS, EXPERT_SEED
from ultrarl.evaluate.evaluation import evaluate_agent
from ultrarl.pipeline import pretrain
from ultrarl.settings import PretrainSettings

HERE = Path(__file__).resolve().parent
# Seeds 0-9 (0-4 on SparseHopper and PongPoint) are the benchmark's evaluation seeds; seeds
# 100-102 (MountainCar, PongPoint) are tuning seeds: defaults are chosen on them, never on the
# evaluation seeds.
TUNING_SEEDS = [100, 101, 102]
# env -> (``ultrarl pretrain`` options beyond the env and seed, seeds)
PRETRAIN: dict[str, tuple[dict[str, object], list[int]]] = {
    "MountainCarContinuous-v0": ({"timesteps": 30_000}, [*range(10), *TUNING_SEEDS]),
    "ultrarl/SparseHopper-v5": ({"timesteps": 60_000}, list(range(5))),
    "ultrarl/PongPoint-v0": ({"timesteps": 300_000, "until_plateau": True, "plateau_eval_every": 20_000,
                              "plateau_eval_episodes": 20, "plateau_window": 4}, [*range(5), *TUNING_SEEDS]),
}


def pretrain_command(env_id: str, options: dict[str, object], seed: int) -> str:
    flags = " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in options.items())
    return f"ultrarl pretrain {env_id} {flags} --seed {seed} --out seed{seed}.zip"


def expert_command(env_id: str) -> str:
    if env_id in EXPERT_MAKERS:
        return f"benchmarks/agents/make_agents.py: ultrarl.experts.{EXPERT_MAKERS[env_id].__name__}"
    return f"ultrarl pretrain Hopper-v5 --timesteps 150000 --seed {EXPERT_SEED}"


def making_time(manifest: dict, key: str, made_before: bool, start: float) -> float | None:
    """Wall seconds of making ``key``: this run's, or for a file made before the one recorded
    (not this evaluation's; null for a file made outside this script, such as PongPoint's tuning
    agents, trained two at a time with `ultrarl pretrain`)."""
    return manifest.get(key, {}).get("wall_s") if made_before else time.perf_counter() - start


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=None, help="one environment slug")
    args = parser.parse_args()
    manifest_path = HERE / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    versions = {p: version(p) for p in ("stable-baselines3", "gymnasium", "torch", "mujoco")}
    for env_id, (options, seeds) in PRETRAIN.items():
        slug = env_id.replace("/", "_")
        if args.only and args.only != slug:
            continue
        for seed in seeds:
            out = HERE / slug / f"seed{seed}.zip"
            key = f"{slug}/seed{seed}.zip"
            start = time.perf_counter()
            made_before = out.exists()
            if made_before:  # evaluated and recorded again, not retrained
                agent = PPO.load(out, device="cpu")
            else:
                agent = pretrain(PretrainSettings(env_id=env_id, seed=seed, out=str(out), **options),  # type: ignore[arg-type]
                                 progress_bar=False)
            wall = making_time(manifest, key, made_before, start)
            result = evaluate_agent(agent, env_id, 20, 10_000 + seed)
            manifest[key] = {"command": pretrain_command(env_id, options, seed), "seed": seed, "versions": versions,
                             "sha256": sha256(out), "eval_mean_20": result.mean, "wall_s": wall}
            print(f"{env_id} seed {seed}: {result.mean:.1f} ± {result.std:.1f}", flush=True)
        expert_out = HERE / "experts" / f"{slug}.zip"
        expert_out.parent.mkdir(parents=True, exist_ok=True)
        expert_key = f"experts/{slug}.zip"
        start = time.perf_counter()
        made_before = expert_out.exists()
        if made_before:  # evaluated and recorded again, not refitted
            expert = PPO.load(expert_out, device="cpu")
            command = manifest.get(expert_key, {}).get("command", expert_command(env_id))
        elif env_id in EXPERT_MAKERS:
            expert = EXPERT_MAKERS[env_id](expert_out)
            command = expert_command(env_id)
        else:
            expert = pretrain(PretrainSettings(env_id="Hopper-v5", timesteps=150_000, seed=EXPERT_SEED,
                                               out=str(expert_out)), progress_bar=False)
            command = expert_command(env_id)
        wall = making_time(manifest, expert_key, made_before, start)
        result = evaluate_agent(expert, env_id, 20, 20_000)
        manifest[expert_key] = {"command": command, "seed": EXPERT_SEED, "versions": versions,
                                "sha256": sha256(expert_out), "eval_mean_20": result.mean, "wall_s": wall}
        print(f"expert {env_id}: {result.mean:.1f} ± {result.std:.1f}", flush=True)
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
