"""int8 weight-only quantization and half-precision casting of the backbone (llama.quantize)."""

from __future__ import annotations

import copy

import pytest
import torch

from llama.backbone import Transformer
from llama.config import LlamaConfig
from llama.generation import generate
from llama.quantize import (
    Int8Linear,
    QuantizationError,
    cast_for_inference,
    check_supported,
    load_quantized,
    prepare_for_inference,
    quantize_backbone_,
    quantize_weight,
    save_quantized,
    weight_nbytes,
)
from llama.weights import load_backbone, save_hf, save_meta

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw) -> LlamaConfig:
    base = dict(dim=64, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=300, max_seq_len=64,
                lora_rank=4, adapter_layers_per_modality=1)
    base.update(kw)
    return LlamaConfig(**base)


def _tuned_model(seed: int = 0) -> Transformer:
    """A backbone whose LoRA, biases and gates are non-zero (as after training) + new tokens."""
    torch.manual_seed(seed)
    m = Transformer(_cfg()).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith((".bias", ".gate")) or "_l2." in name:
                p.normal_(0, 0.05)
    m.add_tokens(8)
    return m


def test_quantize_weight_is_per_channel_and_never_clips():
    w = torch.randn(16, 32) * torch.logspace(-3, 1, 16)[:, None]
    w[3] = 0.0
    q, s = quantize_weight(w)
    assert q.dtype == torch.int8 and s.dtype == torch.bfloat16 and s.shape == (16,)
    assert int(q.abs().max()) <= 127 and bool((q[3] == 0).all())
    err = (q.float() * s.float()[:, None] - w).abs().amax(1)
    assert bool((err <= s.float() / 2 + 1e-12).all())  # rounding error <= half a step per row
    assert bool((q.abs().amax(1)[torch.arange(16) != 3] >= 126).all())  # range is used


def test_quantize_weight_in_row_blocks_equals_one_piece(monkeypatch):
    """Blocks bound the float32 temporaries while loading; the result must not depend on them,
    and a float32 input is never modified."""
    import llama.quantize as quant

    w = torch.randn(300, 70)
    before = w.clone()
    whole = quantize_weight(w)
    monkeypatch.setattr(quant, "_BLOCK_ELEMENTS", 70 * 16)  # 19 blocks, the last one partial
    blocks = quantize_weight(w)
    assert torch.equal(whole[0], blocks[0]) and torch.equal(whole[1], blocks[1])
    assert torch.equal(w, before)


def test_int8_linear_matches_dequantized_matmul_plus_bias():
    lin = torch.nn.Linear(48, 40)
    q = Int8Linear.from_linear(lin)
    x = torch.randn(2, 5, 48)
    ref = x.bfloat16().float() @ q.dequantize().T
    y = q(x)
    assert y.dtype == torch.float32 and y.shape == (2, 5, 40)
    torch.testing.assert_close(y - lin.bias, ref, atol=2e-2, rtol=1e-2)
    assert torch.equal(q.weight, q.dequantize())


def test_quantized_backbone_keeps_float_parts_and_agrees_with_float():
    m = _tuned_model()
    q = copy.deepcopy(m)
    n = quantize_backbone_(q)
    assert n == 4 * 7 + 1
    assert quantize_backbone_(q) == 0  # idempotent
    attn = q.layers[0].attention
    assert isinstance(attn.wq, Int8Linear) and attn._q[0] is attn.wq  # hot-path tuple re-pointed
    # Tuned parts are untouched float parameters under their old names.
    names = dict(q.named_parameters())
    for name in ("layers.0.attention.wq.bias", "layers.0.attention.lora_wq_l2.weight",
                 "layers.3.attention.gate", "norm.weight", "new_output", "new_tok_embeddings"):
        assert names[name].dtype == torch.float32
        torch.testing.assert_close(names[name], dict(m.named_parameters())[name], atol=0, rtol=0)
    toks = torch.randint(0, m.vocab_size, (2, 12))
    feats = torch.randn(2, 3, 64)
    ref = m(toks, modality_features=feats)
    out = q(toks, modality_features=feats)
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9
    prompts = toks[:, :6].tolist()
    assert generate(q, prompts, 6, modality_features=feats) == generate(
        m, prompts, 6, modality_features=feats)
    assert weight_nbytes(q, read_per_token=True) < 0.45 * weight_nbytes(m, read_per_token=True)


def test_lora_and_bias_are_applied_exactly_on_top_of_the_int8_base():
    m = _tuned_model()
    q = copy.deepcopy(m)
    quantize_backbone_(q)
    ff_q = q.layers[1].feed_forward
    x = torch.randn(1, 3, 64)
    base = Int8Linear(ff_q.w1.qweight, ff_q.w1.scales, None)(x)
    lora = ff_q.lora_w1_l2(ff_q.lora_w1_l1(x))
    from llama.lora import linear

    torch.testing.assert_close(linear(x, *ff_q._1), base + ff_q.w1.bias + lora, atol=0, rtol=0)


def test_int8_with_half_frozen_weights_and_float32_tuned_parts():
    """The composed model's layout (M2UGen(dtype=bf16, quantize="int8")): frozen weights in
    bf16, tuned parts (LoRA, biases, norms, gates) kept float32; the int8 layers must compute in
    the frozen dtype like the nn.Linear they replace, so attention sees one dtype."""
    from llama.lora import keep_peft_float32

    m = _tuned_model().to(torch.bfloat16)
    keep_peft_float32(m)
    q = copy.deepcopy(m)
    quantize_backbone_(q)
    assert q.layers[0].attention.wq.bias.dtype == torch.float32
    toks = torch.randint(0, m.vocab_size, (2, 12))
    feats = torch.randn(2, 3, 64)
    ref, out = m(toks, modality_features=feats), q(toks, modality_features=feats)
    assert out.dtype == ref.dtype
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.8
    assert [len(x) for x in generate(q, toks[:, :6].tolist(), 4, modality_features=feats)] == [
        4, 4]  # the KV-cache path (cache in bf16) runs too


def test_cast_for_inference_bf16_and_bf16_plus_int8():
    m = _tuned_model()
    toks = torch.randint(0, m.vocab_size, (1, 10))
    ref = m(toks)
    b = cast_for_inference(copy.deepcopy(m), "bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in b.parameters())
    assert b.new_cache(1, 16).k[0].dtype == torch.bfloat16
    assert (b(toks).argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9
    bq = prepare_for_inference(copy.deepcopy(m), "bfloat16", "int8")
    assert isinstance(bq.output, Int8Linear) and bq.output.weight.dtype == torch.bfloat16
    assert (bq(toks).argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9


@pytest.mark.parametrize("mode,device,dtype,match", [
    ("int4", "cpu", "float32", "--quantize 'int4' is not supported"),
    ("int8", "cpu", "float64", "--dtype 'float64' is not supported"),
    ("int8", "meta", "float32", "runs on cpu or cuda devices, not 'meta'"),
])
def test_unsupported_requests_fail_with_one_line(mode, device, dtype, match):
    with pytest.raises(QuantizationError, match=match) as info:
        check_supported(mode, device, dtype)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_prepare_rejects_before_changing_the_model():
    m = _tuned_model()
    with pytest.raises(QuantizationError):
        prepare_for_inference(m, "float64", "int8")
    assert m.tok_embeddings.weight.dtype == torch.float32 and isinstance(
        m.output, torch.nn.Linear)


@pytest.mark.parametrize("groups", ["one", "per-tensor"])
@pytest.mark.parametrize("layout", ["meta", "hf"])
def test_load_backbone_quantizes_while_streaming(tmp_path, layout, groups, monkeypatch):
    """per-tensor: every tensor read through its own mapping (as 7B matrices are)."""
    import llama.weights

    torch.manual_seed(1)
    cfg = _cfg(lora_rank=0, adapter_layers_per_modality=0)
    m = Transformer(cfg).eval()
    (save_meta if layout == "meta" else save_hf)(m, cfg, tmp_path / layout)
    over = dict(lora_rank=4, adapter_layers_per_modality=1)
    if groups == "per-tensor":
        monkeypatch.setattr(llama.weights, "_TRANSFORM_GROUP_BYTES", 1)
    loaded = load_backbone(tmp_path / layout, config_overrides=over, quantize="int8")
    expected = copy.deepcopy(load_backbone(tmp_path / layout, config_overrides=over))
    quantize_backbone_(expected)
    assert isinstance(loaded.layers[2].feed_forward.w2, Int8Linear)
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert float(loaded.layers[0].attention.wq.bias.detach().abs().sum()) == 0.0
    sd_a, sd_b = loaded.state_dict(), expected.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        if "lora_" not in k and "prefix_query" not in k:  # random inits differ
            assert torch.equal(sd_a[k], sd_b[k]), k
    with pytest.raises(QuantizationError):
        load_backbone(tmp_path / layout, quantize="int3")


def test_save_and_load_quantized_round_trip(tmp_path):
    q = _tuned_model()
    quantize_backbone_(q)
    path = save_quantized(q, tmp_path / "backbone.int8.safetensors")
    r = load_quantized(path)
    toks = torch.randint(0, q.vocab_size, (2, 9))
    feats = torch.randn(2, 3, 64)
    torch.testing.assert_close(r(toks, modality_features=feats), q(toks, modality_features=feats),
                               atol=0, rtol=0)
    with pytest.raises(QuantizationError, match="no int8 projections"):
        save_quantized(_tuned_model(), tmp_path / "float.safetensors")
