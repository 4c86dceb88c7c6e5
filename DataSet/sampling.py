"""Sampling settings and per-item seeded sampling for transformers `generate`.

Why: the texts a dataset step samples must not depend on how items were batched (a rerun with
another `--batch_size`, or a resume after a crash, must write the same texts). transformers
samples with one global RNG, so row i of a batch draws from a stream that depends on every
other row. `KeyedSampler` replaces that draw: after the usual temperature / top-k / top-p
warping (transformers' own warpers, in transformers' order) it adds Gumbel noise drawn from a
generator seeded by (seed, item key, attempt, step) and takes the argmax, which is an exact
sample of the warped distribution (the Gumbel-max trick). `generate` then runs in greedy mode,
so no global RNG is touched and each row's text depends only on its own key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from util.hashing import stable_int


@dataclass(frozen=True)
class Sampling:
    """How one kind of text is sampled; `temperature == 0` means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    repetition_penalty: float = 1.0
    max_new_tokens: int = 128
    source: str = ""  # where these values come from (written into the manifest)

    def override(self, **values: Any) -> "Sampling":
        """A copy with every value that is not None replaced (the CLI flags)."""
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            given.setdefault("source", f"{self.source} (overridden: {sorted(given)})")
        return dataclasses.replace(self, **given)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class KeyedSampler(LogitsProcessor):
    """Warps the scores, then picks each row's token with Gumbel noise from its own generator.

    `keys[i]` names row i (an item key, with the attempt number when retrying); `prompt_len` is
    the padded prompt length, so the step index is the number of tokens generated so far.
    """

    def __init__(self, sampling: Sampling, keys: Sequence[str], prompt_len: int,
                 seed: int = 0) -> None:
        if sampling.temperature <= 0:
            raise ValueError("KeyedSampler samples: temperature must be > 0 (0 = greedy)")
        self.keys, self.prompt_len, self.seed = list(keys), prompt_len, seed
        self.warpers: list[LogitsProcessor] = [TemperatureLogitsWarper(sampling.temperature)]
        if sampling.top_k > 0:
            self.warpers.append(TopKLogitsWarper(sampling.top_k))
        if sampling.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(sampling.top_p))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor
                 ) -> torch.FloatTensor:
        if input_ids.shape[0] != len(self.keys):
            raise ValueError(f"{input_ids.shape[0]} rows for {len(self.keys)} keys")
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        step = input_ids.shape[1] - self.prompt_len
        noise = torch.stack([self._gumbel(k, step, scores.shape[-1]) for k in self.keys])
        picked = (scores.float() + noise.to(scores.device)).argmax(dim=-1)
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(scores.shape[0]), picked] = 0.0  # greedy decoding takes `picked`
        return out

    def _gumbel(self, key: str, step: int, vocab: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(stable_int(f"{self.seed}:{key}:{step}") % 2**63)
        u = torch.rand(vocab, generator=g, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
        return (-torch.log(-torch.log(u))).float()


def generate_kwargs(model: Any, sampling: Sampling, keys: Sequence[str], prompt_len: int,
                    seed: int = 0, pad_token_id: Optional[int] = None,
                    bad_words_ids: Optional[list[list[int]]] = None) -> dict[str, Any]:
    """Keyword arguments for `model.generate` that sample as `sampling` says, per key.

    A copy of the model's generation config is used (its stop tokens stay), with the sampling
    fields cleared so transformers adds no warper of its own.
    """
    cfg = model.generation_config.__class__.from_dict(model.generation_config.to_dict())
    cfg.do_sample, cfg.num_beams = False, 1
    cfg.temperature, cfg.top_p, cfg.top_k = None, None, None
    cfg.max_new_tokens, cfg.max_length = sampling.max_new_tokens, None
    cfg.repetition_penalty = sampling.repetition_penalty
    if pad_token_id is not None:
        cfg.pad_token_id = pad_token_id
    if bad_words_ids:
        cfg.bad_words_ids = bad_words_ids
    kw: dict[str, Any] = {"generation_config": cfg}
    if sampling.temperature > 0:
        kw["logits_processor"] = LogitsProcessorList(
            [KeyedSampler(sampling, keys, prompt_len, seed)])
    return kw
