"""LoRA scaling and the trainable set: the default is the published, unscaled LoRA bit for bit;
alpha scales the LoRA branch and nothing else; old configurations load with the default."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from llama.backbone import Transformer
from llama.config import LlamaConfig, preset_tiny
from llama.lora import LoraLinear, linear, parameter_group, set_trainable

pytestmark = pytest.mark.usefixtures("one_thread")


def small_cfg(**kw) -> LlamaConfig:
    base = dict(dim=64, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=101, multiple_of=16,
                max_seq_len=32, lora_rank=4, adapter_layers_per_modality=1)
    return LlamaConfig(**{**base, **kw})


def tuned(cfg: LlamaConfig) -> Transformer:
    """A model whose LoRA, biases and gates are nonzero (as after training), seeded."""
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if parameter_group(name) in ("lora", "bias", "gates"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def projections(model: Transformer) -> list[LoraLinear]:
    out = []
    for layer in model.layers:
        a, f = layer.attention, layer.feed_forward
        out += [a._q, a._k, a._v, a._o, f._1, f._2, f._3]
    return out


def test_default_is_rank_16_with_scale_exactly_one():
    cfg = LlamaConfig()
    assert cfg.lora_rank == 16 and cfg.lora_alpha is None and cfg.lora_scale == 1.0
    assert small_cfg(lora_alpha=4.0).lora_scale == 1.0  # alpha = rank: also no scaling
    assert small_cfg(lora_alpha=8.0).lora_scale == 2.0


def test_default_forward_is_the_unscaled_forward_bit_for_bit():
    """The published formula, y = W x + b + l2(l1(x)), with no multiply on the LoRA branch."""
    model = tuned(small_cfg())
    x = torch.randn(2, 5, 64)
    for proj in projections(model):
        assert proj.scale == 1.0
        xin = x if proj.base.in_features == 64 else torch.randn(2, 5, proj.base.in_features)
        b = proj.base.bias
        published = F.linear(xin, proj.base.weight, b) + F.linear(
            F.linear(xin, proj.l1.weight), proj.l2.weight)
        assert torch.equal(linear(xin, *proj), published)
    # and the whole model with alpha given equal to the rank computes the same bits
    same = Transformer(small_cfg(lora_alpha=4.0)).eval()
    same.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 101, (2, 7))
    assert torch.equal(model(tokens), same(tokens))


def test_alpha_scales_the_lora_branch_and_nothing_else():
    plain = tuned(small_cfg())
    scaled = Transformer(small_cfg(lora_alpha=12.0)).eval()  # scale 3
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(3, 64)
    for p, s in zip(projections(plain), projections(scaled)):
        assert s.scale == 3.0
        xin = x if p.base.in_features == 64 else torch.randn(3, p.base.in_features)
        base = linear(xin, p.base)
        branch = linear(xin, *p) - base
        torch.testing.assert_close(linear(xin, *s), base + 3.0 * branch)
    tokens = torch.randint(0, 101, (1, 6))
    assert not torch.allclose(plain(tokens), scaled(tokens))
    # With the LoRA up matrices at zero (a fresh model) alpha changes nothing.
    fresh_a, fresh_b = Transformer(small_cfg()).eval(), Transformer(small_cfg(lora_alpha=40.0))
    fresh_b.load_state_dict(fresh_a.state_dict())
    assert torch.equal(fresh_a(tokens), fresh_b.eval()(tokens))


def test_bad_lora_values_are_refused():
    with pytest.raises(ValueError, match="lora_alpha"):
        small_cfg(lora_alpha=0.0)
    with pytest.raises(ValueError, match="lora_rank"):
        small_cfg(lora_rank=-1)


def test_rank_zero_has_no_lora_parameters():
    model = Transformer(small_cfg(lora_rank=0))
    assert not any(parameter_group(n) == "lora" for n, _ in model.named_parameters())
    assert "lora" not in {parameter_group(n) for n in set_trainable(model)}


def test_a_saved_config_without_lora_alpha_loads_with_the_published_scaling():
    from llama.m2ugen import config_from_dict

    saved = dataclasses.asdict(preset_tiny())
    assert saved["llama"]["lora_alpha"] is None  # written into config.json
    old = {**saved, "llama": {k: v for k, v in saved["llama"].items() if k != "lora_alpha"}}
    cfg = config_from_dict(old)
    assert cfg.llama.lora_alpha is None and cfg.llama.lora_scale == 1.0
    saved["llama"]["lora_alpha"] = 16.0
    assert config_from_dict(saved).llama.lora_scale == 2.0  # tiny's rank is 8
