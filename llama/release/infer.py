"""The configuration a release's tensors show, with the published behaviour switched on.

Shapes come from the tensors (LLaMA width, depth, heads, vocabulary, LoRA rank, adapter layers;
projector depth and widths; encoder widths). What tensors cannot show is the published code's:
4 projector heads, the adapter token through the plain frozen `wv` (`adapter_uses_lora=False`),
the projector fed from pre-norm states at the positions predicting [AUD0..7], the release's music
pooling, and the release's chat style (`keymap.LAYOUTS`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from llama.config import (
    AUD_TOKENS,
    BridgeConfig,
    DecoderConfig,
    EncoderConfig,
    KnnConfig,
    LlamaConfig,
    M2UGenConfig,
    ProjectorConfig,
)
from llama.release.keymap import BRIDGES, LAYOUTS, Layout
from llama.release.read import ReleaseFileError

# Published defaults (gradio_app.py) when the file's args do not name a decoder.
PUBLISHED_DECODER_PATH = {"musicgen": "facebook/musicgen-small",
                          "audioldm2": "cvssp/audioldm2-music"}
PUBLISHED_ENCODER_PATH = {"mert": "m-a-p/MERT-v1-330M", "vit": "google/vit-base-patch16-224",
                          "vivit": "google/vivit-b-16x2-kinetics400"}
AUDIOLDM2_DIM = 128 * 1024 + 8 * 768  # AudioLDM2's conditioning, flattened into one token


def count_indexed(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    """How many distinct indices the regex `pattern` (one group) captures over the keys."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def detect_layout(state: Mapping[str, torch.Tensor], path: str = "checkpoint") -> Layout:
    """The first `keymap.LAYOUTS` row whose keys the file holds."""
    for layout in LAYOUTS:
        if all(k in state for k in layout.required) and (
                layout.marker is None or layout.marker in state):
            return layout
    fallback = LAYOUTS[-1]
    absent = next(k for k in fallback.required if k not in state)
    raise ReleaseFileError(f"{path}: unknown layout: no known release holds these keys "
                           f"(not {fallback.name}: no {absent!r})")


def backbone_config(state: Mapping[str, torch.Tensor], norm_eps: float = 1e-5,
                    max_seq_len: int = 1024) -> LlamaConfig:
    """The LLaMA shape and tuning knobs of a release, from its tensors."""
    emb = state["llama.tok_embeddings.weight"]
    gate = state["llama.layers.0.attention.gate"]
    n_prefix = state["prefix_query.weight"].shape[0]
    lora = state.get("llama.layers.0.attention.lora_wq_l1.weight")
    if n_prefix % 3:
        raise ReleaseFileError(f"prefix_query.weight has {n_prefix} rows, not 3 x layers")
    return LlamaConfig(
        dim=emb.shape[1], n_layers=count_indexed(state, r"^llama\.layers\.(\d+)\."),
        n_heads=gate.numel(), vocab_size=emb.shape[0] - len(AUD_TOKENS),
        ffn_hidden_dim=state["llama.layers.0.feed_forward.w1.weight"].shape[0],
        norm_eps=norm_eps, max_seq_len=max_seq_len,
        lora_rank=0 if lora is None else lora.shape[0],
        adapter_layers_per_modality=n_prefix // 3, adapter_uses_lora=False,
    )


def projector_config(state: Mapping[str, torch.Tensor]) -> ProjectorConfig:
    q = state["output_projector.query_embs"]
    return ProjectorConfig(
        d_model=q.shape[2], n_heads=4,  # published nn.Transformer(nhead=4); not in the shapes
        n_encoder_layers=count_indexed(state, r"^output_projector\.tfm\.encoder\.layers\.(\d+)\."),
        n_decoder_layers=count_indexed(state, r"^output_projector\.tfm\.decoder\.layers\.(\d+)\."),
        ffn_dim=state["output_projector.tfm.encoder.layers.0.linear1.weight"].shape[0],
        n_output_tokens=q.shape[1], output_dim=state["output_projector.model.weight"].shape[0],
        input="pre_norm_predicting",
    )


def bridge_config(state: Mapping[str, torch.Tensor], layout: Layout) -> BridgeConfig:
    newer = layout.name == "mumu-llama"
    return BridgeConfig(
        music_pooling="rnn-attention" if newer else "mean",
        bridge_norm="layer" if "mu_mert_norm_1.bias" in state else "rms",
        music_l2="frames" if newer else "pooled",
    )


def tokenizer_path(llama_dir: Optional[str], path: Path) -> str:
    """`tokenizer.model` under --llama_dir (the published layout), or the folder itself."""
    if llama_dir is None:
        raise ReleaseFileError(f"{path}: --llama_dir is needed for the tokenizer "
                               "(tokenizer.model or a Hugging Face tokenizer folder)")
    tok = Path(llama_dir) / "tokenizer.model"
    return str(tok) if tok.is_file() else str(llama_dir)


def release_config(state: Mapping[str, torch.Tensor], args: Mapping[str, Any], layout: Layout,
                   path: Path, *, llama_dir: Optional[str], paths: Mapping[str, Optional[str]],
                   music_decoder: Optional[str] = None, norm_eps: float = 1e-5) -> M2UGenConfig:
    """The M2UGenConfig of a release. `paths`: the mert/vit/vivit/music_decoder paths given on
    the command line (None: the published defaults; the file's own weights are used when no
    weights are given, see `llama.release.load`)."""
    proj = projector_config(state)
    kind = (music_decoder or args.get("music_decoder") or (
        "audioldm2" if proj.output_dim == AUDIOLDM2_DIM else "musicgen")).lower()
    dec_path = (paths.get("music_decoder") or args.get("music_decoder_path")
                or PUBLISHED_DECODER_PATH[kind])

    bridge = {modality: prefix for prefix, modality in BRIDGES.items()}  # audio: mu_mert, ...

    def encoder(part: str, modality: str, count: str) -> EncoderConfig:
        """Width from the bridge's projection, hidden states / tokens from its 1x1 mixing."""
        width = state[f"{bridge[modality]}_proj.weight"].shape[1]
        n = state[f"{bridge[modality]}_agg.weight"].shape[1]
        return EncoderConfig(path=paths.get(part) or PUBLISHED_ENCODER_PATH[part],
                             hidden_size=width, **{count: n})

    return M2UGenConfig(
        name=f"published-{layout.name}", llama=backbone_config(state, norm_eps=norm_eps),
        llama_path="tiny", tokenizer_path=tokenizer_path(llama_dir, path),
        mert=encoder("mert", "audio", "num_hidden_states"),
        vit=encoder("vit", "image", "num_tokens"),
        vivit=encoder("vivit", "video", "num_tokens"),
        bridges=bridge_config(state, layout), knn=KnnConfig(), projector=proj,
        decoder=DecoderConfig(kind=kind, path=dec_path, max_text_tokens=proj.n_output_tokens),
        chat_style=layout.style,
    )
