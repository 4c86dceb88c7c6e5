"""Music decoders (MusicGen via transformers, AudioLDM2 via diffusers) seen from M2UGen.

One module per decoder family (`musicgen`, `audioldm2`) over a shared API (`base.MusicDecoder`:
`targets` for stage-2 training, `synthesize` / `synthesize_from_text` for inference);
`tiny` builds small random-weight decoders with the real classes. `load_decoder` picks the
family and source (hub id, local folder, or a tiny preset) from a `DecoderConfig`.
"""

from __future__ import annotations

import dataclasses

import torch

from llama.config import DecoderConfig, ProjectorConfig
from llama.decoders.audioldm2 import AudioLDM2Decoder, load_audioldm2
from llama.decoders.base import (
    SCHEDULER_DEFAULT_STEPS,
    SCHEDULERS,
    DecoderLoadError,
    MusicDecoder,
    TargetCache,
    clean_decoder_text,
    infer_padding_mask,
    pad_states,
)
from llama.decoders.musicgen import MusicGenDecoder, load_musicgen
from llama.decoders.tiny import (
    TINY_DECODER_SEED,
    build_tiny_audioldm2,
    build_tiny_musicgen,
    tiny_roberta_tokenizer,
    tiny_t5_tokenizer,
)

__all__ = [
    "SCHEDULERS",
    "SCHEDULER_DEFAULT_STEPS",
    "TINY_DECODER_SEED",
    "AudioLDM2Decoder",
    "DecoderLoadError",
    "MusicDecoder",
    "MusicGenDecoder",
    "TargetCache",
    "build_tiny_audioldm2",
    "build_tiny_musicgen",
    "clean_decoder_text",
    "infer_padding_mask",
    "load_decoder",
    "pad_states",
    "projector_config_for",
    "tiny_roberta_tokenizer",
    "tiny_t5_tokenizer",
]


def load_decoder(
    cfg: DecoderConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> MusicDecoder:
    """A frozen MusicGen / AudioLDM2 decoder from a hub id, a local folder or a tiny preset."""
    device = torch.device(device)
    if cfg.max_text_tokens < 1:
        raise ValueError(f"DecoderConfig.max_text_tokens must be >= 1, got {cfg.max_text_tokens}")
    if cfg.kind == "musicgen":
        if cfg.path == "tiny-audioldm2":
            raise ValueError("DecoderConfig: path 'tiny-audioldm2' needs kind 'audioldm2'")
        if cfg.path == "tiny":
            model, tokenizer = build_tiny_musicgen(cfg.max_text_tokens)
        else:
            model, tokenizer = load_musicgen(cfg, dtype)
        return MusicGenDecoder(cfg, model, tokenizer, device, dtype,
                               missing_tokenizer=f"no tokenizer files in {cfg.path}")
    if cfg.kind == "audioldm2":
        if cfg.path in ("tiny", "tiny-audioldm2"):
            pipe = build_tiny_audioldm2(cfg.max_text_tokens)
            if dtype != torch.float32:
                pipe = pipe.to(dtype=dtype)
        else:
            pipe = load_audioldm2(cfg, dtype)
        return AudioLDM2Decoder(cfg, pipe, device, dtype)
    raise ValueError(f"DecoderConfig.kind must be 'musicgen' or 'audioldm2', got {cfg.kind!r}")


def projector_config_for(decoder: MusicDecoder, base_cfg: ProjectorConfig) -> ProjectorConfig:
    """The projector config with N x D taken from the loaded decoder's conditioning shape."""
    n, d = decoder.condition_shape
    return dataclasses.replace(base_cfg, n_output_tokens=n, output_dim=d)
