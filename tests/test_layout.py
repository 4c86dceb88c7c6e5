"""The layout rules, checked on every module's imports (including lazy ones inside functions).

Direction: util <- llama <- data <- training (engine_train, train_m2ugen) / serving (app)
<- CLIs (inference.py, gradio_app.py), Evaluation/, benchmarks/, DataSet/; nothing imports those
last ones, and no entry script imports another.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"util", "llama", "data", "app", "engine_train", "train_m2ugen", "inference",
        "gradio_app", "Evaluation", "benchmarks", "DataSet"}
BASE = {"util"}
ALLOWED = {  # unit -> what it may import (besides itself)
    "util": set(),
    "llama": {"util"},
    "data": {"util", "llama"},
    "engine_train": {"util", "llama", "data"},
    "train_m2ugen": {"util", "llama", "data", "engine_train"},
    "app": {"util", "llama", "data"},
    "inference": {"util", "llama", "data", "app"},
    "gradio_app": {"util", "llama", "data", "app"},
    "Evaluation": {"util", "llama", "data", "app"},
    "benchmarks": {"util", "llama", "data", "app", "engine_train"},
    "DataSet": {"util", "llama", "data", "app"},
}


def unit_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def sources() -> list[Path]:
    files = []
    for unit in sorted(OURS):
        p = ROOT / unit
        if p.is_dir():
            files += sorted(p.rglob("*.py"))
        elif p.with_suffix(".py").is_file():
            files.append(p.with_suffix(".py"))
    return files


def imported_units(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in OURS}
    return found


def test_every_unit_has_a_rule():
    assert {unit_of(p) for p in sources()} <= set(ALLOWED)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layout(path):
    unit = unit_of(path)
    forbidden = imported_units(path) - ALLOWED[unit] - {unit}
    assert not forbidden, f"{path.relative_to(ROOT)} ({unit}) must not import {sorted(forbidden)}"


def test_the_rule_catches_a_forbidden_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from data.media import load_audio\n")
    assert imported_units(bad) == {"data"}  # would fail for a llama/ module


MAX_FUNCTION_LINES = 90  # "no function over ~80 lines": long functions are split, not tolerated


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_stay_short(path):
    assert not long_functions(path), f"{path.relative_to(ROOT)}: {long_functions(path)}"
