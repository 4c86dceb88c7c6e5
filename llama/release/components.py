"""The frozen transformers components a release file holds (MERT, ViT, ViViT; MusicGen's filling).

When no `--mert_path/--vit_path/--vivit_path` with weights is given, the encoders are built from
the file's weights. Every size their tensors show is taken from the tensors (widths, depths,
convolution channels and kernels, patch and tubelet sizes, image size and frame count from the
position table, whether convolutions have biases, which norms exist), so a wrong guess cannot go
unnoticed. What tensors cannot show comes from the published models (docs/MODEL.md section 8):
64-wide attention heads (MERT-v1-330M 16 x 64, ViT-B and ViViT-B 12 x 64), the feature encoder
strides (5, 2, 2, 2, 2, 2, 2), 224 x 224 video frames (the frame count then follows), pre-norm
("stable") layers exactly when the feature encoder uses layer norms (HuBERT-large and
MERT-v1-330M; the base models use neither).

MERT runs through transformers' HuBERT classes: the parameter names are the same, and the
"attention relaxation" in MERT's remote code divides the attention logits by a constant,
subtracts each row's maximum and multiplies back, a shift that softmax ignores.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from llama.config import EncoderConfig
from llama.release.infer import count_indexed
from llama.release.keymap import COMPONENTS
from llama.release.read import ReleaseFileError

HEAD_DIM = 64
MERT_STRIDES = (5, 2, 2, 2, 2, 2, 2)
VIVIT_IMAGE_SIZE = 224
PART = {"audio": "mert", "image": "vit", "video": "vivit"}  # M2UGenConfig field
PREFIX = {m: prefix for prefix, m in COMPONENTS.items() if m in PART}  # e.g. audio: mert_model.


def has_weights(path: str) -> bool:
    """A folder holding weights, or a hub id (its weights come from the hub cache)."""
    p = Path(path)
    if not p.is_dir():
        return True
    return any(p.glob("*.safetensors")) or any(p.glob("pytorch_model*.bin"))


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


def fill_component(model: torch.nn.Module, prefix: str, state: Mapping[str, torch.Tensor],
                   path: str, dtype: torch.dtype) -> list[str]:
    """Fill a meta-built frozen transformers component with the file's tensors under `prefix`,
    cast to `dtype`; returns the keys under `prefix` it has no use for. Every tensor the model
    stores must be there, with its shape.

    Older parameter names (`keymap.COMPONENT_LEGACY`) are renamed by transformers' own checkpoint
    conversion mapping, as its `from_pretrained` does."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, rename_source_key

    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if not isinstance(t, WeightConverter)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    wanted = model.state_dict()
    out, unused = {}, []
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name not in wanted:
            name, converted = rename_source_key(name, renamings, converters)
            if converted is not None:
                raise ReleaseFileError(f"{path}: {key} needs a tensor conversion "
                                       f"({converted}) this loader does not apply")
        if name not in wanted:
            unused.append(key)
            continue
        if tuple(value.shape) != tuple(wanted[name].shape):
            raise ReleaseFileError(
                f"{path}: {prefix}{name} has shape {tuple(value.shape)}, the config expects "
                f"{tuple(wanted[name].shape)} (give the matching --*_path with the right config)")
        out[name] = value
    missing = sorted(set(wanted) - set(out))
    if missing:
        raise ReleaseFileError(f"{path}: {prefix}* lacks {missing[:3]} (give a folder "
                               f"with weights via the matching --*_path)")
    model.load_state_dict({k: v.to(dtype) for k, v in out.items()}, strict=True, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ReleaseFileError(f"{path}: {prefix}* gives no value for {left[:3]}")
    return unused


def _empty_encoder(modality: str, config_dir: Optional[str], state: Mapping[str, torch.Tensor]):
    """The transformers encoder for `modality` (to be built on meta): its config from
    `config_dir`, else read off the file's tensors."""
    from transformers import HubertConfig, HubertModel, ViTConfig, ViTModel, VivitConfig, VivitModel

    klass, cfg_cls = {"audio": (HubertModel, HubertConfig), "image": (ViTModel, ViTConfig),
                      "video": (VivitModel, VivitConfig)}[modality]
    if config_dir is not None:
        config = cfg_cls.from_pretrained(config_dir)
    else:
        prefix = PREFIX[modality]
        config = cfg_cls(**(mert_config(state, prefix) if modality == "audio" else
                            vision_config(state, prefix, video=modality == "video")))
    if modality == "audio":
        return klass(config)
    return klass(config, add_pooling_layer=False)


def _processor(modality: str, mc: Any, config_dir: Optional[str], sample_rate: int) -> Any:
    """The folder's preprocessor, else the published model's (built from the config)."""
    from transformers import VivitImageProcessor, ViTImageProcessorPil, Wav2Vec2FeatureExtractor

    klass = {"audio": Wav2Vec2FeatureExtractor, "image": ViTImageProcessorPil,
             "video": VivitImageProcessor}[modality]
    if config_dir is not None and (Path(config_dir) / "preprocessor_config.json").is_file():
        return klass.from_pretrained(config_dir)
    if modality == "audio":
        return klass(feature_size=1, sampling_rate=sample_rate, padding_value=0.0,
                     do_normalize=True, return_attention_mask=True)
    if modality == "image":
        return klass(size={"height": mc.image_size, "width": mc.image_size},
                     image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return klass()  # the defaults are google/vivit-b-16x2-kinetics400's


def build_encoder(modality: str, enc_cfg: EncoderConfig, config_dir: Optional[str],
                  state: Mapping[str, torch.Tensor], path: str, dtype: torch.dtype):
    """A frozen encoder wrapper whose weights come from the release file; (encoder, cfg, unused)."""
    from llama import encoders

    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        model = _empty_encoder(modality, config_dir, state)
    unused = fill_component(model, PREFIX[modality], state, path, dtype)
    mc = model.config
    label = config_dir or f"published {modality} encoder"
    if modality == "audio":
        cfg = replace(enc_cfg, path=label, hidden_size=mc.hidden_size,
                      num_hidden_states=mc.num_hidden_layers + 1)
        wrapper = encoders.MusicEncoder
    elif modality == "image":
        n = (mc.image_size // mc.patch_size) ** 2 + 1
        cfg = replace(enc_cfg, path=label, hidden_size=mc.hidden_size, num_tokens=n,
                      image_size=mc.image_size)
        wrapper = encoders.ImageEncoder
    else:
        t, ph, pw = mc.tubelet_size
        n = (mc.num_frames // t) * (mc.image_size // ph) * (mc.image_size // pw) + 1
        cfg = replace(enc_cfg, path=label, hidden_size=mc.hidden_size, num_tokens=n,
                      image_size=mc.image_size, num_frames=mc.num_frames)
        wrapper = encoders.VideoEncoder
    proc = _processor(modality, mc, config_dir, cfg.sample_rate)
    return wrapper(cfg, encoders._freeze(model), proc, dtype), cfg, unused
