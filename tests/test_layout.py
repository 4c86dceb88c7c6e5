"""The layout rules, checked on every module's imports (including lazy ones inside functions).

Direction: util <- llama <- data <- training (training/, engine_train, engine_refit,
train_m2ugen) / serving (app) <- CLIs (inference.py, gradio_app.py), Evaluation/, benchmarks/,
DataSet/, assets/; nothing imports those last ones, and no entry script imports another.

Modules: no module over MAX_MODULE_LINES lines, and no import cycle between modules, direct or
through others. The module graph counts every import statement the file holds: top-level ones,
lazy ones inside functions, and those under `if TYPE_CHECKING:`. Type-only imports are counted on
purpose: they never run, but a module that names another's types depends on it as much as one
that calls it (a reader must open both to follow either), and exempting them would make
`TYPE_CHECKING` the way around exactly the cycles this rule forbids.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path
from typing import Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {  # unit (top-level package or script) -> what it may import (besides itself)
    "util": set(),
    "llama": {"util"},
    "data": {"util", "llama"},
    "training": {"util", "llama", "data"},
    "engine_train": {"util", "llama", "data", "training"},
    "engine_refit": {"util", "llama", "data", "training", "engine_train"},
    "train_m2ugen": {"util", "llama", "data", "training", "engine_train", "engine_refit"},
    "app": {"util", "llama", "data"},
    "inference": {"util", "llama", "data", "app"},
    "gradio_app": {"util", "llama", "data", "app"},
    "Evaluation": {"util", "llama", "data", "app"},
    "benchmarks": {"util", "llama", "data", "app", "training", "engine_train"},
    "DataSet": {"util", "llama", "data", "app"},
    "assets": {"util", "llama", "data"},
}
OURS = set(ALLOWED)
MAX_MODULE_LINES = 600


def tracked_sources(root: Path = ROOT) -> list[Path]:
    """Every Python file of the project outside tests/: git's list, else a walk of the units."""
    try:
        names = subprocess.run(["git", "ls-files", "*.py"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.split()
        files = [root / n for n in names if (root / n).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = [p for unit in OURS for p in sorted((root / unit).rglob("*.py"))]
        files += [p for p in root.glob("*.py")]
    return sorted(p for p in files if p.relative_to(root).parts[0] != "tests")


def sources() -> list[Path]:
    return tracked_sources()


def unit_of(path: Path, root: Path = ROOT) -> str:
    return path.relative_to(root).parts[0].removesuffix(".py")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_statements(path: Path) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import in the file: top level, inside functions and under TYPE_CHECKING."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def imported_units(path: Path) -> set[str]:
    found = set()
    for node in import_statements(path):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif node.level == 0 and node.module:
            names = [node.module]
        else:
            continue  # relative imports stay inside their own package
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


# ---------------------------------------------------------------------------------------------
# Module size and module cycles


def test_no_module_is_over_the_line_budget():
    long = {str(p.relative_to(ROOT)): n for p in sources()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"


def module_graph(files: list[Path], root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the modules of ours it imports. `from pkg import name` points at `pkg.name` when
    that is a module, else at `pkg`; a dotted import points at the longest module it names."""
    modules = {module_name(p, root): p for p in files}
    packages = {m for m, p in modules.items() if p.name == "__init__.py"}

    def known(name: str) -> Optional[str]:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        here = mod if mod in packages else mod.rpartition(".")[0]
        deps: set[Optional[str]] = set()
        for node in import_statements(path):
            if isinstance(node, ast.Import):
                deps |= {known(a.name) for a in node.names}
                continue
            base = node.module or ""
            if node.level:  # relative: from the package `level - 1` levels up
                up = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                deps.add(full if full in modules else known(base))
        graph[mod] = {d for d in deps if d and d != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle (a -> b -> ... -> a) per strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_through(graph, group) for group in groups]


def _cycle_through(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest import path from the group's first module back to itself (breadth first)."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def test_no_two_modules_import_each_other():
    found = cycles(module_graph(sources()))
    assert not found, "import cycles (lazy and type-only imports included): " + "; ".join(
        " -> ".join(c) for c in found)


def test_the_cycle_check_sees_lazy_type_only_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from .c import g\n")  # lazy and relative
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    import pkg.a\ng = 1\n")
    (pkg / "d.py").write_text("import pkg.c\n")  # points into the cycle, is not part of it
    files = sorted(pkg.glob("*.py"))
    graph = module_graph(files, tmp_path)
    assert graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    (pkg / "c.py").write_text("g = 1\n")
    assert cycles(module_graph(files, tmp_path)) == []


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
