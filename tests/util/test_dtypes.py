"""The one dtype map: names -> torch dtypes, "auto", and that no other module keeps its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from util.dtypes import AUTO, DTYPE_NAMES, UnsupportedDtype, resolve_dtype

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("util", "llama", "data", "app", "Evaluation", "DataSet", "benchmarks")


def test_names_and_torch_dtypes_resolve():
    assert DTYPE_NAMES == ("float32", "bfloat16", "float16")
    assert [resolve_dtype(n) for n in DTYPE_NAMES] == [torch.float32, torch.bfloat16,
                                                       torch.float16]
    assert resolve_dtype(torch.bfloat16) is torch.bfloat16


def test_auto_depends_on_the_device():
    assert resolve_dtype(AUTO, "cpu") is torch.float32
    assert resolve_dtype(AUTO, "cuda:1") is torch.float16
    with pytest.raises(UnsupportedDtype, match="'auto'"):
        resolve_dtype(AUTO)  # no device: nothing to decide from


@pytest.mark.parametrize("bad", ["float64", "int8", "", torch.float64])
def test_anything_else_is_refused_naming_the_choices(bad):
    with pytest.raises(UnsupportedDtype, match="choose one of") as info:
        resolve_dtype(bad)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_importing_needs_no_torch():
    code = "import sys, util.dtypes; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def _files() -> list[Path]:
    out = []
    for name in SOURCES:
        out += sorted((ROOT / name).rglob("*.py"))
    return out + sorted(ROOT.glob("*.py"))


def test_no_other_module_maps_dtype_names():
    """No second `resolve_dtype`, and no dict literal from dtype names to torch attributes."""
    found = []
    for path in _files():
        if path == ROOT / "util" / "dtypes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef) and node.name == "resolve_dtype":
                found.append(f"{path.relative_to(ROOT)}: def resolve_dtype")
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if keys & {"bfloat16", "float16"} and any(
                        isinstance(v, ast.Attribute) and isinstance(v.value, ast.Name)
                        and v.value.id == "torch" for v in node.values):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: dtype dict")
    assert not found, found
