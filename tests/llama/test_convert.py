"""Meta <-> HF conversion: bit-exact round trips, tokenizer copying, CLI behaviour on bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llama.config import llama_tiny
from llama.convert import main
from llama.weights import base_weight_shapes, read_config, save_meta

REPO = Path(__file__).resolve().parents[2]


def _meta_folder(folder: Path, dtype: torch.dtype, shards: int = 1) -> dict[str, torch.Tensor]:
    cfg = dataclasses.replace(llama_tiny(), vocab_size=64, dim=64, n_kv_heads=2)
    gen = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(s, generator=gen).to(dtype) for k, s in base_weight_shapes(cfg).items()}
    save_meta(sd, cfg, folder, n_shards=shards)
    return sd


def _read_meta(folder: Path) -> list[dict[str, torch.Tensor]]:
    return [torch.load(f, weights_only=True) for f in sorted(folder.glob("consolidated.*.pth"))]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a
    )


@pytest.mark.parametrize("dtype,shards", [(torch.bfloat16, 1), (torch.float16, 2)])
def test_meta_hf_meta_round_trip_is_bit_exact(tmp_path, dtype, shards) -> None:
    llama_dir = tmp_path / "llama"
    _meta_folder(llama_dir / "7B", dtype, shards)
    (llama_dir / "tokenizer.model").write_bytes(b"sp-model-bytes")  # upstream layout: one level up
    assert main(["--to", "hf", str(llama_dir / "7B"), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "tokenizer.model").read_bytes() == b"sp-model-bytes"
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llama"
    hf = load_file(tmp_path / "hf" / "model.safetensors")
    assert all(t.dtype == dtype for t in hf.values())
    assert main(["--to", "meta", "--shards", str(shards), str(tmp_path / "hf"),
                 str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / "tokenizer.model").read_bytes() == b"sp-model-bytes"
    original, back = _read_meta(llama_dir / "7B"), _read_meta(tmp_path / "back")
    assert len(original) == len(back) == shards
    assert all(_same(a, b) for a, b in zip(original, back))
    shape_fields = ("dim", "n_layers", "n_heads", "kv_heads", "vocab_size", "hidden_dim",
                    "norm_eps", "rope_theta")
    a, b = read_config(llama_dir / "7B")[1], read_config(tmp_path / "back")[1]
    assert all(getattr(a, f) == getattr(b, f) for f in shape_fields)
    assert "ffn_hidden_dim" not in json.loads((tmp_path / "back" / "params.json").read_text())
    # and HF -> Meta -> HF reproduces the safetensors exactly
    assert main(["--to", "hf", str(tmp_path / "back"), str(tmp_path / "hf2")]) == 0
    assert _same(hf, load_file(tmp_path / "hf2" / "model.safetensors"))


def test_cli_bad_input_exits_nonzero_with_one_line(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "llama.convert", "--to", "hf", str(tmp_path / "empty"),
         str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, env=env,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "empty" in lines[0] and "neither a Meta" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_convert_refuses_non_empty_destination_and_reports_missing_tokenizer(tmp_path, capsys
                                                                            ) -> None:
    _meta_folder(tmp_path / "m", torch.float32)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep me")
    assert main(["--to", "hf", str(tmp_path / "m"), str(tmp_path / "taken")]) == 1
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "taken" / "x").read_text() == "keep me"
    assert main(["--to", "hf", str(tmp_path / "m"), str(tmp_path / "hf")]) == 0
    assert "no tokenizer.model" in capsys.readouterr().err
