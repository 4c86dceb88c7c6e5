"""A release written as our checkpoint folder: everything it needs inside, its chat style and
compatibility values in config.json, so the generic loader reproduces the published answer."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llama import chat_style
from llama.chat import answer_ids
from llama.m2ugen import M2UGen
from llama.release.export import import_release

REF = Path(__file__).resolve().parents[1] / "published_reference"
COMP = REF / "components"


def test_the_generic_loader_runs_an_imported_release_as_published(tmp_path, monkeypatch):
    dst = import_release(REF / "mumu" / "checkpoint.pth", tmp_path / "imported",
                         llama_dir=str(COMP), mert_path=str(COMP / "mert"),
                         vit_path=str(COMP / "vit"), vivit_path=str(COMP / "vivit"))
    names = {p.name for p in dst.iterdir()}
    # Base LLaMA (the file's), tokenizer, the file's encoders (config-only folders were given).
    assert {"llama", "tokenizer.model", "mert", "vit", "vivit", "model.safetensors",
            "config.json"} <= names
    saved = json.loads((dst / "config.json").read_text())
    assert saved["release"]["layout"] == "mumu-llama"
    assert saved["release"]["source"].endswith("checkpoint.pth")
    assert "the newer release's video RNN/attention (its video path never ran)" in saved[
        "release"]["unused"]

    monkeypatch.setattr(torch, "load", None)  # no pickle from here on
    model = M2UGen.from_pretrained(str(dst), load_decoder=False)
    assert model.cfg.chat_style == chat_style.PUBLISHED_MUMU_LLAMA
    assert model.cfg.llama.adapter_uses_lora is False
    ref = json.loads((REF / "mumu" / "reference.json").read_text())
    assert answer_ids(model, ref["prompt_ids"], None, 24) == ref["kinds"]["text"]["greedy_ids"]


def test_a_folder_imported_before_styles_were_stored_keeps_the_published_decoding(tmp_path):
    """Older imports wrote {"published": {"release": ...}} and no chat style: they still decode
    as published (the style that was current for them), not with our default."""
    from llama.release.load import load_imported

    dst = import_release(REF / "m2ugen" / "checkpoint.pth", tmp_path / "imported",
                         llama_dir=str(COMP), mert_path=str(COMP / "mert"),
                         vit_path=str(COMP / "vit"), vivit_path=str(COMP / "vivit"))
    saved = json.loads((dst / "config.json").read_text())
    del saved["m2ugen"]["chat_style"]
    saved["published"] = {"release": saved.pop("release")["layout"], "gates_all_zero": False}
    (dst / "config.json").write_text(json.dumps(saved))
    model = load_imported(dst)
    assert model.cfg.chat_style == chat_style.PUBLISHED_M2UGEN
    ref = json.loads((REF / "m2ugen" / "reference.json").read_text())
    assert answer_ids(model, ref["prompt_ids"], None, 24) == ref["kinds"]["text"]["greedy_ids"]
