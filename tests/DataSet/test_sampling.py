"""Per-item seeded sampling: an exact sample of the warped distribution, and a row's draw
depends on its own key only (not on the batch it is in)."""

from __future__ import annotations

import pytest
import torch

from DataSet.sampling import KeyedSampler, Sampling

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])


def _pick(sampler: KeyedSampler, rows: int, step: int = 0) -> list[int]:
    ids = torch.zeros((rows, 3 + step), dtype=torch.long)
    out = sampler(ids, LOGITS.repeat(rows, 1))
    assert torch.isfinite(out).sum(dim=1).tolist() == [1] * rows  # one token left per row
    return out.argmax(dim=1).tolist()


def test_frequencies_follow_the_tempered_softmax():
    s = Sampling(temperature=0.7)
    n = 4000
    picks = _pick(KeyedSampler(s, [f"k{i}" for i in range(n)], prompt_len=3), n)
    freq = torch.bincount(torch.tensor(picks), minlength=5).double() / n
    want = torch.softmax(LOGITS.double() / 0.7, dim=0)
    sigma = (want * (1 - want) / n).sqrt()
    assert ((freq - want).abs() <= 4 * sigma + 1e-3).all(), (freq, want)


def test_top_k_and_top_p_cut_the_tail():
    keys = [f"k{i}" for i in range(500)]
    assert set(_pick(KeyedSampler(Sampling(temperature=1.0, top_k=2), keys, 3), 500)) == {0, 1}
    top_p = KeyedSampler(Sampling(temperature=1.0, top_p=0.5), keys, 3)
    assert set(_pick(top_p, 500)) == {0}  # softmax mass of token 0 alone exceeds 0.5


def test_a_rows_draw_depends_on_its_key_and_step_only():
    s = Sampling(temperature=1.0)
    alone = [_pick(KeyedSampler(s, [k], 3), 1, step)[0] for k in ("a", "b", "c") for step in
             range(4)]
    together = [p for step in range(4) for p in _pick(KeyedSampler(s, ["a", "b", "c"], 3), 3,
                                                       step)]
    by_key = {(k, st): p for (st, k), p in zip([(st, k) for st in range(4) for k in "abc"],
                                                together)}
    assert alone == [by_key[(k, st)] for k in "abc" for st in range(4)]
    other_seed = [_pick(KeyedSampler(s, [f"k{i}"], 3, seed=1), 1)[0] for i in range(40)]
    same_seed = [_pick(KeyedSampler(s, [f"k{i}"], 3, seed=0), 1)[0] for i in range(40)]
    assert other_seed != same_seed


def test_greedy_is_refused_and_overrides_name_their_source():
    with pytest.raises(ValueError, match="temperature"):
        KeyedSampler(Sampling(temperature=0.0), ["k"], 1)
    s = Sampling(temperature=0.5, source="published").override(top_k=None, temperature=0.9)
    assert s.temperature == 0.9 and "overridden: ['temperature']" in s.source
