"""The layout's promises, checked on the source: imports point one way, SQL is written in db/ only, the
formatter is the only one that packs lines, and starter.py only mounts the command line's sub-apps."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top: a package may import its own layer and those below, never one above. The workflows and
# their activities are one layer: a workflow names the activities it runs, an activity checks the pure rules.
LAYERS: list[set[str]] = [
    {"core", "models"},  # the ground floor: settings, logs, codec, errors, formatting; pydantic types
    {"db"},  # repositories: the only SQL
    {"finance", "notify"},  # money rules and the payment channel; notification channels
    {"workflows", "activities"},  # the engine
    {"archive", "auditor"},  # histories past retention; the auditors' reading of them
    {"operations"},  # what a person does: import, act, pay in batches, report
    {"web"},  # the officers' web app and API
    {"runtime"},  # assembly: the worker, the embedded stack, the migration runner
    {"cli"},  # the command line, mounted by starter.py
]
LAYER = {package: n for n, packages in enumerate(LAYERS) for package in packages}
# Alembic's environment imports the schema it migrates; it runs below everything, as the owner.
OUTSIDE = {"migrations", "tests", "bench", "docs"}


def _sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if p.relative_to(ROOT).parts[0] not in {".venv", "build"} | {".state"})


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def _package(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


def test_every_package_has_a_layer() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - OUTSIDE
    assert packages - set(LAYER) == set(), "a new package needs its place in LAYERS"


def test_imports_point_down() -> None:
    upward = []
    for path in _sources():
        here = _package(path)
        if here not in LAYER:
            continue
        for line, module in _imports(path):
            there = module.split(".")[0]
            if there in LAYER and LAYER[there] > LAYER[here]:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {module} (layer {there} above {here})")
    assert upward == []


def test_sql_is_written_in_db_only() -> None:
    """No module outside db/ (and the migrations) builds a query: it asks a repository."""
    found = []
    for path in _sources():
        if _package(path) in {"db", "migrations", "tests"}:
            continue
        for line, module in _imports(path):
            if module.split(".")[0] == "sqlalchemy" or module == "db.schema":
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert found == []


def test_no_hand_formatting_markers() -> None:
    marked = [str(p.relative_to(ROOT)) for p in _sources() if "fmt: " + "skip" in p.read_text(encoding="utf-8")]
    assert marked == []


def test_starter_only_mounts_the_command_line() -> None:
    tree = ast.parse((ROOT / "starter.py").read_text(encoding="utf-8"))
    defined = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    assert defined == [], f"starter.py defines {defined}: commands belong in cli/"


@pytest.mark.parametrize("layer", range(len(LAYERS)))
def test_layers_are_not_empty(layer: int) -> None:
    assert all((ROOT / package / "__init__.py").exists() for package in LAYERS[layer])
