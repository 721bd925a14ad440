"""``ultrarl``: subcommands in the shape of RL Zoo. Every user error is one line and exit code 2.

The options of ``pretrain``, ``explain``, ``refine`` and ``evaluate`` are built from their
settings models (``ultrarl.settings``): one flag per setting, its help line the setting's
description with its default; a nested model's flags carry its ``cli_prefix``. Command-line
values override ``--config`` YAML values, which override the defaults.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel

from ultrarl.errors import EXIT_USAGE, UltraRLError
from ultrarl.settings import (
    EvaluateSettings,
    ExplainSettings,
    FidelityRunSettings,
    PlateauSettings,
    PretrainSettings,
    RefineSettings,
    build_settings,
    merge,
    read_yaml_mapping,
)

SETTINGS: dict[str, tuple[type[BaseModel], str]] = {
    "pretrain": (PretrainSettings, "train a (sub-optimal) PPO agent with SB3's defaults"),
    "explain": (ExplainSettings, "ask the LLM for critical states and build the guidance table"),
    "refine": (RefineSettings, "refine an agent with ULTRA-A/R/RA or a baseline (ppo, statemask-r, rice, ...)"),
    "evaluate": (EvaluateSettings, "evaluate an agent without guidance; prints JSON"),
    "fidelity": (FidelityRunSettings, "measure how critical each advisor's states are and how good its advice "
                                      "(LLM, random, rice, oracle, ...) by rollouts from snapshots"),
    "plateau": (PlateauSettings, "is the agent stuck? continued training's gain over the planned budget, per seed, "
                                 "with a 95% CI (and against the gap to an expert)"),
}
_SEP = "__"  # joins a nested setting's path into an argparse dest


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        print(f"ultrarl: error: {message} (see ultrarl --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _scalar_type(annotation: Any) -> Any:
    """int, float, str, bool, a Literal's values, or None for what the CLI does not take (lists)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _scalar_type(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return annotation if annotation in (int, float, str, bool) else None


def add_settings_arguments(parser: argparse.ArgumentParser, model: type[BaseModel], path: tuple[str, ...] = (),
                           prefix: str = "") -> None:
    """One option per field of ``model`` (recursively); only given options reach the namespace."""
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            add_settings_arguments(parser, annotation, (*path, name), getattr(annotation, "cli_prefix", ""))
            continue
        kind = _scalar_type(annotation)
        if extra.get("cli") is False or kind is None:
            continue
        dest = _SEP.join((*path, name))
        required = field.is_required()
        value = None if required else field.get_default(call_default_factory=True)
        default = "" if required or value is None else f" (default: {value})"
        help_text = _argparse_text(f"{field.description}{default}")
        if extra.get("positional"):
            parser.add_argument(dest, metavar=name.upper(), help=help_text)
            continue
        flag = "--" + str(extra.get("flag", prefix + name)).replace("_", "-")
        options: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif isinstance(kind, list):
            options["choices"] = kind
        else:
            options["type"] = kind
            options["metavar"] = kind.__name__.upper()
        parser.add_argument(flag, required=required and bool(extra.get("required_flag")), **options)


def settings_values(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The given options as the nested mapping the settings model takes."""
    values: dict[str, Any] = {}
    for dest, value in vars(args).items():
        path = dest.split(_SEP)
        if not _is_setting(model, path):
            continue
        target = values
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return values


def _is_setting(model: type[BaseModel], path: list[str]) -> bool:
    field = model.model_fields.get(path[0])
    if field is None:
        return False
    if len(path) == 1:
        return True
    nested = field.annotation
    return isinstance(nested, type) and issubclass(nested, BaseModel) and _is_setting(nested, path[1:])


def _argparse_text(text: str) -> str:
    """A help string as argparse takes it: it %-formats help, so a literal "95%" must be "95%%"."""
    return text.replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ultrarl", description="LLM-guided refinement of stuck RL agents (ULTRA).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command, (model, help_text) in SETTINGS.items():
        p = sub.add_parser(command, help=_argparse_text(help_text), description=help_text)
        add_settings_arguments(p, model)
        if command in ("explain", "refine", "fidelity", "plateau"):
            p.add_argument("--run-dir", default=None, help="where the run is written (required unless --dry-run)")
            p.add_argument("--config", type=Path, default=None, help="YAML settings; command-line values win")
            p.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
        if command == "explain":
            p.add_argument("--dry-run", action="store_true", help="print the rendered prompts; no LLM call, nothing "
                                                                  "written")
        if command in ("refine", "fidelity"):
            p.add_argument("--resume", action="store_true",
                           help="continue a killed run (refine: from its latest checkpoint; fidelity: advisor by advisor)")

    p = sub.add_parser("bench", help="environments x methods x seeds, locally or on Ray, with a report")
    p.add_argument("config", type=Path, help="bench YAML (see benchmarks/quick.yaml)")
    p.add_argument("--out", type=Path, default=None, help="bench directory (default: runs/bench-<name>)")
    p.add_argument("--workers", type=int, default=1, help="parallel runs in the local process pool (default: 1)")
    p.add_argument("--backend", choices=["local", "ray"], default="local", help="where runs execute (default: local)")
    p.add_argument("--ray-address", default=None, help="a Ray cluster (default: a local Ray for this run)")
    p.add_argument("--only", default=None, metavar="NAME[,NAME]",
                   help="run only these methods of the config (by their names in it; default: all); "
                        "bench.yaml and the report still cover the whole grid, with the runs that exist")
    p.add_argument("--envs", default=None, metavar="ENV[,ENV]",
                   help="run only these environments' tasks of the config (default: all); bench.yaml and the "
                        "report still cover the whole grid, with the runs that exist")

    p = sub.add_parser("report", help="rebuild the report of a bench or run directory from disk")
    p.add_argument("path", type=Path, help="a bench directory or a run directory")

    p = sub.add_parser("demo", help="the whole method on a stuck agent, offline, in a few minutes")
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="where the demo writes (default: runs/demo)")
    p.add_argument("--llm", default="local", help="the LLM of the ULTRA-RA row (default: local)")
    return parser


def _settings(args: argparse.Namespace, model: type[BaseModel]) -> Any:
    values = settings_values(args, model)
    if getattr(args, "config", None) is not None:
        values = merge(read_yaml_mapping(args.config), values)
    return build_settings(model, values)


def _run(args: argparse.Namespace) -> int:
    # Heavy imports (torch, SB3, MuJoCo) only once the arguments are known to be valid.
    if args.command == "bench":
        return _bench(args)
    from ultrarl.report.console import console

    if args.command == "pretrain":
        from ultrarl.pipeline import pretrain

        settings = _settings(args, PretrainSettings)
        pretrain(settings)
        console.print(f"saved {settings.out}")
    elif args.command == "evaluate":
        _evaluate(_settings(args, EvaluateSettings))
    elif args.command == "plateau":
        from ultrarl.plateau import check_plateau
        from ultrarl.run_dir import prepare_run_dir

        settings = _settings(args, PlateauSettings)
        if args.run_dir is None:
            raise UltraRLError("plateau needs --run-dir")
        check_plateau(settings, prepare_run_dir(args.run_dir, overwrite=args.overwrite))
    elif args.command in ("explain", "refine", "fidelity"):
        _explain_or_refine(args, _settings(args, SETTINGS[args.command][0]))
    elif args.command == "report":
        from ultrarl.report.rebuild import rebuild_report

        if not args.path.is_dir():
            raise UltraRLError(f"{args.path} is not a directory")
        console.print(f"report: {rebuild_report(args.path)}")
    elif args.command == "demo":
        from ultrarl.demo import run_demo

        run_demo(args.run_dir, llm=args.llm)
    return 0


def _evaluate(settings: EvaluateSettings) -> None:
    from ultrarl.envs.factory import validate_env_id
    from ultrarl.evaluate.evaluation import evaluate_agent
    from ultrarl.refine.refiner import load_checked_agent

    validate_env_id(settings.env_id)
    result = evaluate_agent(load_checked_agent(settings.agent, settings.env_id), settings.env_id,
                            settings.eval_episodes, settings.seed)
    print(json.dumps({"mean": result.mean, "std": result.std, "episodes": result.episodes,
                      "returns": result.returns}))


def _explain_or_refine(args: argparse.Namespace, settings: ExplainSettings) -> None:
    from ultrarl.pipeline import preview_prompts, refine_agent, run_explain
    from ultrarl.report.console import console, critical_states_table, returns_table
    from ultrarl.run_dir import prepare_run_dir

    if getattr(args, "dry_run", False):
        for prompt in preview_prompts(settings):
            print(prompt.render_text())
        return
    if args.run_dir is None:
        raise UltraRLError(f"{args.command} needs --run-dir")
    resume = getattr(args, "resume", False)
    run_dir = prepare_run_dir(args.run_dir, overwrite=args.overwrite, resume=resume)
    if isinstance(settings, FidelityRunSettings):
        from ultrarl.fidelity import run_fidelity

        run_fidelity(settings, run_dir, resume=resume)
    elif isinstance(settings, RefineSettings):
        refined = refine_agent(settings, run_dir, resume=resume)
        console.print(returns_table({"before": refined.before, f"after {settings.method}": refined.after}))
    else:
        found, _ = run_explain(settings, run_dir)
        console.print(critical_states_table(found.states))
    console.print(f"run directory: {run_dir}")


# The machine's fault, not the program's: a full disk or a read-only or forbidden directory.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS}


def _names(value: str | None, flag: str) -> list[str] | None:
    """A comma-separated list of names given to ``flag``, or None when the flag is absent."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise UltraRLError(f"{flag} names nothing (give one or more names, comma-separated)")
    return names


def _bench(args: argparse.Namespace) -> int:
    from ultrarl.bench.grid import (GridRunner, JobResult, check_env_names, check_method_names, failed,
                                    load_bench_config, run_grid)
    from ultrarl.report.bench_report import write_bench_report
    from ultrarl.report.console import console

    if args.workers <= 0:
        raise UltraRLError(f"--workers must be positive, got {args.workers}")
    config = load_bench_config(args.config)
    out = args.out or Path("runs") / f"bench-{config.name}"
    only, envs = _names(args.only, "--only"), _names(args.envs, "--envs")
    if only is not None:  # before any work
        check_method_names(config, only)
    if envs is not None:
        check_env_names(config, envs)

    def on_result(result: JobResult, done: int, total: int) -> None:
        after = f", after {result.after_mean:.1f}" if result.after_mean is not None else ""
        why = f": {result.message}" if result.status == "failed" else ""
        console.print(f"[{done}/{total}] {result.job.label}: {result.status} ({result.wall_time_s:.0f} s{after}){why}")

    runner = GridRunner(workers=args.workers, backend=args.backend, ray_address=args.ray_address, on_result=on_result)
    results = run_grid(config, out, runner, only, envs)
    report = write_bench_report(out)
    console.print(f"report: {report} (and report.html, results.csv, estimates.json)")
    bad = failed(results)
    if bad:
        print(f"ultrarl: {len(bad)} of {len(results)} jobs failed; see their lines above and error.txt in their "
              "run directories; run the same command again to retry them", file=sys.stderr)
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
