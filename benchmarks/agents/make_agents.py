"""Make the stuck agents and the experts that the stuck-agent benchmark ships (``MANIFEST.json``
records each file's command, seed, versions and SHA-256).

    python benchmarks/agents/make_agents.py [--only ENV_SLUG [--seeds S,S]]

Two makers may run side by side, one per core (``--only``, ``--seeds``): each writes
MANIFEST.json file by file, keeping the other's entries. A task copies another task's expert
when the same command made it (a sparse task and its dense twin); run the two one after the
other, or both train it.

- Stuck agents: SB3 PPO with its default hyperparameters, ``PRETRAIN`` steps, one per seed.
  On MountainCarContinuous-v0 PPO learns to stand still (the action costs energy, the flag is
  never found); on SparseHopper-v5 and SparseWalker2d-v5 the reward only starts once the torso
  is past x = 0.6.
- PongPoint-v0's, Hopper-v5's and Walker2d-v5's agents are PPO trained until their evaluated
  return stopped improving (``--until-plateau``, with a step cap), not for a fixed budget.
- Experts (the oracle's advisor, an upper bound): on MountainCarContinuous-v0 a PPO policy
  network fitted by supervised learning to the energy-pumping controller a = sign(velocity)
  (reaches the flag from every start); on PongPoint-v0 a PPO policy fitted to a paddle that
  follows the ball (``ultrarl.experts``); on the MuJoCo tasks PPO trained longer on the dense
  task (``PPO_EXPERTS``; a task shares another's file when the same command made it).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import shutil
import time
from importlib.metadata import version
from pathlib import Path

from stable_baselines3 import PPO

from ultrarl.experts import EXPERT_MAKERS, EXPERT_SEED
from ultrarl.evaluate.evaluation import evaluate_agent
from ultrarl.pipeline import pretrain
from ultrarl.run_dir import pretrain_record, write_text_atomic
from ultrarl.settings import PretrainSettings

HERE = Path(__file__).resolve().parent
# Seeds 0-9 (0-4 on every task but MountainCar) are the benchmark's evaluation seeds; seeds
# 100-102 (MountainCar, PongPoint) are tuning seeds: defaults are chosen on them, never on the
# evaluation seeds.
TUNING_SEEDS = [100, 101, 102]
# Hopper-v5's shipped agents: PPO until 4 evaluations in a row miss the best by 2% (at most 500k
# steps), each judged alone, written as they stopped. PPO's evaluated return swings between
# updates, so most stopped on a swing and were not stuck (BENCHMARKS.md).
HOPPER_PLATEAU: dict[str, object] = {"timesteps": 500_000, "until_plateau": True, "plateau_eval_every": 25_000,
                                     "plateau_eval_episodes": 10, "plateau_window": 4}
# Walker2d-v5's agents (it still improved at 500k steps with Hopper's options): at most 1M steps,
# under a rule that judges the mean of 4 evaluations (100k steps) over a window of 6 (150k
# steps), so one lucky or unlucky evaluation neither sets the bar nor ends the run; each keeps
# its evaluated-best checkpoint. Chosen before any agent was made with it, not tuned. Hopper-v5
# re-made so (seeds 0, 1, 3) scored 3188, 3568 and 2712 against the expert's 3543: at its
# plateau PPO reaches the expert there, which leaves advice little to do; not shipped.
DENSE_PLATEAU: dict[str, object] = {"timesteps": 1_000_000, "until_plateau": True, "keep_best": True,
                                    "plateau_eval_every": 25_000, "plateau_eval_episodes": 10,
                                    "plateau_window": 6, "plateau_smooth": 4}
# env -> (``ultrarl pretrain`` options beyond the env and seed, seeds)
PRETRAIN: dict[str, tuple[dict[str, object], list[int]]] = {
    "MountainCarContinuous-v0": ({"timesteps": 30_000}, [*range(10), *TUNING_SEEDS]),
    "ultrarl/SparseHopper-v5": ({"timesteps": 60_000}, list(range(5))),
    "ultrarl/PongPoint-v0": ({"timesteps": 300_000, "until_plateau": True, "plateau_eval_every": 20_000,
                              "plateau_eval_episodes": 20, "plateau_window": 4}, [*range(5), *TUNING_SEEDS]),
    "ultrarl/SparseWalker2d-v5": ({"timesteps": 60_000}, list(range(5))),
    "Hopper-v5": (HOPPER_PLATEAU, list(range(5))),
    "Walker2d-v5": (DENSE_PLATEAU, list(range(5))),
}
# env -> (the dense env a PPO expert trains on, its ``ultrarl pretrain`` options), for tasks without
# a scripted expert. PPO's evaluated return swings between updates, so the newer experts keep their
# evaluated-best checkpoint (their own evaluation episodes, not the benchmark's). Two tasks with
# the same command share one training and one file (SparseWalker2d-v5's expert was Walker2d-v5's
# first).
BEST_OF_1M: dict[str, object] = {"timesteps": 1_000_000, "keep_best": True, "plateau_eval_every": 25_000,
                                 "plateau_eval_episodes": 10}
# Walker2d-v5's 1M expert scored 2286 ± 1422 on the benchmark's 20 episodes, below two of the
# agents: twice the steps, and each checkpoint judged on 20 episodes.
BEST_OF_2M: dict[str, object] = {"timesteps": 2_000_000, "keep_best": True, "plateau_eval_every": 50_000,
                                 "plateau_eval_episodes": 20}
PPO_EXPERTS: dict[str, tuple[str, dict[str, object]]] = {
    "ultrarl/SparseHopper-v5": ("Hopper-v5", {"timesteps": 150_000}),
    "Hopper-v5": ("Hopper-v5", BEST_OF_1M),
    "ultrarl/SparseWalker2d-v5": ("Walker2d-v5", BEST_OF_1M),
    "Walker2d-v5": ("Walker2d-v5", BEST_OF_2M),
}


def flags(options: dict[str, object]) -> str:
    return " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in options.items())


def pretrain_command(env_id: str, options: dict[str, object], seed: int) -> str:
    return f"ultrarl pretrain {env_id} {flags(options)} --seed {seed} --out seed{seed}.zip"


def expert_command(env_id: str) -> str:
    if env_id in EXPERT_MAKERS:
        return f"benchmarks/agents/make_agents.py: ultrarl.experts.{EXPERT_MAKERS[env_id].__name__}"
    train_env, options = PPO_EXPERTS[env_id]
    return f"ultrarl pretrain {train_env} {flags(options)} --seed {EXPERT_SEED}"


def made_expert(manifest: dict, command: str) -> Path | None:
    """A shipped expert file made by ``command`` (another task's: a sparse task and its dense twin)."""
    return next((HERE / key for key, entry in manifest.items()
                 if key.startswith("experts/") and entry["command"] == command and (HERE / key).exists()), None)


def making_time(manifest: dict, key: str, made_before: bool, start: float) -> float | None:
    """Wall seconds of making ``key``: this run's, or for a file made before the one recorded
    (not this evaluation's; null for a file made outside this script, such as PongPoint's tuning
    agents, trained two at a time with `ultrarl pretrain`)."""
    return manifest.get(key, {}).get("wall_s") if made_before else time.perf_counter() - start


def copy_expert(twin: Path, out: Path) -> PPO:
    shutil.copyfile(twin, out)
    if pretrain_record(twin).exists():
        shutil.copyfile(pretrain_record(twin), pretrain_record(out))
    return PPO.load(out, device="cpu")


def make_expert(env_id: str, out: Path) -> PPO:
    if env_id in EXPERT_MAKERS:
        return EXPERT_MAKERS[env_id](out)
    train_env, options = PPO_EXPERTS[env_id]
    return pretrain(PretrainSettings(env_id=train_env, seed=EXPERT_SEED, out=str(out), **options),  # type: ignore[arg-type]
                    progress_bar=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(manifest_path: Path, key: str, entry: dict) -> dict:
    """Write ``entry`` into MANIFEST.json as it is on disk now, file by file, under a lock and
    atomically: two makers running side by side (one per core, ``--only``) keep each other's
    entries. Returns the manifest."""
    with open(manifest_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read_manifest(manifest_path)
        manifest[key] = entry
        write_text_atomic(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(manifest_path: Path) -> dict:
    return json.loads(manifest_path.read_text()) if manifest_path.exists() else {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=None, help="one environment slug")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds of its task (default: all)")
    args = parser.parse_args()
    manifest_path = HERE / "MANIFEST.json"
    manifest = read_manifest(manifest_path)
    versions = {p: version(p) for p in ("stable-baselines3", "gymnasium", "torch", "mujoco")}
    for env_id, (options, seeds) in PRETRAIN.items():
        slug = env_id.replace("/", "_")
        if args.only and args.only != slug:
            continue
        for seed in [seed for seed in seeds if args.seeds is None or str(seed) in args.seeds.split(",")]:
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
            manifest = record(manifest_path, key, {
                "command": pretrain_command(env_id, options, seed), "seed": seed, "versions": versions,
                "sha256": sha256(out), "eval_mean_20": result.mean, "wall_s": wall})
            print(f"{env_id} seed {seed}: {result.mean:.1f} ± {result.std:.1f}", flush=True)
        expert_out = HERE / "experts" / f"{slug}.zip"
        expert_out.parent.mkdir(parents=True, exist_ok=True)
        expert_key = f"experts/{slug}.zip"
        start = time.perf_counter()
        on_disk = read_manifest(manifest_path)  # the other maker's files too
        twin = made_expert(on_disk, expert_command(env_id))
        if expert_out.exists():  # evaluated and recorded again, not refitted
            expert = PPO.load(expert_out, device="cpu")
            command = manifest.get(expert_key, {}).get("command", expert_command(env_id))
            wall = making_time(manifest, expert_key, True, start)
        elif env_id not in EXPERT_MAKERS and twin is not None:  # the same training made it: its file, record, time
            expert, command = copy_expert(twin, expert_out), expert_command(env_id)
            wall = on_disk[str(twin.relative_to(HERE))]["wall_s"]
        else:
            expert, command = make_expert(env_id, expert_out), expert_command(env_id)
            wall = making_time(manifest, expert_key, False, start)
        result = evaluate_agent(expert, env_id, 20, 20_000)
        manifest = record(manifest_path, expert_key, {
            "command": command, "seed": EXPERT_SEED, "versions": versions, "sha256": sha256(expert_out),
            "eval_mean_20": result.mean, "wall_s": wall})
        print(f"expert {env_id}: {result.mean:.1f} ± {result.std:.1f}", flush=True)


if __name__ == "__main__":
    main()
