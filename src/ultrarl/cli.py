"""``ultrarl``: subcommands in the shape of RL Zoo. Every user error is one line and exit code 2."""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from ultrarl.errors import EXIT_USAGE, UltraRLError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        print(f"ultrarl: error: {message} (see ultrarl --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add_llm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llm", default=None, help="local (default), local:smollm2, local:gemma3 or openai:MODEL")
    p.add_argument("--llm-base-url", default=None, help="an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--cache-dir", default=None, help="LLM response cache (default $ULTRARL_CACHE_DIR or ~/.cache/ultrarl)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the LLM response cache")
    p.add_argument("--llm-api-key-env", default=None, help="environment variable holding the API key")
    p.add_argument("--llm-concurrency", type=int, default=None, help="parallel requests to a server (default 4)")
    p.add_argument("--llm-max-calls", type=int, default=None, help="stop querying after this many calls")
    p.add_argument("--llm-max-total-tokens", type=int, default=None, help="stop querying after this many tokens")


def _add_explain_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("env_id")
    p.add_argument("--agent", required=True, help="SB3 PPO model zip")
    p.add_argument("--run-dir", default=None, help="where the run is written (required unless --dry-run)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--episodes", type=int, default=None)
    p.add_argument("--config", type=Path, default=None, help="YAML settings; command-line values win")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
    p.add_argument("--token-budget", type=int, default=None)
    p.add_argument("--critical-steps", type=int, default=None)
    p.add_argument("--eval-episodes", type=int, default=None)
    p.add_argument("--save-frames", action="store_true", help="save a picture of each critical state")
    p.add_argument("--env-context", default=None, help="file with the environment's goal, reward and termination")
    _add_llm_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ultrarl", description="LLM-guided refinement of stuck RL agents (ULTRA).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("pretrain", help="train a (sub-optimal) PPO agent")
    p.add_argument("env_id")
    p.add_argument("--timesteps", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser("explain", help="ask the LLM for critical states and build the guidance table")
    _add_explain_options(p)
    p.add_argument("--dry-run", action="store_true", help="print the rendered prompts; no LLM call, nothing written")

    p = sub.add_parser("refine", help="refine an agent with ULTRA-A/R/RA or a baseline (ppo, statemask-r, rice, ...)")
    _add_explain_options(p)
    p.add_argument("--method", default=None,
                   help="ultra-a, ultra-r, ultra-ra (default); baselines ppo, statemask-r, rice, random, oracle")
    p.add_argument("--timesteps", type=int, default=None)
    p.add_argument("--override-prob", type=float, default=None)
    p.add_argument("--beta", type=float, default=None)
    p.add_argument("--reset-prob", type=float, default=None, help="p: episodes start at a critical state")
    p.add_argument("--rnd-weight", type=float, default=None, help="λ: weight of the RND exploration bonus")
    p.add_argument("--mask-timesteps", type=int, default=None, help="PPO steps to train the mask network")
    p.add_argument("--expert", default=None, help="expert SB3 PPO zip, the advisor of --method oracle")
    p.add_argument("--rounds", type=int, default=None, help="identify-then-refine rounds (ULTRA)")
    p.add_argument("--verify", action="store_true", help="check suggestions by short rollouts from their states")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its latest checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default 10000)")

    p = sub.add_parser("evaluate", help="evaluate an agent without guidance; prints JSON")
    p.add_argument("env_id")
    p.add_argument("--agent", required=True)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("bench", help="environments x methods x seeds, locally or on Ray, with a report")
    p.add_argument("config", type=Path, help="bench YAML (see benchmarks/quick.yaml)")
    p.add_argument("--out", type=Path, default=None, help="bench directory (default runs/bench-<name>)")
    p.add_argument("--workers", type=int, default=1, help="parallel runs in the local process pool")
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--ray-address", default=None, help="a Ray cluster (default: a local Ray for this run)")

    p = sub.add_parser("report", help="rebuild the report of a bench or run directory from disk")
    p.add_argument("path", type=Path)

    p = sub.add_parser("demo", help="the whole method on Hopper-v5, offline, in a few minutes")
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    p.add_argument("--llm", default="local")
    return parser


def _settings_values(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line values that were given (None means: keep the config's or the default)."""
    mapping = {
        "env_id": args.env_id, "agent": args.agent, "seed": args.seed, "episodes": args.episodes,
        "llm": args.llm, "llm_base_url": args.llm_base_url, "cache_dir": args.cache_dir,
        "token_budget": args.token_budget, "critical_steps": args.critical_steps,
        "eval_episodes": args.eval_episodes, "env_context": args.env_context,
        "llm_api_key_env": getattr(args, "llm_api_key_env", None),
        "llm_concurrency": getattr(args, "llm_concurrency", None),
        "llm_max_calls": getattr(args, "llm_max_calls", None),
        "llm_max_total_tokens": getattr(args, "llm_max_total_tokens", None),
        "method": getattr(args, "method", None), "timesteps": getattr(args, "timesteps", None),
        "checkpoint_every": getattr(args, "checkpoint_every", None),
        "reset_prob": getattr(args, "reset_prob", None), "rnd_weight": getattr(args, "rnd_weight", None),
        "mask_timesteps": getattr(args, "mask_timesteps", None), "expert": getattr(args, "expert", None),
        "rounds": getattr(args, "rounds", None),
    }
    values = {k: v for k, v in mapping.items() if v is not None}
    if args.no_cache:
        values["use_cache"] = False
    if args.save_frames:
        values["save_frames"] = True
    if getattr(args, "verify", False):
        values["verify"] = True
    modulation = {k: getattr(args, k, None) for k in ("override_prob", "beta")}
    if any(v is not None for v in modulation.values()):
        values["modulation"] = {k: v for k, v in modulation.items() if v is not None}
    return values


def _settings(args: argparse.Namespace, cls: type) -> Any:
    from ultrarl.config import build_settings, load_settings_file

    values = _settings_values(args)
    if args.config is not None:
        return load_settings_file(args.config, cls, values)
    return build_settings(cls, values)


def _run(args: argparse.Namespace) -> int:
    # Heavy imports (torch, SB3, MuJoCo) only once the arguments are known to be valid.
    from ultrarl.report.console import console, critical_states_table, returns_table

    if args.command == "pretrain":
        from ultrarl.pipeline import pretrain

        if args.out.suffix != ".zip":
            raise UltraRLError(f"--out must name a .zip file, got {args.out}")
        pretrain(args.env_id, args.timesteps, args.seed, args.out)
        console.print(f"saved {args.out}")
    elif args.command == "evaluate":
        from ultrarl.envs.factory import check_agent_spaces, validate_env_id
        from ultrarl.evaluate.evaluation import evaluate_agent
        from ultrarl.refine.refiner import load_agent

        validate_env_id(args.env_id)
        agent = load_agent(args.agent)
        check_agent_spaces(agent.observation_space, agent.action_space, args.env_id)
        result = evaluate_agent(agent, args.env_id, args.episodes, args.seed)
        print(json.dumps({"mean": result.mean, "std": result.std, "episodes": result.episodes,
                          "returns": result.returns}))
    elif args.command in ("explain", "refine"):
        from ultrarl.config import ExplainSettings, RefineSettings
        from ultrarl.pipeline import refine_agent, run_explain
        from ultrarl.refine.refiner import check_method
        from ultrarl.run_dir import prepare_run_dir

        settings = _settings(args, ExplainSettings if args.command == "explain" else RefineSettings)
        if args.command == "refine":
            check_method(settings.method)
        if getattr(args, "dry_run", False):
            from ultrarl.pipeline import preview_prompts

            for prompt in preview_prompts(settings):
                print(prompt.render_text())
            return 0
        if args.run_dir is None:
            raise UltraRLError(f"{args.command} needs --run-dir")
        resume = getattr(args, "resume", False)
        run_dir = prepare_run_dir(args.run_dir, overwrite=args.overwrite, resume=resume)
        if args.command == "explain":
            outcome = run_explain(settings, run_dir)
            console.print(critical_states_table(outcome.states))
        else:
            refined = refine_agent(settings, run_dir, resume=resume)
            console.print(returns_table({"before": refined.before, f"after {settings.method}": refined.after}))
        console.print(f"run directory: {run_dir}")
    elif args.command == "bench":
        return _bench(args)
    elif args.command == "report":
        from ultrarl.report.rebuild import rebuild_report

        if not args.path.is_dir():
            raise UltraRLError(f"{args.path} is not a directory")
        console.print(f"report: {rebuild_report(args.path)}")
    elif args.command == "demo":
        from ultrarl.demo import run_demo

        run_demo(args.run_dir, llm=args.llm)
    return 0


# The machine's fault, not the program's: a full disk or a read-only or forbidden directory.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS}


def _bench(args: argparse.Namespace) -> int:
    from ultrarl.bench.grid import GridRunner, JobResult, failed, load_bench_config, run_grid
    from ultrarl.report.bench_report import write_bench_report
    from ultrarl.report.console import console

    if args.workers <= 0:
        raise UltraRLError(f"--workers must be positive, got {args.workers}")
    config = load_bench_config(args.config)
    out = args.out or Path("runs") / f"bench-{config.name}"

    def on_result(result: JobResult, done: int, total: int) -> None:
        after = f", after {result.after_mean:.1f}" if result.after_mean is not None else ""
        why = f": {result.message}" if result.status == "failed" else ""
        console.print(f"[{done}/{total}] {result.job.label}: {result.status} ({result.wall_time_s:.0f} s{after}){why}")

    runner = GridRunner(workers=args.workers, backend=args.backend, ray_address=args.ray_address, on_result=on_result)
    results = run_grid(config, out, runner)
    report = write_bench_report(out)
    console.print(f"report: {report} (and report.html, results.csv, estimates.json)")
    bad = failed(results)
    if bad:
        print(f"ultrarl: {len(bad)} of {len(results)} jobs failed; see error.txt in their run directories; "
              "run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except UltraRLError as exc:
        print(f"ultrarl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"ultrarl: error: {exc.strerror}{where}; finished files were written atomically", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ultrarl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
