"""The layer rule of docs/METHOD.md: each folder is one stage, and a lower stage never imports a
higher one. Read from the source with ``ast``, so an import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import ultrarl

PACKAGE = Path(ultrarl.__file__).parent
# docs/METHOD.md, "Layers", as levels; a module may import its own level and those below it.
LEVELS = {
    "ultrarl": 0, "errors": 0, "run_dir": 0, "methods": 0,
    "envs": 1, "interpret": 2, "llm": 3, "explain": 4, "guidance": 5, "refine": 6, "evaluate": 7,
    "report": 8, "settings": 9, "stages": 10, "resume": 10, "pipeline": 10, "fidelity": 10, "plateau": 10, "bench": 11,
    "experts": 10, "demo": 12, "cli": 12, "__main__": 12,
}


def _stage(module: str) -> str:
    """'ultrarl.refine.guided_ppo' -> 'refine'; 'ultrarl' -> 'ultrarl'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ultrarl":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "ultrarl"}
    return found


def test_every_module_has_a_level() -> None:
    stages = {_stage(".".join(("ultrarl", *p.relative_to(PACKAGE).with_suffix("").parts))) for p in PACKAGE.rglob("*.py")}
    assert stages - {"__init__"} <= set(LEVELS), f"modules without a level: {stages - set(LEVELS)}"


def test_no_stage_imports_a_higher_one() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        module = ".".join(("ultrarl", *parts)) if parts != ("__init__",) else "ultrarl"
        level = LEVELS[_stage(module)] if _stage(module) != "__init__" else 0
        violations += [f"{module} imports {dep}" for dep in _imports(path) if LEVELS[_stage(dep)] > level]
    assert not violations, "\n".join(violations)


def test_functions_stay_readable() -> None:
    """No function over 60 lines: an algorithm reads top to bottom in small, named steps."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert not long, long
