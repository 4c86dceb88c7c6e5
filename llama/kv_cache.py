"""The KV cache and the per-forward plan: positions (as RoPE rotations) and attention masks.

Why apart from the model file: how a call's positions and masks follow from the cache state and
the padding is the subtle part of batched generation, and it is the same for every layer; the
plan is built once per forward here and the layers only read it.

- `KVCache`: preallocated per-layer key/value tensors; prefill, then one token at a time.
  Left-padded batches (attention_mask) get per-row positions, so prompts of different lengths
  share a batch.
- `forward_plan`: for one call, the RoPE rotations, the mask (or the causal flag that lets
  `scaled_dot_product_attention` use its fused causal path) and the cache slot written.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from llama.config import LlamaConfig


class KVCache:
    """Preallocated keys/values for every layer plus which cache columns hold real tokens.

    `key_valid[b, j]` is False for left-padding columns; positions of new tokens are the number of
    real tokens before them, so each row of a left-padded batch sees positions 0, 1, 2, ...
    `adapters[i]` keeps layer i's adapter contribution: it does not depend on the position, so it
    is computed once at prefill and reused for every decoded token (the features are fixed for the
    lifetime of a cache; rewinding to position 0 drops them).
    """

    def __init__(
        self,
        cfg: LlamaConfig,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        if batch_size < 1 or max_len < 1:
            raise ValueError(
                f"KVCache needs batch_size >= 1 and max_len >= 1, got {batch_size}, {max_len}"
            )
        shape = (batch_size, cfg.kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.key_valid = torch.ones(batch_size, max_len, dtype=torch.bool, device=device)
        self.batch_size = batch_size
        self.max_len = max_len
        self.length = 0
        self.padded = False  # any padding column among the first `length` columns
        self.adapters: Optional[list[Optional[torch.Tensor]]] = None

    def seek(self, start: int) -> None:
        """Continue writing at `start` (<= length); earlier-than-length starts rewind the cache."""
        if start > self.length:
            raise ValueError(
                f"start_pos {start} is past the cache length {self.length}: "
                "positions would have a gap"
            )
        if start < self.length:
            self.length = start
            self.padded = bool(start) and not bool(self.key_valid[:, :start].all())
            if start == 0:
                self.adapters = None


class Plan:
    """RoPE rotations, mask / causal flag and cache slot of one forward call (built once)."""

    __slots__ = ("freqs", "mask", "is_causal", "cache", "start", "end")

    def __init__(self, freqs: torch.Tensor, mask: Optional[torch.Tensor], is_causal: bool,
                 cache: Optional[KVCache], start: int, end: int) -> None:
        self.freqs = freqs  # (1 | B, T, 1, head_dim / 2) complex
        self.mask = mask  # None, or a bool mask broadcastable to (B, heads, T, end)
        self.is_causal = is_causal
        self.cache = cache
        self.start = start  # cache columns [start, end) receive this call's keys/values
        self.end = end


def _start(B: int, T: int, cache: Optional[KVCache], start_pos: Optional[int]) -> int:
    """Where this call's tokens go (0 without a cache); checks the cache can take them."""
    if cache is None:
        if start_pos:
            raise ValueError("start_pos > 0 needs a cache holding the earlier keys/values")
        return 0
    if cache.batch_size != B:
        raise ValueError(f"cache was built for batch {cache.batch_size}, tokens have {B}")
    start = cache.length if start_pos is None else start_pos
    cache.seek(start)
    if start + T > cache.max_len:
        raise ValueError(
            f"cache holds {cache.max_len} positions; writing {T} at {start} overflows it"
        )
    return start


def _valid(attention_mask: Optional[torch.Tensor], B: int, T: int, start: int,
           device: torch.device) -> Optional[torch.Tensor]:
    """(B, T) bool for the new tokens (True = real), None when all are real."""
    if attention_mask is None:
        return None
    end = start + T
    if attention_mask.shape == (B, end):
        valid = attention_mask[:, start:end]
    elif attention_mask.shape == (B, T):
        valid = attention_mask
    else:
        raise ValueError(
            f"attention_mask must be (batch, start_pos + T) = ({B}, {end}) or ({B}, {T}); "
            f"got {tuple(attention_mask.shape)}"
        )
    valid = valid.to(device=device, dtype=torch.bool)
    return None if bool(valid.all()) else valid


def forward_plan(
    B: int,
    T: int,
    device: torch.device,
    cache: Optional[KVCache],
    start_pos: Optional[int],
    attention_mask: Optional[torch.Tensor],
    rope: Callable[[int], torch.Tensor],
) -> Plan:
    """Positions (as RoPE rotations) and the attention mask for this call, shared by layers.

    `rope(length)` returns the rotation table (at least `length` rows) on `device`.
    """
    start = _start(B, T, cache, start_pos)
    end = start + T
    valid = _valid(attention_mask, B, T, start, device)
    table = rope(end)

    if cache is None:
        if valid is None or bool((valid[:, 1:] <= valid[:, :-1]).all()):
            # No padding, or right padding (training): plain causal attention; pad queries at
            # the end only produce outputs the loss ignores.
            return Plan(table[:T].view(1, T, 1, -1), None, True, None, 0, T)
        pos = (valid.long().cumsum(-1) - 1).clamp(min=0)
        key_valid = valid
    else:
        if valid is None:
            cache.key_valid[:, start:end] = True
        else:
            cache.key_valid[:, start:end] = valid
            cache.padded = True
        cache.length = end
        if not cache.padded:
            return _unpadded_cache_plan(table, cache, start, end, device)
        key_valid = cache.key_valid[:, :end]
        pos = (key_valid.long().cumsum(-1)[:, start:end] - 1).clamp(min=0)

    freqs = table[pos].unsqueeze(2)  # (B, T, 1, hd/2): each row's own positions
    if T == 1:
        return Plan(freqs, key_valid[:, None, None, :], False, cache, start, end)
    kpos = torch.arange(end, device=device)[None, :]
    qpos = torch.arange(start, end, device=device)[:, None]
    # Pad queries may attend to themselves so that no row is fully masked (no NaNs).
    allowed = (kpos <= qpos) & (key_valid[:, None, :] | (kpos == qpos))
    return Plan(freqs, allowed[:, None], False, cache, start, end)


def _unpadded_cache_plan(table: torch.Tensor, cache: KVCache, start: int, end: int,
                         device: torch.device) -> Plan:
    """A cache without padding: shared positions; decode steps and a first prefill need no mask."""
    T = end - start
    freqs = table[start:end].view(1, T, 1, -1)
    if T == 1:
        return Plan(freqs, None, False, cache, start, end)
    if start == 0:
        return Plan(freqs, None, True, cache, start, end)
    qpos = torch.arange(start, end, device=device)[:, None]
    causal = torch.arange(end, device=device)[None, :] <= qpos
    return Plan(freqs, causal, False, cache, start, end)
