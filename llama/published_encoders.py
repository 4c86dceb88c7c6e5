"""Configurations of the frozen encoders a release file holds, read off its tensors.

When no `--mert_path/--vit_path/--vivit_path` is given, the encoders are built from the file's
weights. Every size their tensors show is taken from the tensors (widths, depths, convolution
channels and kernels, patch and tubelet sizes, image size and frame count from the position
table, whether convolutions have biases, which norms exist), so a wrong guess cannot go
unnoticed. What tensors cannot show comes from the published models (docs/MODEL.md section 8):
64-wide attention heads (MERT-v1-330M 16 x 64, ViT-B and ViViT-B 12 x 64), the feature
encoder strides (5, 2, 2, 2, 2, 2, 2), 224 x 224 video frames (the frame count then follows),
pre-norm ("stable") layers exactly when the feature
encoder uses layer norms (HuBERT-large and MERT-v1-330M; the base models use neither).

MERT runs through transformers' HuBERT classes: the parameter names are the same, and the
"attention relaxation" in MERT's remote code divides the attention logits by a constant,
subtracts each row's maximum and multiplies back, a shift that softmax ignores.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from llama.published import count_indexed

HEAD_DIM = 64
MERT_STRIDES = (5, 2, 2, 2, 2, 2, 2)
VIVIT_IMAGE_SIZE = 224


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of numbered sub-modules under `prefix` (e.g. "encoder.layers.")."""
    return count_indexed(state, "^" + re.escape(prefix) + r"(\d+)\.")


def _heads(width: int) -> int:
    return max(1, width // HEAD_DIM)


def mert_config(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """HubertConfig arguments for the MERT under `prefix` in `state`."""
    s = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    convs = _count(s, "feature_extractor.conv_layers.")
    conv = [s[f"feature_extractor.conv_layers.{i}.conv.weight"] for i in range(convs)]
    pos = s.get("encoder.pos_conv_embed.conv.weight_v",
                s.get("encoder.pos_conv_embed.conv.parametrizations.weight.original1"))
    width = int(s["encoder.layers.0.feed_forward.output_dense.weight"].shape[0])
    layer_norms = "feature_extractor.conv_layers.1.layer_norm.weight" in s
    return dict(
        hidden_size=width,
        num_hidden_layers=_count(s, "encoder.layers."),
        num_attention_heads=_heads(width),
        intermediate_size=int(s["encoder.layers.0.feed_forward.intermediate_dense.weight"]
                              .shape[0]),
        conv_dim=[int(w.shape[0]) for w in conv],
        conv_kernel=[int(w.shape[2]) for w in conv],
        conv_stride=list(MERT_STRIDES[:convs]) + [2] * max(0, convs - len(MERT_STRIDES)),
        conv_bias="feature_extractor.conv_layers.0.conv.bias" in s,
        feat_extract_norm="layer" if layer_norms else "group",
        do_stable_layer_norm=layer_norms,
        feat_proj_layer_norm="feature_projection.layer_norm.weight" in s,
        num_conv_pos_embeddings=int(pos.shape[2]),
        num_conv_pos_embedding_groups=width // int(pos.shape[1]),
    )


def vision_config(state: Mapping[str, torch.Tensor], prefix: str, video: bool,
                  video_image_size: int = VIVIT_IMAGE_SIZE) -> dict[str, Any]:
    """ViTConfig / VivitConfig arguments for the image or video transformer under `prefix`.

    An image model's size follows from its square patch grid. A video model's position table
    counts (frames / t) x grid cells, which fixes the frame count only for a known frame size:
    `video_image_size` (the published 224)."""
    s = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    patch = s["embeddings.patch_embeddings.projection.weight"]
    width = int(patch.shape[0])
    positions = int(s["embeddings.position_embeddings"].shape[1]) - 1  # minus the CLS row
    fc1 = next(v for k, v in s.items() if k.endswith(("mlp.fc1.weight",
                                                      "intermediate.dense.weight")))
    out: dict[str, Any] = dict(
        hidden_size=width,
        num_hidden_layers=_count(s, "layers.") or _count(s, "encoder.layer."),
        num_attention_heads=_heads(width),
        intermediate_size=int(fc1.shape[0]),
    )
    if video:
        t, ph, pw = (int(d) for d in patch.shape[2:])
        cells = (video_image_size // ph) * (video_image_size // pw)
        if positions % cells:
            raise ValueError(f"{prefix}embeddings.position_embeddings: {positions} tubelets do "
                             f"not fit {video_image_size} x {video_image_size} frames (give "
                             "--vivit_path with its config)")
        out.update(tubelet_size=[t, ph, pw], image_size=video_image_size,
                   num_frames=t * positions // cells)
    else:
        side = int(round(positions ** 0.5))
        if side * side != positions:
            raise ValueError(f"{prefix}embeddings.position_embeddings: {positions} patches are "
                             "not a square grid")
        out.update(patch_size=int(patch.shape[2]), image_size=side * int(patch.shape[2]))
    return out
