"""Modality bridges: frozen-encoder features -> one vector per sample in the backbone width.

docs/MODEL.md section 3. Every bridge ends the same way: L2 normalisation (where the optional
kNN mixing of `llama.knn` plugs in), `Linear(H -> dim)`, then `n_residual_blocks` blocks

    x = x + W2(silu(W1(n)) * W3(n)),   n = Norm(x),   W1, W2, W3: dim x dim

with RMSNorm and no biases ("rms", the published default) or LayerNorm and biased linears ("layer",
the published `legacy_bridge` variant). What comes before differs:

- `MusicBridge` ("rnn-attention", default): a 1x1 Conv1d mixes the S hidden states of every frame
  into one, a single-layer tanh RNN runs over the frames, attention pooling (Linear(H, 1), softmax
  over the real frames only) gives one vector. The RNN runs forward in time, so the right padding
  of shorter clips never reaches a real frame's output.
  ("mean", older release): the average over real frames of each hidden state first, then the
  Conv1d over the S states; no RNN, no attention.
- `TokenBridge` (image, video): a 1x1 Conv1d mixes the encoder's N tokens into one.

Module names map one-to-one onto the released checkpoints' keys (`llama/release/keymap.py`), e.g.
`blocks.0.w1.weight` <-> `mu_mert_f1_1.weight`, `agg.weight` <-> `mu_mert_agg.weight`.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from llama.config import BridgeConfig, M2UGenConfig

Knn = Callable[[torch.Tensor], torch.Tensor]  # (B, H) unit vectors -> (B, H) unit vectors
NormKind = Literal["rms", "layer"]

RMS_EPS = 1e-6  # the published RMSNorm default


class ResidualBlock(nn.Module):
    """x + W2(silu(W1(n)) * W3(n)), n = Norm(x): a pre-norm SwiGLU block of width dim."""

    def __init__(self, dim: int, norm: NormKind = "rms") -> None:
        super().__init__()
        if norm == "rms":
            self.norm: nn.Module = nn.RMSNorm(dim, eps=RMS_EPS)
        elif norm == "layer":
            self.norm = nn.LayerNorm(dim)
        else:
            raise ValueError(f"bridge_norm must be 'rms' or 'layer', got {norm!r}")
        bias = norm == "layer"
        self.w1 = nn.Linear(dim, dim, bias=bias)
        self.w2 = nn.Linear(dim, dim, bias=bias)
        self.w3 = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm(x)
        return x + self.w2(F.silu(self.w1(n)) * self.w3(n))


class _Head(nn.Module):
    """The shared tail: L2 normalise, optional kNN mixing, project to dim, residual blocks."""

    def __init__(self, hidden_size: int, dim: int, norm: NormKind, n_blocks: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, dim)
        self.blocks = nn.ModuleList(ResidualBlock(dim, norm) for _ in range(n_blocks))

    def zero_biases(self) -> None:
        """Start every bias of the mixing/pooling/projection path at zero.

        Why: encoder features share a large common component; PyTorch's default random biases add
        one more constant offset, and at initialisation the bridge then maps every clip to almost
        the same vector (pairwise cosine 0.998 measured on tiny MERT features), so the backbone
        first has to learn to undo the offset. With zero biases the output keeps the input's
        variation (cosine 0.58) and training starts from features that differ per sample.
        """
        for name, param in self.named_parameters():
            if name.endswith("bias") or name.startswith("rnn.bias"):
                if not name.startswith("blocks."):  # LayerNorm/legacy block biases keep theirs
                    nn.init.zeros_(param)

    def head(self, pooled: torch.Tensor, knn: Optional[Knn], normalize: bool = True
             ) -> torch.Tensor:
        x = F.normalize(pooled, dim=-1) if normalize else pooled
        if knn is not None:
            x = knn(x)
        x = self.proj(x)
        for block in self.blocks:
            x = block(x)
        return x

    def _dtype(self) -> torch.dtype:
        return self.proj.weight.dtype


class MusicBridge(_Head):
    """MERT hidden states (B, S, T, H) + frame mask (B, T) -> (B, dim)."""

    def __init__(self, hidden_size: int, num_hidden_states: int, dim: int,
                 pooling: Literal["rnn-attention", "mean"] = "rnn-attention",
                 norm: NormKind = "rms", n_blocks: int = 3,
                 l2: Literal["pooled", "frames"] = "pooled") -> None:
        super().__init__(hidden_size, dim, norm, n_blocks)
        if l2 not in ("pooled", "frames") or (l2 == "frames" and pooling != "rnn-attention"):
            raise ValueError(f"music_l2 must be 'pooled', or 'frames' with rnn-attention pooling; "
                             f"got {l2!r} with {pooling!r}")
        self.l2 = l2
        if pooling not in ("rnn-attention", "mean"):
            raise ValueError(f"music_pooling must be 'rnn-attention' or 'mean', got {pooling!r}")
        self.pooling = pooling
        self.hidden_size = hidden_size
        self.num_hidden_states = num_hidden_states
        self.agg = nn.Conv1d(num_hidden_states, 1, kernel_size=1)
        if pooling == "rnn-attention":
            self.rnn = nn.RNN(hidden_size, hidden_size, num_layers=1, nonlinearity="tanh",
                              batch_first=True)
            self.attention = nn.Linear(hidden_size, 1)
        self.zero_biases()

    def forward(self, hidden_states: torch.Tensor, mask: Optional[torch.Tensor] = None,
                knn: Optional[Knn] = None) -> torch.Tensor:
        if hidden_states.dim() != 4:
            raise ValueError(
                f"music features must be (B, S, T, H), got {tuple(hidden_states.shape)}")
        b, s, t, h = hidden_states.shape
        if (s, h) != (self.num_hidden_states, self.hidden_size):
            raise ValueError(f"music features have S={s}, H={h}; the bridge expects "
                             f"S={self.num_hidden_states}, H={self.hidden_size}")
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=hidden_states.device)
        mask = mask.to(hidden_states.device, torch.bool)
        if mask.shape != (b, t):
            raise ValueError(f"frame mask has shape {tuple(mask.shape)}, expected {(b, t)}")
        if not bool(mask.any(dim=1).all()):
            raise ValueError("a music sample has no real frames (empty mask row)")
        x = hidden_states.to(self._dtype())
        if self.pooling == "mean":
            m = mask.to(x.dtype)[:, None, :, None]  # (B, 1, T, 1)
            per_state = (x * m).sum(2) / m.sum(2)  # (B, S, H): mean over real frames
            pooled = self.agg(per_state).squeeze(1)  # (B, H)
        else:
            frames = self.agg(x.reshape(b, s, t * h)).reshape(b, t, h)  # mix the S states
            if self.l2 == "frames":  # published newer release: unit frames, pooled left as is
                frames = F.normalize(frames, dim=-1)
            out, _ = self.rnn(frames)  # (B, T, H); forward-only, so padding is never seen
            scores = self.attention(out).squeeze(-1).masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores.float(), dim=1).to(out.dtype)
            pooled = torch.einsum("bt,bth->bh", weights, out)
        return self.head(pooled, knn, normalize=self.l2 == "pooled")


class TokenBridge(_Head):
    """ViT / ViViT last hidden state (B, N, H) -> (B, dim)."""

    def __init__(self, num_tokens: int, hidden_size: int, dim: int, norm: NormKind = "rms",
                 n_blocks: int = 3) -> None:
        super().__init__(hidden_size, dim, norm, n_blocks)
        self.num_tokens = num_tokens
        self.hidden_size = hidden_size
        self.agg = nn.Conv1d(num_tokens, 1, kernel_size=1)
        self.zero_biases()

    def forward(self, tokens: torch.Tensor, knn: Optional[Knn] = None) -> torch.Tensor:
        if tokens.dim() != 3 or tokens.shape[1:] != (self.num_tokens, self.hidden_size):
            raise ValueError(f"token features must be (B, {self.num_tokens}, {self.hidden_size}), "
                             f"got {tuple(tokens.shape)}")
        pooled = self.agg(tokens.to(self._dtype())).squeeze(1)  # (B, H)
        return self.head(pooled, knn)


def build_bridges(cfg: M2UGenConfig) -> nn.ModuleDict:
    """The three bridges of a configuration, keyed audio / image / video."""
    b: BridgeConfig = cfg.bridges
    dim = cfg.llama.dim
    return nn.ModuleDict({
        "audio": MusicBridge(cfg.mert.hidden_size, cfg.mert.num_hidden_states, dim,
                             pooling=b.music_pooling, norm=b.bridge_norm,
                             n_blocks=b.n_residual_blocks, l2=b.music_l2),
        "image": TokenBridge(cfg.vit.num_tokens, cfg.vit.hidden_size, dim, norm=b.bridge_norm,
                             n_blocks=b.n_residual_blocks),
        "video": TokenBridge(cfg.vivit.num_tokens, cfg.vivit.hidden_size, dim,
                             norm=b.bridge_norm, n_blocks=b.n_residual_blocks),
    })
