"""ImageBind's vision and audio towers in plain torch, with the reference state-dict names.

Facts of the architecture (facebookresearch/ImageBind, `imagebind_huge`):
- vision: a 3D patch embedding (Conv3d, kernel = stride = (2, 14, 14), no bias) over 2-frame
  clips (an image is repeated to 2 frames), a CLS token, a learnt position table, a LayerNorm
  before the blocks, pre-norm blocks (LayerNorm eps 1e-6, torch MultiheadAttention, 4x GELU
  MLP), then LayerNorm -> CLS token -> bias-free projection -> L2 normalisation;
- audio: Conv2d patches (kernel 16, stride 10, no bias) of a (1, 128, 204) log-mel image, a
  LayerNorm (eps 1e-5) on the patch tokens, CLS + learnt positions, blocks whose attention has
  learnt key/value bias tokens, the same head, L2 normalisation times a fixed logit scale
  (exp(log_logit_scale), clipped at 100);
- inputs with several clips/views (B, S, ...) are embedded per clip and the S outputs averaged.
Only the two towers relevance needs are built; `config.checkpoint_shapes` names the rest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from Evaluation.imagebind.config import ImageBindConfig

LN_EPS = 1e-6
MAX_LOGIT_SCALE = 100.0


class _Mlp(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    """Pre-norm transformer block (no layer scale; drop-path is identity at inference)."""

    def __init__(self, d: int, heads: int, bias_kv: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, bias=True, add_bias_kv=bias_kv,
                                          batch_first=True)
        self.norm_1 = nn.LayerNorm(d, eps=LN_EPS)
        self.mlp = _Mlp(d)
        self.norm_2 = nn.LayerNorm(d, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm_2(x))


class _Trunk(nn.Module):
    def __init__(self, d: int, layers: int, heads: int, *, pre_ln: bool, bias_kv: bool) -> None:
        super().__init__()
        if pre_ln:
            self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(d, eps=LN_EPS))
        self.blocks = nn.ModuleList(_Block(d, heads, bias_kv) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "pre_transformer_layer"):
            x = self.pre_transformer_layer(x)
        for block in self.blocks:
            x = block(x)
        return x


class _Stem(nn.Module):
    """Patch projection (`proj`), optionally followed by a LayerNorm over the tokens."""

    def __init__(self, proj: nn.Module, norm: nn.Module | None) -> None:
        super().__init__()
        self.proj = proj
        if norm is not None:
            self.norm_layer = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)  # (B, C, *grid) -> (B, tokens, C)
        return self.norm_layer(x) if hasattr(self, "norm_layer") else x


class _PosTable(nn.Module):
    def __init__(self, tokens: int, d: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, d))


class _Tokens(nn.Module):
    """Patch tokens with a CLS token in front, plus learnt positions (fixed input size)."""

    def __init__(self, stem: _Stem, tokens: int, d: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.rgbt_stem = stem
        self.pos_embedding_helper = _PosTable(tokens, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.rgbt_stem(x)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        pos = self.pos_embedding_helper.pos_embed
        if t.shape[1] != pos.shape[1]:
            raise ValueError(f"input gives {t.shape[1]} tokens, the position table holds "
                             f"{pos.shape[1]}: inputs must have the preprocessing's fixed size")
        return t + pos


class _Frames(nn.Module):
    """Index 0 of the vision stem: images become 2-frame clips by repetition (no parameters)."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.shape[2] == 1:
            x = x.repeat(1, 1, self.frames, 1, 1)
        return x


class _SelectCls(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


class _LogitScale(nn.Module):
    def __init__(self, init: float) -> None:
        super().__init__()
        self.register_buffer("log_logit_scale", torch.tensor(float(init)).log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clip(self.log_logit_scale.exp(), max=MAX_LOGIT_SCALE) * x


class _Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, p=2)


def _head(d: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(d, eps=LN_EPS), _SelectCls(), nn.Linear(d, out, bias=False))


class ImageBindVisionAudio(nn.Module):
    """The vision and audio towers; `state_dict()` names match the reference checkpoint."""

    def __init__(self, cfg: ImageBindConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k3 = (cfg.video_frames, cfg.patch, cfg.patch)
        vision_stem = _Stem(nn.Sequential(_Frames(cfg.video_frames), nn.Conv3d(
            3, cfg.vision_dim, kernel_size=k3, stride=k3, bias=False)), None)
        audio_stem = _Stem(nn.Conv2d(1, cfg.audio_dim, cfg.audio_kernel, cfg.audio_stride,
                                     bias=False), nn.LayerNorm(cfg.audio_dim))
        self.modality_preprocessors = nn.ModuleDict({
            "vision": _Tokens(vision_stem, cfg.vision_tokens, cfg.vision_dim),
            "audio": _Tokens(audio_stem, cfg.audio_tokens, cfg.audio_dim)})
        self.modality_trunks = nn.ModuleDict({
            "vision": _Trunk(cfg.vision_dim, cfg.vision_layers, cfg.vision_heads, pre_ln=True,
                             bias_kv=False),
            "audio": _Trunk(cfg.audio_dim, cfg.audio_layers, cfg.audio_heads, pre_ln=False,
                            bias_kv=True)})
        self.modality_heads = nn.ModuleDict({"vision": _head(cfg.vision_dim, cfg.out_dim),
                                             "audio": _head(cfg.audio_dim, cfg.out_dim)})
        self.modality_postprocessors = nn.ModuleDict({
            "vision": _Normalize(),
            "audio": nn.Sequential(_Normalize(), _LogitScale(20.0))})

    def embed_clips(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) single clips/images -> (N, out_dim) post-processed embeddings."""
        if modality not in ("vision", "audio"):
            raise ValueError(f"only vision and audio towers are built, not {modality!r}")
        t = self.modality_preprocessors[modality](x)
        t = self.modality_trunks[modality](t)
        return self.modality_postprocessors[modality](self.modality_heads[modality](t))

    def forward(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Like the reference forward: 5-D+ audio/video input (B, S, ...) is embedded per clip
        and averaged over S; an image batch (B, 3, H, W) gives one embedding per image."""
        if x.ndim >= 5 and not (modality == "vision" and x.ndim == 5):
            b, s = x.shape[:2]
            return self.embed_clips(modality, x.flatten(0, 1)).view(b, s, -1).mean(dim=1)
        return self.embed_clips(modality, x)
