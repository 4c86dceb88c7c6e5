"""Modality bridges: shapes, published maths, masking, pooling variants, gradients."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llama.bridges import (
    MusicBridge,
    ResidualBlock,
    TokenBridge,
    build_bridges,
)
from llama.config import get_preset

S, T, H, DIM = 5, 12, 16, 24


@pytest.fixture(scope="module")
def cfg():
    return get_preset("tiny")


def _states(b: int = 2, t: int = T, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, S, t, H, generator=g)


def test_build_bridges_shapes(cfg):
    torch.manual_seed(0)
    bridges = build_bridges(cfg)
    assert set(bridges) == {"audio", "image", "video"}
    m = cfg.mert
    audio = bridges["audio"](torch.randn(3, m.num_hidden_states, 7, m.hidden_size),
                             torch.ones(3, 7, dtype=torch.bool))
    image = bridges["image"](torch.randn(3, cfg.vit.num_tokens, cfg.vit.hidden_size))
    video = bridges["video"](torch.randn(2, cfg.vivit.num_tokens, cfg.vivit.hidden_size))
    assert audio.shape == (3, cfg.llama.dim) and image.shape == (3, cfg.llama.dim)
    assert video.shape == (2, cfg.llama.dim)
    assert len(bridges["audio"].blocks) == cfg.bridges.n_residual_blocks == 3


def test_residual_block_formula():
    torch.manual_seed(0)
    blk = ResidualBlock(DIM)
    x = torch.randn(4, DIM)
    n = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * blk.norm.weight
    want = x + blk.w2(F.silu(blk.w1(n)) * blk.w3(n))
    assert torch.allclose(blk(x), want, atol=1e-6)
    assert blk.w1.bias is None and blk.w1.weight.shape == (DIM, DIM)
    legacy = ResidualBlock(DIM, "layer")
    assert isinstance(legacy.norm, torch.nn.LayerNorm) and legacy.w2.bias is not None


def test_rnn_attention_pooling_matches_spec():
    torch.manual_seed(0)
    br = MusicBridge(H, S, DIM)
    hs = _states(1)
    frames = torch.einsum("bsth,s->bth", hs, br.agg.weight[0, :, 0]) + br.agg.bias
    out, _ = br.rnn(frames)
    w = torch.softmax(br.attention(out).squeeze(-1), dim=1)
    pooled = F.normalize((w[..., None] * out).sum(1), dim=-1)
    x = br.proj(pooled)
    for blk in br.blocks:
        x = blk(x)
    assert torch.allclose(br(hs), x, atol=1e-5)


def test_mean_pooling_is_mean_then_layer_mix():
    torch.manual_seed(0)
    br = MusicBridge(H, S, DIM, pooling="mean")
    assert not hasattr(br, "rnn") and not hasattr(br, "attention")
    hs = _states(1)
    pooled = F.normalize(br.agg(hs.mean(2)).squeeze(1), dim=-1)
    x = br.proj(pooled)
    for blk in br.blocks:
        x = blk(x)
    assert torch.allclose(br(hs), x, atol=1e-5)


@pytest.mark.parametrize("pooling", ["rnn-attention", "mean"])
def test_padding_does_not_change_a_clip(pooling):
    torch.manual_seed(0)
    br = MusicBridge(H, S, DIM, pooling=pooling)
    short = _states(1, t=5, seed=1)
    long = _states(1, t=T, seed=2)
    batch = torch.zeros(2, S, T, H)
    batch[0, :, :5] = short[0]
    batch[0, :, 5:] = 7.0  # garbage in the padding must be ignored
    batch[1] = long[0]
    mask = torch.zeros(2, T, dtype=torch.bool)
    mask[0, :5] = True
    mask[1] = True
    out = br(batch, mask)
    assert torch.allclose(out[0], br(short)[0], atol=1e-5)
    assert torch.allclose(out[1], br(long)[0], atol=1e-5)


def test_pooling_variants_differ():
    torch.manual_seed(0)
    a = MusicBridge(H, S, DIM, pooling="rnn-attention")
    torch.manual_seed(0)
    b = MusicBridge(H, S, DIM, pooling="mean")
    hs = _states(2)
    assert not torch.allclose(a(hs), b(hs), atol=1e-3)
    assert {"rnn.weight_ih_l0", "attention.weight"} <= set(a.state_dict())


def test_token_bridge_mixes_tokens():
    torch.manual_seed(0)
    br = TokenBridge(7, H, DIM)
    tok = torch.randn(2, 7, H)
    mixed = torch.einsum("bnh,n->bh", tok, br.agg.weight[0, :, 0]) + br.agg.bias
    pooled = F.normalize(mixed, dim=-1)
    x = br.proj(pooled)
    for blk in br.blocks:
        x = blk(x)
    assert torch.allclose(br(tok), x, atol=1e-5)
    with pytest.raises(ValueError, match="token features"):
        br(torch.randn(2, 6, H))


def test_bad_shapes_and_empty_mask_raise():
    br = MusicBridge(H, S, DIM)
    with pytest.raises(ValueError, match="S=4"):
        br(torch.randn(1, 4, T, H))
    with pytest.raises(ValueError, match="no real frames"):
        br(_states(1), torch.zeros(1, T, dtype=torch.bool))


def test_knn_hook_acts_on_the_normalised_feature():
    torch.manual_seed(0)
    br = TokenBridge(7, H, DIM)
    seen = []
    fixed = F.normalize(torch.ones(1, H), dim=-1)

    def knn(x):
        seen.append(x.norm(dim=-1))
        return fixed.expand_as(x)

    out = br(torch.randn(3, 7, H), knn=knn)
    assert torch.allclose(seen[0], torch.ones(3))
    assert torch.allclose(out, out[:1].expand_as(out))  # everything came from the hook's output


def test_gradients_reach_bridges_not_frozen_encoders(cfg):
    from llama.encoders import load_image_encoder, load_music_encoder

    torch.manual_seed(0)
    bridges = build_bridges(cfg)
    mert = load_music_encoder(cfg.mert)
    vit = load_image_encoder(cfg.vit)
    audio = mert.encode([np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1,
                         np.zeros(12000, np.float32)])
    image = vit.encode([np.zeros((8, 8, 3), np.uint8)])
    loss = bridges["audio"](*audio).pow(2).sum() + bridges["image"](image).pow(2).sum()
    loss.backward()
    for name in ("audio", "image"):
        for pname, p in bridges[name].named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (name, pname)
            assert p.grad.abs().sum() > 0, (name, pname)
    for p in list(mert.parameters()) + list(vit.parameters()):
        assert p.grad is None and not p.requires_grad


def test_config_selects_pooling_and_norm(cfg):
    c = cfg.replace(bridges=dataclasses.replace(cfg.bridges, music_pooling="mean",
                                                bridge_norm="layer"))
    b = build_bridges(c)
    assert b["audio"].pooling == "mean"
    assert isinstance(b["image"].blocks[0].norm, torch.nn.LayerNorm)
    with pytest.raises(ValueError, match="music_pooling"):
        MusicBridge(H, S, DIM, pooling="max")
