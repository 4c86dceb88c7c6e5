"""The frozen encoders a release holds: their configurations read off the file's tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llama.release.components import mert_config, vision_config
from llama.release.read import read_release

REF = Path(__file__).resolve().parents[1] / "published_reference"
COMP = REF / "components"
RELEASES = ("m2ugen", "mumu", "m2ugen_audioldm2")


@pytest.mark.parametrize("release", RELEASES)
def test_encoder_configs_read_off_the_tensors(release):
    """Without a --*_path the encoders' sizes come from the file's tensors: they agree with the
    configs the reference was built with (heads excepted: 64-wide heads are assumed)."""
    from transformers import HubertConfig, ViTConfig, VivitConfig

    state, _ = read_release(REF / release / "checkpoint.pth")
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
