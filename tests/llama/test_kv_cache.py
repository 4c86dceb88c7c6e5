"""The per-forward plan: which positions each row gets and when a mask (or the fused causal path)
is used; the cache's slot bookkeeping. Model-level equivalences live in test_backbone.py."""

from __future__ import annotations

import pytest
import torch

from llama.backbone import rope_frequencies
from llama.config import LlamaConfig
from llama.kv_cache import KVCache, forward_plan

CFG = LlamaConfig(dim=16, n_layers=2, n_heads=2, vocab_size=11, multiple_of=8, max_seq_len=16,
                  lora_rank=2, adapter_layers_per_modality=0)
TABLE = rope_frequencies(CFG.head_dim, 32, CFG.rope_theta, torch.device("cpu"))


def plan(B, T, cache=None, start_pos=None, mask=None):
    return forward_plan(B, T, torch.device("cpu"), cache, start_pos, mask, lambda n: TABLE)


def positions(p) -> torch.Tensor:
    """Each query's position: the row of the rotation table its rotations were taken from."""
    rows = p.freqs[..., 0, :]  # (1 | B, T, hd/2)
    return (rows[..., None, :] - TABLE).abs().sum(-1).argmin(-1)


def test_unpadded_calls_use_the_fused_causal_path_and_shared_positions():
    p = plan(2, 5)
    assert p.is_causal and p.mask is None and p.cache is None
    assert positions(p).tolist() == [[0, 1, 2, 3, 4]]
    cache = KVCache(CFG, 2, 8, torch.float32, "cpu")
    first = plan(2, 3, cache)
    assert first.is_causal and (first.start, first.end) == (0, 3) and cache.length == 3
    step = plan(2, 1, cache)
    assert not step.is_causal and step.mask is None and positions(step).tolist() == [[3]]
    chunk = plan(2, 2, cache)  # a chunk after a prefix: an explicit causal mask
    assert chunk.mask.shape == (2, 6) and chunk.mask[0].tolist() == [True] * 5 + [False]


def test_left_padding_gives_each_row_its_own_positions():
    cache = KVCache(CFG, 2, 8, torch.float32, "cpu")
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    p = plan(2, 4, cache, mask=mask)
    assert positions(p).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]
    assert cache.padded and not p.mask[0, 0, 3, :2].any()  # padding is never attended
    step = plan(2, 1, cache)
    assert positions(step).tolist() == [[2], [4]]
    assert step.mask[0, 0, 0].tolist() == [False, False, True, True, True]


def test_right_padding_without_a_cache_stays_causal():
    p = plan(2, 4, mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))
    assert p.is_causal and p.mask is None


def test_rewinding_and_bad_calls():
    cache = KVCache(CFG, 1, 6, torch.float32, "cpu")
    plan(1, 4, cache, mask=torch.tensor([[0, 1, 1, 1]]))
    cache.seek(1)
    assert cache.length == 1 and cache.padded  # the kept column is padding
    cache.seek(0)
    assert cache.adapters is None and not cache.padded
    with pytest.raises(ValueError, match="gap"):
        cache.seek(3)
    with pytest.raises(ValueError, match="overflows"):
        plan(1, 7, cache)
    with pytest.raises(ValueError, match="needs a cache"):
        plan(1, 2, start_pos=2)
    with pytest.raises(ValueError, match="attention_mask"):
        plan(1, 2, mask=torch.ones(1, 5))
