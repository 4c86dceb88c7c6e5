"""Docs that cannot drift from the tree: the module list of docs/ARCHITECTURE.md, and the README's
dependency table against what the training path imports."""

from __future__ import annotations

import re

from tests.test_layout import ROOT, tracked_sources

ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
# Packages listed module by module; the other folders (Evaluation/, DataSet/, benchmarks/,
# assets/, tests/) are described as a whole.
LISTED_PACKAGES = ("util", "llama", "data", "training", "app")
ENTRY = re.compile(r"^(?P<indent> *)(?P<name>[A-Za-z_][\w]*(?:\.py|/))(?:\s|$)")


def layout_block(text: str) -> list[str]:
    """The lines of the first code block after the "## Layout" heading."""
    after = text[text.index("## Layout"):]
    start = after.index("```\n") + 4
    return after[start:after.index("```", start)].splitlines()


def listed_paths(lines: list[str]) -> tuple[set[str], set[str]]:
    """(files, folders) the block names: an entry is a line whose first word is `name.py` or
    `name/` at an indent of two spaces per folder level; other lines continue a description."""
    files: set[str] = set()
    folders: set[str] = set()
    stack: list[str] = []
    for line in lines:
        m = ENTRY.match(line)
        if not m or len(m["indent"]) % 2 or len(m["indent"]) // 2 > len(stack):
            continue
        stack = stack[: len(m["indent"]) // 2]
        path = "/".join([*stack, m["name"].rstrip("/")])
        if m["name"].endswith("/"):
            folders.add(path)
            stack.append(m["name"].rstrip("/"))
        else:
            files.add(path)
    return files, folders


def test_the_parser_reads_nesting_and_skips_descriptions():
    block = ["top/        about", "  a.py       what a does,", "                 wrapped.py text",
             "  sub/", "    b.py     b", "  c.py", "script.py  run it"]
    assert listed_paths(block) == ({"top/a.py", "top/sub/b.py", "top/c.py", "script.py"},
                                   {"top", "top/sub"})


def test_architecture_lists_every_module_and_nothing_else():
    files, folders = listed_paths(layout_block(ARCHITECTURE.read_text()))
    tracked = {str(p.relative_to(ROOT)) for p in tracked_sources()}
    required = {p for p in tracked
                if (p.split("/")[0] in LISTED_PACKAGES or "/" not in p)
                and not p.endswith("__init__.py")}
    missing = sorted(required - files)
    assert not missing, f"docs/ARCHITECTURE.md's layout does not list {missing}"
    absent = sorted(p for p in files if not (ROOT / p).is_file())
    absent += sorted(f"{d}/" for d in folders if not (ROOT / d).is_dir())
    assert not absent, f"docs/ARCHITECTURE.md's layout lists what does not exist: {absent}"


def test_readme_dependency_table_names_what_training_goes_through():
    """Training forms its process group and DDP wrapper with accelerate: the README's table of
    dependency choices says so, and train_m2ugen really imports it."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Dependency choices"):]
    table = table[: table.index("\n## ")]
    row = next((r for r in table.splitlines() if r.startswith("| fairscale")), "")
    assert "accelerate" in row, "README's dependency table must say training uses accelerate"
    assert "from accelerate import Accelerator" in (ROOT / "train_m2ugen.py").read_text()
