"""Loaded release files reproduce the published forward (see published_reference/README.md):
logits and projector output within tolerance, and the published greedy ids through the one
decoding loop configured by the release's chat style.

The reference tensors were produced by the published model code itself (run at tiny size outside
this repository); nothing here shares code with that run.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llama import chat_style
from llama.chat import MediaInput, answer_ids
from llama.release.load import load_release
from llama.release.read import ReleaseFileError, read_release

REF = Path(__file__).resolve().parents[1] / "published_reference"
COMP = REF / "components"
RELEASES = {"m2ugen": "m2ugen", "mumu": "mumu-llama", "m2ugen_audioldm2": "m2ugen"}
DECODERS = {"m2ugen": "musicgen", "mumu": "musicgen", "m2ugen_audioldm2": "audioldm2"}
STYLES = {"m2ugen": chat_style.PUBLISHED_M2UGEN, "mumu": chat_style.PUBLISHED_MUMU_LLAMA,
          "m2ugen_audioldm2": chat_style.PUBLISHED_M2UGEN}


def _load(ckpt: Path, **kw):
    return load_release(ckpt, llama_dir=str(COMP), mert_path=str(COMP / "mert"),
                        vit_path=str(COMP / "vit"), vivit_path=str(COMP / "vivit"), **kw)


@pytest.fixture(scope="module", params=sorted(RELEASES))
def loaded(request):
    name = request.param
    model, report = _load(REF / name / "checkpoint.pth")
    ref = json.loads((REF / name / "reference.json").read_text())
    tensors = load_file(str(REF / name / "reference.safetensors"))
    media = dict(np.load(REF / "media.npz"))
    return name, (model, report), ref, tensors, media


def _feats(model, kind: str, media: dict):
    return model.media_vector(MediaInput(**({} if kind == "text" else {kind: media[kind]})))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_release_detected_and_prompt_encoded_as_published(loaded):
    name, (model, report), ref, _, _ = loaded
    assert report.layout == RELEASES[name]
    assert report.decoder_kind == DECODERS[name] == model.cfg.decoder.kind
    assert model.cfg.chat_style == STYLES[name]
    assert model.tokenizer.encode(ref["prompt_text"], bos=True) == ref["prompt_ids"]
    instruction = ref["prompt_text"].split("### Instruction:\n")[1].split("\n\n###")[0]
    assert model.build_prompt(instruction, [], 24)[0] == ref["prompt_ids"]
    assert not report.gates_all_zero


@pytest.mark.parametrize("kind", ["text", "audio", "image", "video"])
def test_logits_projector_and_greedy_match_published(loaded, kind):
    name, (model, _), ref, tensors, media = loaded
    expected = ref["kinds"][kind]
    if not expected["supported"]:
        # The newer release's published video path raised (docs/MODEL.md section 7.5): ours
        # refuses it too.
        assert name == "mumu" and kind not in model.cfg.chat_style.modalities
        with pytest.raises(chat_style.UnsupportedModalityError, match="video"):
            model.chat("Describe it.", media=MediaInput(video=media["video"]))
        return
    feats = _feats(model, kind, media)
    forced = ref["teacher_forced_ids"]
    n_aud = len(model.tokenizer.aud_ids)
    assert forced[-n_aud:] == list(model.tokenizer.aud_ids)
    with torch.no_grad():
        logits = model.backbone(torch.tensor([forced]), modality_features=feats)[0, -6:]
        proj = model.music_condition(forced[:-n_aud], feats)[0]
    assert _rel(logits, tensors[f"{kind}.logits"]) < 1e-4
    assert proj.shape == tensors[f"{kind}.projector"].shape
    assert _rel(proj, tensors[f"{kind}.projector"]) < 1e-4
    assert answer_ids(model, ref["prompt_ids"], feats, 24) == expected["greedy_ids"]


def test_media_change_the_answer_when_gates_are_open(loaded):
    """Nonzero gates: every modality really reaches the logits (the reference would catch a
    dropped path)."""
    _, _, ref, tensors, _ = loaded
    kinds = [k for k, v in ref["kinds"].items() if v["supported"] and k != "text"]
    for kind in kinds:
        assert _rel(tensors[f"{kind}.logits"], tensors["text.logits"]) > 1e-3


def test_lora_on_the_adapter_token_would_not_match_published(loaded):
    """The compatibility values matter: LoRA on the adapter token changes the logits."""
    _, (model, _), ref, tensors, media = loaded
    feats = _feats(model, "image", media)
    tokens = torch.tensor([ref["teacher_forced_ids"]])
    try:
        for layer in model.backbone.layers:
            layer.attention.adapter_uses_lora = True
        with torch.no_grad():
            logits = model.backbone(tokens, modality_features=feats)[0, -6:]
    finally:
        for layer in model.backbone.layers:
            layer.attention.adapter_uses_lora = False
    assert _rel(logits, tensors["image.logits"]) > 1e-3


# ---------------------------------------------------------------------------------------------
# Bad input: one-line errors naming the file and the key


def _resave(tmp_path: Path, mutate, release: str = "m2ugen") -> Path:
    state, args = read_release(REF / release / "checkpoint.pth")
    state = {k: v.clone() for k, v in state.items()}
    blob = {"model": state, "optimizer": {}, "epoch": 0, "scaler": {},
            "args": argparse.Namespace(**args)}
    mutate(blob)
    out = tmp_path / "checkpoint.pth"
    torch.save(blob, out)
    return out


def test_unknown_layout(tmp_path):
    bad = _resave(tmp_path, lambda b: b["model"].pop("prefix_query.weight"))
    with pytest.raises(ReleaseFileError, match="unknown layout"):
        _load(bad)


def test_shape_mismatch_names_the_key(tmp_path):
    def grow(b):
        b["model"]["mu_mert_proj.bias"] = torch.zeros(7)

    with pytest.raises(ReleaseFileError, match="audio.proj.bias"):
        _load(_resave(tmp_path, grow))


def test_unknown_and_missing_keys_are_errors_unless_partial(tmp_path, caplog):
    def edit(b):
        b["model"]["mystery.weight"] = torch.zeros(2)
        b["model"].pop("llama.layers.1.attention.lora_wq_l1.weight")

    bad = _resave(tmp_path, edit)
    with pytest.raises(ReleaseFileError, match="mystery.weight"):
        _load(bad)
    with caplog.at_level(logging.WARNING, logger="llama.release.load"):
        _, report = _load(bad, allow_partial=True)
    assert report.missing == ["backbone.layers.1.attention.lora_wq_l1.weight"]
    assert "mystery.weight" in report.unused["unknown (allow_partial)"]
    assert any("missing" in r.message for r in caplog.records)


def test_zero_gates_warning(tmp_path, caplog):
    """The all-zero-gate warning the released files trigger."""
    def edit(b):
        for k in [k for k in b["model"] if k.endswith(".attention.gate")]:
            b["model"][k] = torch.zeros_like(b["model"][k])

    with caplog.at_level(logging.WARNING, logger="llama.release.load"):
        _, report = _load(_resave(tmp_path, edit))
    assert report.gates_all_zero
    assert any("gate is 0" in r.message for r in caplog.records)


def test_legacy_encoder_names_of_2023_files(tmp_path):
    """The releases were written by 2023 transformers (ViT/ViViT `encoder.layer.N.attention.
    attention.query`, ...): built from the file, they still reproduce the published logits."""
    from transformers import ViTConfig, ViTModel, VivitConfig, VivitModel
    from transformers.core_model_loading import revert_weight_conversion

    legacy = {"vit_model.": ViTModel(ViTConfig.from_pretrained(COMP / "vit")),
              "vivit_model.": VivitModel(VivitConfig.from_pretrained(COMP / "vivit"))}

    def to_legacy(blob):
        sd = blob["model"]
        for prefix, module in legacy.items():
            mine = {k[len(prefix):]: sd.pop(k) for k in [k for k in sd if k.startswith(prefix)]}
            sd.update({prefix + k: v for k, v in revert_weight_conversion(module, mine).items()})
        assert any(".attention.attention.query." in k for k in sd)

    model, _ = _load(_resave(tmp_path, to_legacy))
    ref = json.loads((REF / "m2ugen" / "reference.json").read_text())
    tensors = load_file(str(REF / "m2ugen" / "reference.safetensors"))
    media = dict(np.load(REF / "media.npz"))
    for kind in ("image", "video"):
        with torch.no_grad():
            logits = model.backbone(torch.tensor([ref["teacher_forced_ids"]]),
                                    modality_features=_feats(model, kind, media))[0, -6:]
        assert _rel(logits, tensors[f"{kind}.logits"]) < 1e-4
