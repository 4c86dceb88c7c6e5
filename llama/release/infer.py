"""The configuration a release's tensors show, with the published behaviour switched on.

Shapes come from the tensors (LLaMA width, depth, heads, vocabulary, LoRA rank, adapter layers;
projector depth and widths; encoder widths). What tensors cannot show is the published code's:
4 projector heads, the adapter token through the plain frozen `wv` (`adapter_uses_lora=False`),
the projector fed from pre-norm states at the positions predicting [AUD0..7], the release's music
pooling, and the release's chat style (`keymap.LAYOUTS`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from llama.config import (
    AUD_TOKENS,
    MODALITIES,
    BridgeConfig,
    DecoderConfig,
    EncoderConfig,
    KnnConfig,
    LlamaConfig,
    M2UGenConfig,
    ProjectorConfig,
    vit_b16,
    vivit_b,
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
        if layout.matches(state):
            return layout
    # the closest layout the file is not ruled out of, for the message
    candidates = [lay for lay in LAYOUTS if not lay.excludes
                  or not any(k.startswith(lay.excludes) for k in state)]
    fallback = max(candidates, key=lambda lay: sum(k in state for k in lay.required))
    absent = next((k for k in fallback.required if k not in state), fallback.marker)
    raise ReleaseFileError(f"{path}: unknown layout: no known release holds these keys "
                           f"(not {fallback.name}: no {absent!r})")


def backbone_config(state: Mapping[str, torch.Tensor], norm_eps: float = 1e-5,
                    max_seq_len: int = 1024, modalities: tuple[str, ...] = MODALITIES,
                    new_rows: int = len(AUD_TOKENS)) -> LlamaConfig:
    """The LLaMA shape and tuning knobs of a release, from its tensors. `modalities`: whose
    features the adapter layers take, one group of prefix rows each (MU-LLaMA: audio only);
    `new_rows`: vocabulary rows past the base vocabulary ([AUD0..7]; MU-LLaMA: none)."""
    emb = state["llama.tok_embeddings.weight"]
    gate = state["llama.layers.0.attention.gate"]
    n_prefix = state["prefix_query.weight"].shape[0]
    lora = state.get("llama.layers.0.attention.lora_wq_l1.weight")
    n_layers = count_indexed(state, r"^llama\.layers\.(\d+)\.")
    per = n_prefix // len(modalities)
    if len(modalities) == 1 and n_prefix > n_layers:
        # MU-LLaMA's `layers[-query_layer:]` is every layer when query_layer exceeds the depth;
        # its loop used the first prefix rows only (`trim_prefix` drops the rest)
        per = n_layers
    elif n_prefix % len(modalities) or n_prefix > n_layers:
        raise ReleaseFileError(f"prefix_query.weight has {n_prefix} rows, not "
                               f"{len(modalities)} x adapter layers of the {n_layers} layers")
    return LlamaConfig(
        dim=emb.shape[1], n_layers=n_layers,
        n_heads=gate.numel(), vocab_size=emb.shape[0] - new_rows,
        ffn_hidden_dim=state["llama.layers.0.feed_forward.w1.weight"].shape[0],
        norm_eps=norm_eps, max_seq_len=max_seq_len,
        lora_rank=0 if lora is None else lora.shape[0],
        adapter_layers_per_modality=per, modalities=modalities,
        adapter_uses_lora=False,
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
    inner = state["mu_mert_f1_1.weight"].shape[0] if "mu_mert_f1_1.weight" in state else None
    dim = state["llama.tok_embeddings.weight"].shape[1]
    return BridgeConfig(
        music_pooling="rnn-attention" if newer else "mean",
        bridge_norm="layer" if "mu_mert_norm_1.bias" in state else "rms",
        music_l2="frames" if newer else "pooled",
        block_hidden_dim=inner if inner not in (None, dim) else None,  # MU-LLaMA: 4 x dim
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
    if not layout.style.music_output:
        return understanding_config(state, layout, path, llama_dir=llama_dir, paths=paths,
                                    music_decoder=music_decoder, norm_eps=norm_eps)
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


# What the published MU-LLaMA ran with: `ModelArgs(max_seq_len=8192)`, and its inference.py's
# kNN settings (cache size 100, cache temperature 20, cache weight 0: the CLI mixed nothing in;
# the published captioning step used 0.3, see DataSet.music_captioner).
MU_LLAMA_MAX_SEQ_LEN = 8192
MU_LLAMA_KNN = KnnConfig(cache_size=100, cache_t=20.0, cache_weight=0.0)


def understanding_config(state: Mapping[str, torch.Tensor], layout: Layout, path: Path, *,
                         llama_dir: Optional[str], paths: Mapping[str, Optional[str]],
                         music_decoder: Optional[str] = None, norm_eps: float = 1e-5
                         ) -> M2UGenConfig:
    """The M2UGenConfig of an understanding-only release (MU-LLaMA): music in, text out. The
    image / video bridges and the projector exist in our model but stay zero (`Layout.absent`);
    the chat style refuses image, video and music output."""
    if music_decoder or paths.get("music_decoder"):
        raise ReleaseFileError(f"{path}: a {layout.name} release makes no music (understanding "
                               "only): --music_decoder / --music_decoder_path do not apply")
    modalities = tuple(m for m in MODALITIES if m in layout.style.modalities)
    mert = EncoderConfig(path=paths.get("mert") or PUBLISHED_ENCODER_PATH["mert"],
                         hidden_size=state["mu_mert_proj.weight"].shape[1],
                         num_hidden_states=state["mu_mert_agg.weight"].shape[1])
    return M2UGenConfig(
        name=f"published-{layout.name}",
        llama=backbone_config(state, norm_eps=norm_eps, max_seq_len=MU_LLAMA_MAX_SEQ_LEN,
                              modalities=modalities, new_rows=0),
        llama_path="tiny", tokenizer_path=tokenizer_path(llama_dir, path), mert=mert,
        vit=vit_b16(), vivit=vivit_b(), bridges=bridge_config(state, layout),
        knn=dataclasses.replace(MU_LLAMA_KNN), projector=ProjectorConfig(),
        decoder=DecoderConfig(), chat_style=layout.style,
    )
