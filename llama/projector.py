"""Output projector: LLM states for the [AUD0..7] tokens -> the music decoder's conditioning.

docs/MODEL.md section 4: Linear (llm dim -> d_model), a standard encoder-decoder
`nn.Transformer` whose decoder reads a learned table of N output queries, and Linear
(d_model -> D). N and D come from the loaded decoder (`llama.decoders.projector_config_for`):
128 x 768 for MusicGen, 1 x (128*1024 + 8*768) for AudioLDM2. The parameter names (`fc`, `tfm`,
`model`, `query_embs` of shape (1, N, d_model)) are the published ones so official checkpoints
map onto this module unchanged; the published Transformer was post-norm (`norm_first=False`),
which is the config default.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from llama.config import ProjectorConfig


class OutputProjector(nn.Module):
    """(B, T, llm_dim) hidden states (+ optional token embeddings) -> (B, N, D) conditioning."""

    def __init__(self, llm_dim: int, cfg: ProjectorConfig) -> None:
        super().__init__()
        if llm_dim < 1:
            raise ValueError(f"OutputProjector: llm_dim must be >= 1, got {llm_dim}")
        if cfg.n_output_tokens < 1 or cfg.output_dim < 1:
            raise ValueError(
                "ProjectorConfig.n_output_tokens and output_dim must be >= 1 (set them from the "
                f"decoder with projector_config_for); got {cfg.n_output_tokens} x {cfg.output_dim}"
            )
        if cfg.d_model % cfg.n_heads:
            raise ValueError(
                f"ProjectorConfig.d_model {cfg.d_model} is not divisible by n_heads {cfg.n_heads}"
            )
        self.llm_dim = llm_dim
        self.cfg = cfg
        self.fc = nn.Linear(llm_dim, cfg.d_model)
        self.tfm = nn.Transformer(
            d_model=cfg.d_model,
            nhead=cfg.n_heads,
            num_encoder_layers=cfg.n_encoder_layers,
            num_decoder_layers=cfg.n_decoder_layers,
            dim_feedforward=cfg.ffn_dim,
            dropout=cfg.dropout,
            batch_first=True,
            norm_first=cfg.norm_first,
        )
        self.model = nn.Linear(cfg.d_model, cfg.output_dim)
        self.query_embs = nn.Parameter(torch.randn(1, cfg.n_output_tokens, cfg.d_model))

    @property
    def output_shape(self) -> tuple[int, int]:
        return self.cfg.n_output_tokens, self.cfg.output_dim

    def forward(self, x: torch.Tensor, input_embs: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Project; `input_embs` (the [AUD] token embeddings) is added first when given.

        The composed model may add the embeddings itself and pass one tensor (same result).
        """
        if x.dim() != 3 or x.shape[-1] != self.llm_dim:
            raise ValueError(
                f"OutputProjector expects (batch, tokens, {self.llm_dim}) hidden states, got "
                f"{tuple(x.shape)}"
            )
        if input_embs is not None:
            if input_embs.shape != x.shape:
                raise ValueError(
                    f"OutputProjector: input_embs {tuple(input_embs.shape)} must match hidden "
                    f"states {tuple(x.shape)}"
                )
            x = x + input_embs
        h = self.fc(x)
        queries = self.query_embs.expand(h.shape[0], -1, -1)
        return self.model(self.tfm(h, queries))
