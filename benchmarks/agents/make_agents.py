"""Make the stuck agents and the experts that the stuck-agent benchmark ships (``MANIFEST.json``
records each file's command, seed, versions and SHA-256).

    python benchmarks/agents/make_agents.py [--only ENV_SLUG]

- Stuck agents: SB3 PPO with its default hyperparameters, ``PRETRAIN`` steps, one per seed.
  On MountainCarContinuous-v0 PPO learns to stand still (the action costs energy, the flag is
  never found); on SparseHopper-v5 the reward only starts once the torso is past x = 0.6.
- Experts (the oracle's advisor, an upper bound): on MountainCarContinuous-v0 a PPO policy
  network fitted by supervised learning to the energy-pumping controller a = sign(velocity)
  (reaches the flag from every start); on SparseHopper-v5 PPO trained on dense Hopper-v5.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from importlib.metadata import version
from pathlib import Path

from stable_baselines3 import PPO

from ultrarl.demo import EXPERT_SEED, pumping_expert
from ultrarl.evaluate.evaluation import evaluate_agent
from ultrarl.pipeline import pretrain
from ultrarl.settings import PretrainSettings

HERE = Path(__file__).resolve().parent
# Seeds 0-9 (0-4 on SparseHopper) are the benchmark's evaluation seeds; MountainCar's seeds
# 100-102 are tuning seeds: defaults are chosen on them, never on the evaluation seeds.
TUNING_SEEDS = [100, 101, 102]
PRETRAIN = {"MountainCarContinuous-v0": (30_000, [*range(10), *TUNING_SEEDS]),
            "ultrarl/SparseHopper-v5": (60_000, list(range(5)))}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=None, help="one environment slug")
    args = parser.parse_args()
    manifest_path = HERE / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    versions = {p: version(p) for p in ("stable-baselines3", "gymnasium", "torch", "mujoco")}
    for env_id, (steps, seeds) in PRETRAIN.items():
        slug = env_id.replace("/", "_")
        if args.only and args.only != slug:
            continue
        for seed in seeds:
            out = HERE / slug / f"seed{seed}.zip"
            start = time.perf_counter()
            if out.exists():  # made before: evaluated and recorded again, not retrained
                agent = PPO.load(out, device="cpu")
            else:
                agent = pretrain(PretrainSettings(env_id=env_id, timesteps=steps, seed=seed, out=str(out)),
                                 progress_bar=False)
            result = evaluate_agent(agent, env_id, 20, 10_000 + seed)
            manifest[f"{slug}/seed{seed}.zip"] = {
                "command": f"ultrarl pretrain {env_id} --timesteps {steps} --seed {seed} --out {out.name}",
                "seed": seed, "versions": versions, "sha256": sha256(out), "eval_mean_20": result.mean,
                "wall_s": time.perf_counter() - start}
            print(f"{env_id} seed {seed}: {result.mean:.1f} ± {result.std:.1f}", flush=True)
        expert_out = HERE / "experts" / f"{slug}.zip"
        expert_out.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if expert_out.exists():  # made before: evaluated and recorded again, not refitted
            expert = PPO.load(expert_out, device="cpu")
            command = manifest[f"experts/{slug}.zip"]["command"]
        elif env_id == "MountainCarContinuous-v0":
            expert = pumping_expert(expert_out)
            command = "benchmarks/agents/make_agents.py: PPO policy fitted to a = sign(velocity)"
        else:
            expert = pretrain(PretrainSettings(env_id="Hopper-v5", timesteps=150_000, seed=EXPERT_SEED,
                                               out=str(expert_out)), progress_bar=False)
            command = f"ultrarl pretrain Hopper-v5 --timesteps 150000 --seed {EXPERT_SEED}"
        result = evaluate_agent(expert, env_id, 20, 20_000)
        manifest[f"experts/{slug}.zip"] = {"command": command, "seed": EXPERT_SEED, "versions": versions,
                                           "sha256": sha256(expert_out), "eval_mean_20": result.mean,
                                           "wall_s": time.perf_counter() - start}
        print(f"expert {env_id}: {result.mean:.1f} ± {result.std:.1f}", flush=True)
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
