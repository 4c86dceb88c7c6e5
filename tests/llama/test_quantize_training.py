"""Training with int8 frozen projections (`train_m2ugen.py --dtype int8`, llama.quantize).

The int8 model's gradients must be those of a float32 model whose frozen projections hold the
dequantized int8 weights: the int8 kernel runs at the input's precision while gradients are on,
and the backward reaches the inputs through each layer's dequantized weight.
"""

from __future__ import annotations

import copy

import pytest
import torch

from llama.config import AUD_TOKENS
from llama.encoders import EncodedAudio
from llama.m2ugen import M2UGen
from llama.quantize import Int8Linear, _Int8MatmulFn, quantize_backbone_

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pair():
    """(int8 model, float32 model with the dequantized weights), tuned parts non-zero."""
    torch.manual_seed(0)
    ref = M2UGen.from_pretrained(None, preset="tiny", load_decoder=False)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith((".bias", ".gate")) or "_l2." in name:
                p.normal_(0, 0.05)
    q = copy.deepcopy(ref)
    assert quantize_backbone_(q, "int8") > 0
    ref_modules = dict(ref.backbone.named_modules())
    n = 0
    with torch.no_grad():
        for name, module in q.backbone.named_modules():
            if isinstance(module, Int8Linear):
                ref_modules[name].weight.copy_(module.dequantize(torch.float32))
                n += 1
    assert n == 7 * ref.cfg.llama.n_layers + 1  # seven projections per layer + the LM head
    return q, ref


def _batch(model: M2UGen) -> dict:
    g = torch.Generator().manual_seed(1)
    cfg = model.cfg
    ids = torch.randint(3, cfg.llama.vocab_size, (2, 24), generator=g)
    aud = torch.as_tensor(model.aud_ids)
    ids[1, -len(AUD_TOKENS):] = aud
    labels = ids.clone()
    labels[:, :6] = -100
    states = torch.randn(2, cfg.mert.num_hidden_states, 30, cfg.mert.hidden_size, generator=g)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    image = torch.randn(1, cfg.vit.num_tokens, cfg.vit.hidden_size, generator=g)
    video = torch.randn(1, cfg.vivit.num_tokens, cfg.vivit.hidden_size, generator=g)
    positions = torch.arange(24 - len(AUD_TOKENS), 24)[None]
    with torch.no_grad():
        hidden = model.projector_hidden(ids[1:])
        shape = model.project_music(hidden, positions).shape
    return dict(input_ids=ids, labels=labels,
                media={"audio": ([0, 1], EncodedAudio(states, mask)), "image": ([1], image),
                       "video": ([0], video)},
                music_rows=torch.tensor([1]), aud_positions=positions,
                music_targets=torch.randn(shape, generator=g))


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_every_trainable_gradient_equals_the_dequantized_float32_models(pair, stage):
    q, ref = pair
    batch = _batch(ref)
    grads = []
    for model in (q, ref):
        names = model.set_stage(stage)
        model.train()
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        params = dict(model.named_parameters())
        grads.append({n: params[n].grad for n in names})
    assert set(grads[0]) == set(grads[1]) and len(grads[0]) > 10
    for name, g_ref in grads[1].items():
        g = grads[0][name]
        assert g is not None and g_ref is not None, name
        if name == "bridges.audio.attention.bias":  # softmax is shift-invariant: exactly 0
            assert float(g.abs().max()) < 1e-9 and float(g_ref.abs().max()) < 1e-9
            continue
        scale = float(g_ref.abs().max())
        assert scale > 0, name  # every trainable tensor really receives a gradient
        assert float((g - g_ref).abs().max()) <= 1e-5 * scale, name
    # nothing frozen in the int8 model became trainable or received a gradient
    for name, buf in q.backbone.named_buffers():
        assert not buf.requires_grad, name


def test_backward_dequantizes_one_layer_at_a_time(monkeypatch):
    """The backward builds each layer's float weight only while that layer's gradient is
    computed: at most one dequantized matrix exists at once."""
    live, peak = [0], [0]
    real = _Int8MatmulFn.backward

    def counting(ctx, grad):
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        try:
            return real(ctx, grad)
        finally:
            live[0] -= 1

    monkeypatch.setattr(_Int8MatmulFn, "backward", staticmethod(counting))
    layers = [Int8Linear.from_linear(torch.nn.Linear(16, 16)) for _ in range(4)]
    x = torch.randn(3, 16, requires_grad=True)
    h = x
    for layer in layers:
        h = layer(h)
    h.sum().backward()
    assert peak[0] == 1 and x.grad is not None


def test_inference_keeps_the_fast_bfloat16_kernel_path():
    """Without gradients the int8 layer still casts activations to bfloat16 (the inference
    numerics are unchanged by the training path)."""
    lin = Int8Linear.from_linear(torch.nn.Linear(32, 8))
    x = torch.randn(4, 32)
    with torch.no_grad():
        fast = lin(x)
        exact = x @ lin.dequantize().T + lin.bias
    train = lin(x)
    assert torch.allclose(train, exact, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(fast, exact, rtol=1e-5, atol=1e-6)  # bfloat16 activations
    assert torch.allclose(fast, exact, rtol=0, atol=0.05)
