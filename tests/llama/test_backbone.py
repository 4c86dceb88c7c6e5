"""Behaviour of the LLaMA backbone: caching, padding, PEFT identity at init, adapter groups,
trainable sets, GQA, low precision, new-token rows, RoPE convention."""

from __future__ import annotations

import pytest
import torch

from llama.backbone import (
    Transformer,
    apply_rope,
    merge_new_tokens,
    rope_frequencies,
    split_new_tokens,
)
from llama.lora import parameter_group, peft_parameter_names, set_trainable
from llama.config import LlamaConfig, llama_tiny


pytestmark = pytest.mark.usefixtures("one_thread")


def small_cfg(**kw) -> LlamaConfig:
    base = dict(dim=64, n_layers=7, n_heads=4, n_kv_heads=2, vocab_size=101, multiple_of=16,
                max_seq_len=64, lora_rank=4, adapter_layers_per_modality=2)
    base.update(kw)
    return LlamaConfig(**base)


def make(cfg: LlamaConfig, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(cfg).eval()


def perturb_peft(model: Transformer, seed: int = 1) -> None:
    """Give every bias, LoRA matrix and gate a nonzero value (as after some training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if parameter_group(name) in ("lora", "bias", "gates"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def copy_base(src: Transformer, dst: Transformer) -> None:
    """Copy every base weight (not PEFT, not prefix) from src into dst."""
    base = {k: v for k, v in src.state_dict().items() if parameter_group(k) in (None, "norms")}
    missing, unexpected = dst.load_state_dict(base, strict=False)
    assert not unexpected
    assert all(parameter_group(k) not in (None, "norms") for k in missing)


def test_parameter_names_and_shapes_follow_the_contract():
    cfg = llama_tiny()
    m = make(cfg)
    sd = m.state_dict()
    r, d = cfg.lora_rank, cfg.dim
    kv = cfg.kv_heads * cfg.head_dim
    assert sd["tok_embeddings.weight"].shape == (cfg.vocab_size, d)
    assert sd["output.weight"].shape == (cfg.vocab_size, d)
    assert sd["prefix_query.weight"].shape == (cfg.n_adapter_layers, d)
    assert sd["norm.weight"].shape == (d,)
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        assert sd[p + "attention.wq.weight"].shape == (d, d)
        assert sd[p + "attention.wk.weight"].shape == (kv, d)
        assert sd[p + "attention.wv.weight"].shape == (kv, d)
        for name in ("wq", "wo"):
            assert not sd[p + f"attention.{name}.bias"].any()
        assert p + "attention.wk.bias" not in sd and p + "attention.wv.bias" not in sd
        for name in ("w1", "w2", "w3"):
            assert not sd[p + f"feed_forward.{name}.bias"].any()
        for mod, names in (("attention", "wq wk wv wo"), ("feed_forward", "w1 w2 w3")):
            for name in names.split():
                l1 = sd[p + f"{mod}.lora_{name}_l1.weight"]
                l2 = sd[p + f"{mod}.lora_{name}_l2.weight"]
                base = sd[p + f"{mod}.{name}.weight"]
                assert l1.shape == (r, base.shape[1]) and l2.shape == (base.shape[0], r)
                assert l1.abs().sum() > 0 and not l2.any()
        has_gate = i >= cfg.first_adapter_layer
        assert (p + "attention.gate" in sd) == has_gate
        if has_gate:
            gate = sd[p + "attention.gate"]
            assert gate.shape == (cfg.n_heads,) and not gate.any()
        assert sd[p + "attention_norm.weight"].shape == (d,)
        assert sd[p + "ffn_norm.weight"].shape == (d,)
    assert not any("rope" in k or "freqs" in k for k in sd)


def test_cached_prefill_and_steps_match_full_forward():
    m = make(small_cfg())
    perturb_peft(m)
    feats = torch.randn(2, 3, 64)
    tokens = torch.randint(0, 101, (2, 12))
    with torch.no_grad():
        full = m(tokens, feats)
        cache = m.new_cache(2, 16)
        parts = [m(tokens[:, :5], feats, cache=cache)]
        parts += [m(tokens[:, i : i + 1], cache=cache) for i in range(5, 9)]
        parts.append(m(tokens[:, 9:], cache=cache))  # a multi-token chunk after a prefix
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)
    # Rewinding (start_pos below the cache length) recomputes from there.
    with torch.no_grad():
        again = m(tokens[:, 9:], cache=cache, start_pos=9)
    torch.testing.assert_close(again, full[:, 9:], rtol=1e-5, atol=1e-5)


def test_left_padded_rows_equal_unpadded_rows():
    m = make(small_cfg())
    perturb_peft(m)
    lens = [9, 4, 6]
    seqs = [torch.randint(0, 101, (n,)) for n in lens]
    L = max(lens)
    tokens = torch.zeros(3, L, dtype=torch.long)
    mask = torch.zeros(3, L, dtype=torch.long)
    for b, s in enumerate(seqs):
        tokens[b, L - len(s) :] = s
        mask[b, L - len(s) :] = 1
    feats = torch.randn(3, 3, 64)
    with torch.no_grad():
        batched = m(tokens, feats, attention_mask=mask)
        cache = m.new_cache(3, L + 2)
        cached = m(tokens, feats, cache=cache, attention_mask=mask)
        nxt = torch.randint(0, 101, (3, 1))
        step = m(nxt, cache=cache)
        for b, s in enumerate(seqs):
            alone = m(torch.cat([s, nxt[b]])[None], feats[b : b + 1])
            real = slice(L - len(s), None)
            torch.testing.assert_close(batched[b, real], alone[0, :-1], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(cached[b, real], alone[0, :-1], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(step[b, 0], alone[0, -1], rtol=1e-5, atol=1e-5)


def test_right_padded_training_batch_matches_unpadded_rows():
    m = make(small_cfg())
    a, b = torch.randint(0, 101, (10,)), torch.randint(0, 101, (6,))
    tokens = torch.zeros(2, 10, dtype=torch.long)
    tokens[0], tokens[1, :6] = a, b
    mask = torch.tensor([[1] * 10, [1] * 6 + [0] * 4])
    logits = m(tokens, attention_mask=mask)
    torch.testing.assert_close(logits[1, :6], m(b[None])[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits[0], m(a[None])[0], rtol=1e-5, atol=1e-5)


def test_logit_rows_give_the_full_logits_at_those_positions_and_the_same_hidden():
    m = make(small_cfg(vocab_size=101))
    m.add_tokens(3)  # the new-token rows are part of the head too
    tokens = torch.randint(0, 104, (3, 9))
    rows = torch.rand(3, 9) > 0.5
    full, hidden = m(tokens, return_hidden=True)
    some, same_hidden = m(tokens, return_hidden=True, logit_rows=rows)
    assert some.shape == (int(rows.sum()), 104)
    torch.testing.assert_close(some, full[rows], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(same_hidden, hidden)
    with pytest.raises(ValueError, match="logit_rows"):
        m(tokens, logit_rows=rows[:, :4])


def test_peft_parameters_change_nothing_at_init_and_something_when_set():
    cfg = small_cfg()
    tuned = make(cfg, seed=0)
    plain = make(small_cfg(lora_rank=0, adapter_layers_per_modality=0), seed=5)
    copy_base(tuned, plain)
    tokens = torch.randint(0, 101, (2, 9))
    feats = torch.randn(2, 3, 64)
    with torch.no_grad():
        ref = plain(tokens)
        torch.testing.assert_close(tuned(tokens, feats), ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(tuned(tokens), ref, rtol=1e-6, atol=1e-6)
        for group in ("gates", "lora", "bias"):
            m = make(cfg, seed=0)
            with torch.no_grad():
                for name, p in m.named_parameters():
                    if parameter_group(name) == group and "_l1" not in name:
                        p.fill_(0.5)
            out = m(tokens, feats)
            assert (out - ref).abs().max() > 1e-3, f"nonzero {group} did not change the logits"


def test_modality_feature_affects_only_its_layer_group():
    cfg = small_cfg()  # layers 1-2 audio, 3-4 image, 5-6 video
    m = make(cfg)
    with torch.no_grad():
        for layer in m.layers[cfg.first_adapter_layer :]:
            layer.attention.gate.fill_(1.0)
    outs: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(lambda mod, inp, out: outs.append(out)) for layer in m.layers
    ]
    tokens = torch.randint(0, 101, (1, 7))
    base = torch.randn(1, 3, 64)
    with torch.no_grad():
        m(tokens, base)
        ref = list(outs)
        for mod in range(3):
            outs.clear()
            changed = base.clone()
            changed[:, mod] += 1.0
            m(tokens, changed)
            differs = [not torch.equal(a, b) for a, b in zip(ref, outs)]
            first = cfg.first_adapter_layer + mod * cfg.adapter_layers_per_modality
            assert differs.index(True) == first, (mod, differs)
            toks_ref = m.adapter_tokens(base, 1)
            toks = m.adapter_tokens(changed, 1)
            same = [torch.equal(a, b) for a, b in zip(toks_ref, toks)]
            assert same == [j // cfg.adapter_layers_per_modality != mod for j in range(len(same))]
    for h in hooks:
        h.remove()
    # An absent modality (zeros) is the prefix alone, same as passing no features.
    with torch.no_grad():
        torch.testing.assert_close(m(tokens, torch.zeros(1, 3, 64)), m(tokens))


def test_gradients_reach_only_trainable_parameters():
    m = make(small_cfg()).train()
    new_ids = m.add_tokens(2)
    trainable = set(set_trainable(m))
    assert trainable == set(peft_parameter_names(m))
    groups = {parameter_group(n) for n in trainable}
    assert groups == {"lora", "bias", "norms", "gates", "prefix", "new_tokens"}
    tokens = torch.cat([torch.randint(0, 101, (2, 6)), torch.tensor([new_ids, new_ids])], 1)
    logits = m(tokens, torch.randn(2, 3, 64))
    logits.logsumexp(-1).mean().backward()
    for name, p in m.named_parameters():
        if name in trainable:
            assert p.grad is not None, name
        else:
            assert p.grad is None and not p.requires_grad, name
    # Gates must train from their zero init (the published code's gates never did).
    gate_grad = sum(layer.attention.gate.grad.abs().sum() for layer in m.layers[1:])
    assert gate_grad > 0
    assert m.new_tok_embeddings.grad.abs().sum() > 0
    # Flags switch groups off.
    names = set_trainable(m, lora=False, gates=False, new_tokens=False)
    assert {parameter_group(n) for n in names} == {"bias", "norms", "prefix"}
    assert not m.tok_embeddings.weight.requires_grad and not m.output.weight.requires_grad


def test_grouped_query_attention_equals_mha_with_repeated_kv_heads():
    gqa = make(small_cfg(n_kv_heads=2, n_heads=8, adapter_layers_per_modality=0, lora_rank=0))
    mha = make(small_cfg(n_kv_heads=None, n_heads=8, adapter_layers_per_modality=0, lora_rank=0))
    sd = gqa.state_dict()
    hd = 64 // 8
    for k in list(sd):
        if k.endswith("attention.wk.weight") or k.endswith("attention.wv.weight"):
            w = sd[k].view(2, 1, hd, 64).expand(2, 4, hd, 64)  # kv head h serves heads 4h..4h+3
            sd[k] = w.reshape(8 * hd, 64)
    mha.load_state_dict(sd)
    tokens = torch.randint(0, 101, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(gqa(tokens), mha(tokens), rtol=1e-5, atol=1e-5)
        cache = gqa.new_cache(2, 11)
        gqa(tokens, cache=cache)
        step = gqa(tokens[:, :1], cache=cache)  # decode path (folded query heads)
        full = mha(torch.cat([tokens, tokens[:, :1]], 1))[:, -1:]
    torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_forward_and_cache_on_cpu(dtype):
    m = make(llama_tiny())
    perturb_peft(m)
    tokens = torch.randint(0, 1000, (2, 8))
    feats = torch.randn(2, 3, 128)
    with torch.no_grad():
        ref = m(tokens, feats)
        low = m.to(dtype)
        out = low(tokens, feats)
        cache = low.new_cache(2, 9)
        low(tokens, feats, cache=cache)
        step = low(tokens[:, :1], cache=cache)
    assert out.dtype == torch.float32 and torch.isfinite(out).all() and torch.isfinite(step).all()
    assert cache.k[0].dtype == dtype
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.8


def test_add_tokens_mean_initialised_separate_rows():
    m = make(small_cfg())
    ids = m.add_tokens(3)
    assert ids == [101, 102, 103] and m.vocab_size == 104 and m.base_vocab_size == 101
    emb_mean = m.tok_embeddings.weight.mean(0)
    out_mean = m.output.weight.mean(0)
    for row in range(3):
        torch.testing.assert_close(m.new_tok_embeddings[row], emb_mean)
        torch.testing.assert_close(m.new_output[row], out_mean)
    assert m.tok_embeddings.weight.shape[0] == 101  # base rows untouched, not concatenated
    with torch.no_grad():
        m.new_tok_embeddings[1].fill_(3.0)
        emb = m.embed(torch.tensor([[5, 102]]))
    torch.testing.assert_close(emb[0, 0], m.tok_embeddings.weight[5])
    torch.testing.assert_close(emb[0, 1], torch.full((64,), 3.0))
    logits = m(torch.tensor([[1, 102, 103]]))
    assert logits.shape == (1, 3, 104)
    with pytest.raises(IndexError):
        m(torch.tensor([[104]]))
    more = m.add_tokens(1)
    assert more == [104] and m.new_output.shape == (4, 64)
    # Export merges the rows; import splits them back (bit-exact round trip).
    sd = m.state_dict()
    merged = merge_new_tokens(sd)
    assert merged["tok_embeddings.weight"].shape == (105, 64) and "new_output" not in merged
    back = split_new_tokens(merged, 101)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    # A fresh model loads a state dict holding new rows without calling add_tokens first.
    fresh = Transformer(small_cfg())
    fresh.load_state_dict(back)
    assert fresh.vocab_size == 105 and torch.equal(fresh.new_output, m.new_output)


def test_adapter_token_through_wv_with_or_without_its_lora():
    with_lora = make(small_cfg(adapter_uses_lora=True))
    perturb_peft(with_lora)
    plain_wv = make(small_cfg(adapter_uses_lora=False))
    plain_wv.load_state_dict(with_lora.state_dict())
    attn_a, attn_b = with_lora.layers[-1].attention, plain_wv.layers[-1].attention
    token = torch.randn(2, 1, 64)
    with torch.no_grad():
        v = torch.nn.functional.linear(token, attn_a.wv.weight)
        lora = attn_a.lora_wv_l2(attn_a.lora_wv_l1(token))
        gate = torch.tanh(attn_a.gate)  # per query head; kv head h serves heads 2h, 2h+1

        def expect(vv: torch.Tensor) -> torch.Tensor:
            per_head = vv.view(2, 1, 2, 1, 16).expand(2, 1, 2, 2, 16).reshape(2, 1, 4, 16)
            return (per_head * gate[:, None]).reshape(2, 1, 64)

        torch.testing.assert_close(attn_a.adapter_output(token), expect(v + lora))
        torch.testing.assert_close(attn_b.adapter_output(token), expect(v))


def test_rope_rotates_interleaved_pairs_and_depends_on_relative_position():
    hd = 8
    freqs = rope_frequencies(hd, 16, 10000.0, torch.device("cpu"))
    x = torch.zeros(1, 16, 1, hd)
    x[..., 0] = 1.0  # the pair (x0, x1) rotates with frequency 1 rad per position
    out = apply_rope(x, freqs[None, :, None])
    pos = torch.arange(16).float()
    torch.testing.assert_close(out[0, :, 0, 0], torch.cos(pos))
    torch.testing.assert_close(out[0, :, 0, 1], torch.sin(pos))
    assert not out[..., 2:].any()
    q, k = torch.randn(1, 1, 1, hd), torch.randn(1, 1, 1, hd)

    def score(i: int, j: int) -> torch.Tensor:
        qi = apply_rope(q, freqs[i].view(1, 1, 1, -1))
        kj = apply_rope(k, freqs[j].view(1, 1, 1, -1))
        return (qi * kj).sum()

    torch.testing.assert_close(score(3, 1), score(12, 10))


def test_bad_inputs_fail_clearly():
    m = make(small_cfg())
    tokens = torch.randint(0, 101, (2, 4))
    with pytest.raises(ValueError, match="modality_features"):
        m(tokens, torch.randn(2, 2, 64))
    cache = m.new_cache(2, 5)
    with pytest.raises(ValueError, match="overflows"):
        m(torch.randint(0, 101, (2, 6)), cache=cache)
    with pytest.raises(ValueError, match="attention_mask"):
        m(tokens, attention_mask=torch.ones(2, 7))
    with pytest.raises(ValueError, match="batch"):
        m(torch.randint(0, 101, (3, 2)), cache=m.new_cache(2, 4))
