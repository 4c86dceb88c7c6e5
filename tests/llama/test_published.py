"""Imported release files reproduce the published forward (see published_reference/README.md).

The reference tensors were produced by the published model code itself (run at tiny size outside
this repository); nothing here shares code with that run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llama.m2ugen import MediaInput
from llama.published import (
    PublishedCheckpointError,
    generate_published,
    load_published_model,
    project_published,
    read_published,
)

REF = Path(__file__).parent / "published_reference"
COMP = REF / "components"
RELEASES = {"m2ugen": "m2ugen", "mumu": "mumu-llama", "m2ugen_audioldm2": "m2ugen"}
DECODERS = {"m2ugen": "musicgen", "mumu": "musicgen", "m2ugen_audioldm2": "audioldm2"}


def _load(ckpt: Path, **kw):
    return load_published_model(ckpt, llama_dir=str(COMP), mert_path=str(COMP / "mert"),
                                vit_path=str(COMP / "vit"), vivit_path=str(COMP / "vivit"), **kw)


@pytest.fixture(scope="module", params=sorted(RELEASES))
def loaded(request):
    name = request.param
    model = _load(REF / name / "checkpoint.pth")
    ref = json.loads((REF / name / "reference.json").read_text())
    tensors = load_file(str(REF / name / "reference.safetensors"))
    media = dict(np.load(REF / "media.npz"))
    return name, model, ref, tensors, media


def _feats(model, kind: str, media: dict):
    return model.media_vector(MediaInput(**({} if kind == "text" else {kind: media[kind]})))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_release_detected_and_prompt_encoded_as_published(loaded):
    name, model, ref, _, _ = loaded
    assert model.published.release == RELEASES[name]
    assert model.published.decoder_kind == DECODERS[name] == model.cfg.decoder.kind
    assert model.tokenizer.encode(ref["prompt_text"], bos=True) == ref["prompt_ids"]
    assert not model.published.gates_all_zero


@pytest.mark.parametrize("kind", ["text", "audio", "image", "video"])
def test_logits_projector_and_greedy_match_published(loaded, kind):
    name, model, ref, tensors, media = loaded
    expected = ref["kinds"][kind]
    if not expected["supported"]:
        # The newer release's published video path raised (docs/MODEL.md section 7.5): ours
        # refuses it too.
        assert name == "mumu" and kind in model.published.unsupported_modalities
        return
    feats = _feats(model, kind, media)
    forced = ref["teacher_forced_ids"]
    with torch.no_grad():
        logits = model.backbone(torch.tensor([forced]), modality_features=feats)[0, -6:]
        proj = project_published(model, forced, feats)[0]
    assert _rel(logits, tensors[f"{kind}.logits"]) < 1e-4
    assert proj.shape == tensors[f"{kind}.projector"].shape
    assert _rel(proj, tensors[f"{kind}.projector"]) < 1e-4
    assert generate_published(model, ref["prompt_ids"], feats, 24,
                              model.published.release) == expected["greedy_ids"]


def test_media_change_the_answer_when_gates_are_open(loaded):
    """Nonzero gates: every modality really reaches the logits (the reference would catch a
    dropped path)."""
    _, model, ref, tensors, _ = loaded
    kinds = [k for k, v in ref["kinds"].items() if v["supported"] and k != "text"]
    for kind in kinds:
        assert _rel(tensors[f"{kind}.logits"], tensors["text.logits"]) > 1e-3


def test_lora_on_the_adapter_token_would_not_match_published(loaded):
    """The compatibility values matter: LoRA on the adapter token changes the logits."""
    _, model, ref, tensors, media = loaded
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
# Bad input: one-line errors naming the file, nothing executed


def _resave(tmp_path: Path, mutate, release: str = "m2ugen") -> Path:
    state, args = read_published(REF / release / "checkpoint.pth")
    state = {k: v.clone() for k, v in state.items()}
    blob = {"model": state, "optimizer": {}, "epoch": 0, "scaler": {},
            "args": argparse.Namespace(**args)}
    mutate(blob)
    out = tmp_path / "checkpoint.pth"
    torch.save(blob, out)
    return out


def test_truncated_file(tmp_path):
    data = (REF / "m2ugen" / "checkpoint.pth").read_bytes()
    bad = tmp_path / "checkpoint.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(PublishedCheckpointError, match=str(bad)):
        read_published(bad)


def test_dict_without_model(tmp_path):
    bad = tmp_path / "checkpoint.pth"
    torch.save({"weights": {}}, bad)
    with pytest.raises(PublishedCheckpointError, match="'model'"):
        read_published(bad)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_global_outside_allow_list_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    bad = tmp_path / "checkpoint.pth"
    torch.save({"model": {}, "args": evil}, bad, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(PublishedCheckpointError, match="allow-list") as err:
        read_published(bad)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_unknown_layout(tmp_path):
    bad = _resave(tmp_path, lambda b: b["model"].pop("prefix_query.weight"))
    with pytest.raises(PublishedCheckpointError, match="unknown layout"):
        _load(bad)


def test_shape_mismatch_names_the_key(tmp_path):
    def grow(b):
        b["model"]["mu_mert_proj.bias"] = torch.zeros(7)

    with pytest.raises(PublishedCheckpointError, match="audio.proj.bias"):
        _load(_resave(tmp_path, grow))


def test_unknown_and_missing_keys_are_errors_unless_partial(tmp_path, caplog):
    def edit(b):
        b["model"]["mystery.weight"] = torch.zeros(2)
        b["model"].pop("llama.layers.1.attention.lora_wq_l1.weight")

    bad = _resave(tmp_path, edit)
    with pytest.raises(PublishedCheckpointError, match="mystery.weight"):
        _load(bad)
    with caplog.at_level(logging.WARNING, logger="llama.published"):
        model = _load(bad, allow_partial=True)
    assert model.published.missing == ["backbone.layers.1.attention.lora_wq_l1.weight"]
    assert "mystery.weight" in model.published.unused["unknown (allow_partial)"]
    assert any("missing" in r.message for r in caplog.records)


def test_old_names_and_zero_gates_warning(tmp_path, caplog):
    """iu_vit_rnn -> iu_vivit_rnn renaming, weight_g/_v MERT keys, and the all-zero-gate
    warning the released files trigger."""
    def edit(b):
        for k in [k for k in b["model"] if k.endswith(".attention.gate")]:
            b["model"][k] = torch.zeros_like(b["model"][k])

    with caplog.at_level(logging.WARNING, logger="llama.published"):
        model = _load(_resave(tmp_path, edit))
    assert model.published.gates_all_zero
    assert any("gate is 0" in r.message for r in caplog.records)


def test_older_vivit_rnn_names_are_renamed(tmp_path):
    def rename(b):
        for k in [k for k in b["model"] if k.startswith("iu_vivit_rnn.")]:
            b["model"][k.replace("iu_vivit_rnn", "iu_vit_rnn")] = b["model"].pop(k)

    state, _ = read_published(_resave(tmp_path, rename, release="mumu"))
    assert "iu_vivit_rnn.weight_ih_l0" in state and "iu_vit_rnn.weight_ih_l0" not in state


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

    model = _load(_resave(tmp_path, to_legacy))
    ref = json.loads((REF / "m2ugen" / "reference.json").read_text())
    tensors = load_file(str(REF / "m2ugen" / "reference.safetensors"))
    media = dict(np.load(REF / "media.npz"))
    for kind in ("image", "video"):
        with torch.no_grad():
            logits = model.backbone(torch.tensor([ref["teacher_forced_ids"]]),
                                    modality_features=_feats(model, kind, media))[0, -6:]
        assert _rel(logits, tensors[f"{kind}.logits"]) < 1e-4


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_encoder_configs_read_off_the_tensors(release):
    """Without a --*_path the encoders' sizes come from the file's tensors: they agree with the
    configs the reference was built with (heads excepted: 64-wide heads are assumed)."""
    from transformers import HubertConfig, ViTConfig, VivitConfig

    from llama.published_encoders import mert_config, vision_config

    state, _ = read_published(REF / release / "checkpoint.pth")
    built = {"audio": (HubertConfig.from_pretrained(COMP / "mert"), mert_config(state,
                                                                               "mert_model.")),
             "image": (ViTConfig.from_pretrained(COMP / "vit"), vision_config(
                 state, "vit_model.", video=False)),
             "video": (VivitConfig.from_pretrained(COMP / "vivit"), vision_config(
                 state, "vivit_model.", video=True, video_image_size=16))}
    for modality, (truth, derived) in built.items():
        for field, value in derived.items():
            if field == "num_attention_heads":
                continue
            want = getattr(truth, field)
            assert (list(want) if isinstance(want, tuple) else want) == value, (modality, field)


def test_published_encoder_sizes_round_trip():
    """At the published sizes (meta tensors) the read-off configs are the published ones."""
    from transformers import HubertConfig, HubertModel, ViTConfig, ViTModel, VivitConfig, VivitModel

    from llama.published_encoders import mert_config, vision_config

    published = {
        "audio": HubertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                              intermediate_size=4096, feat_extract_norm="layer",
                              do_stable_layer_norm=True, conv_bias=True,
                              num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16),
        "image": ViTConfig(image_size=224, patch_size=16),
        "video": VivitConfig(image_size=224, num_frames=32, tubelet_size=[2, 16, 16]),
    }
    with torch.device("meta"):
        models = {"audio": HubertModel(published["audio"]), "image": ViTModel(published["image"]),
                  "video": VivitModel(published["video"])}
    for modality, model in models.items():
        state = {f"p.{k}": v for k, v in model.state_dict().items()}
        derived = (mert_config(state, "p.") if modality == "audio" else
                   vision_config(state, "p.", video=modality == "video"))
        for field, value in derived.items():
            want = getattr(published[modality], field)
            assert (list(want) if isinstance(want, tuple) else want) == value, (modality, field)
