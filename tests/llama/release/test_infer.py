"""The configuration a release's tensors show, with the published behaviour switched on."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama import chat_style
from llama.release.infer import detect_layout, release_config
from llama.release.read import ReleaseFileError, read_release

REF = Path(__file__).resolve().parents[1] / "published_reference"
COMP = REF / "components"


@pytest.mark.parametrize("name, layout, pooling, l2, decoder, style", [
    ("m2ugen", "m2ugen", "mean", "pooled", "musicgen", chat_style.PUBLISHED_M2UGEN),
    ("mumu", "mumu-llama", "rnn-attention", "frames", "musicgen",
     chat_style.PUBLISHED_MUMU_LLAMA),
    ("m2ugen_audioldm2", "m2ugen", "mean", "pooled", "audioldm2", chat_style.PUBLISHED_M2UGEN),
])
def test_release_config(name, layout, pooling, l2, decoder, style):
    path = REF / name / "checkpoint.pth"
    state, args = read_release(path)
    found = detect_layout(state, str(path))
    assert found.name == layout
    cfg = release_config(state, args, found, path, llama_dir=str(COMP),
                         paths={"vit": "/x/vit"})
    # The reference's tiny LLaMA (published_reference/README.md step 3) and LoRA rank.
    assert (cfg.llama.dim, cfg.llama.n_layers, cfg.llama.n_heads) == (32, 4, 4)
    assert cfg.llama.lora_rank == 4 and cfg.llama.adapter_layers_per_modality == 1
    assert cfg.llama.adapter_uses_lora is False
    assert cfg.projector.input == "pre_norm_predicting" and cfg.projector.n_heads == 4
    assert (cfg.bridges.music_pooling, cfg.bridges.music_l2) == (pooling, l2)
    assert cfg.decoder.kind == decoder and cfg.chat_style == style
    assert cfg.vit.path == "/x/vit" and cfg.mert.path == "m-a-p/MERT-v1-330M"
    assert cfg.tokenizer_path == str(COMP / "tokenizer.model")


def test_unknown_layout_names_the_missing_key():
    state, _ = read_release(REF / "m2ugen" / "checkpoint.pth")
    state = {k: v for k, v in state.items() if not k.startswith("output_projector.")}
    with pytest.raises(ReleaseFileError, match="unknown layout.*output_projector.fc.weight"):
        detect_layout(state, "x.pth")
