"""Output projector: shapes per decoder, published parameter names, and that it can fit targets."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from llama.config import ProjectorConfig, get_preset
from llama.decoders import load_decoder, projector_config_for
from llama.projector import OutputProjector

LLM_DIM = 128  # llama_tiny().dim
CAPTIONS = ["a slow piano melody", "fast guitar song", "low organ music", "high flute tune"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["tiny", "tiny-audioldm2"])
def preset_and_decoder(request):
    cfg = get_preset(request.param)
    return cfg, load_decoder(cfg.decoder)


def test_output_shape_follows_the_decoder(preset_and_decoder):
    cfg, decoder = preset_and_decoder
    pcfg = projector_config_for(decoder, cfg.projector)
    n, d = decoder.condition_shape
    assert (pcfg.n_output_tokens, pcfg.output_dim) == (n, d)
    # Other projector knobs survive the replacement.
    assert dataclasses.replace(pcfg, n_output_tokens=128, output_dim=768) == dataclasses.replace(
        cfg.projector, n_output_tokens=128, output_dim=768
    )
    proj = OutputProjector(LLM_DIM, pcfg)
    out = proj(torch.randn(3, 8, LLM_DIM))
    assert out.shape == (3, n, d)
    assert decoder.targets(CAPTIONS[:3]).shape == out.shape


def test_decoder_shapes_are_the_published_layouts(preset_and_decoder):
    cfg, decoder = preset_and_decoder
    n_text = cfg.decoder.max_text_tokens
    if decoder.kind == "musicgen":
        assert decoder.condition_shape == (n_text, decoder.model.config.text_encoder.d_model)
    else:  # 128 x 1024 + 8 x 768 for the real model; same formula on the tiny one
        assert decoder.condition_shape == (1, n_text * decoder.t5_dim + 8 * decoder.gpt_dim)


def test_published_parameter_names_and_real_size():
    # docs/MODEL.md section 4: 512 wide, 4 heads, 4+4 layers, FFN 2048, MusicGen 128 x 768
    cfg = ProjectorConfig()
    proj = OutputProjector(4096, cfg)
    names = {n for n, _ in proj.named_parameters()}
    assert {"fc.weight", "fc.bias", "model.weight", "model.bias", "query_embs"} <= names
    assert any(n.startswith("tfm.encoder.layers.3.") for n in names)
    assert any(n.startswith("tfm.decoder.layers.3.") for n in names)
    assert not any(n.startswith("tfm.encoder.layers.4.") for n in names)
    assert proj.query_embs.shape == (1, 128, 512)
    assert proj.fc.weight.shape == (512, 4096) and proj.model.weight.shape == (768, 512)
    assert proj.tfm.encoder.layers[0].linear1.out_features == 2048
    assert proj.tfm.encoder.layers[0].norm_first is False  # published: post-norm


def test_input_embeddings_are_added_and_inputs_checked():
    cfg = dataclasses.replace(get_preset("tiny").projector, n_output_tokens=4, output_dim=6)
    proj = OutputProjector(LLM_DIM, cfg).eval()
    h, e = torch.randn(2, 8, LLM_DIM), torch.randn(2, 8, LLM_DIM)
    torch.testing.assert_close(proj(h, e), proj(h + e))
    with pytest.raises(ValueError, match="hidden states"):
        proj(torch.randn(2, 8, LLM_DIM + 1))
    with pytest.raises(ValueError, match="input_embs"):
        proj(h, e[:, :4])
    with pytest.raises(ValueError, match="n_output_tokens"):
        OutputProjector(LLM_DIM, dataclasses.replace(cfg, output_dim=0))


def test_projector_fits_decoder_targets(preset_and_decoder):
    """Stage-2 in miniature: MSE to 10x the decoder conditioning falls by >= 90%."""
    cfg, decoder = preset_and_decoder
    targets = decoder.targets(CAPTIONS)
    assert targets.abs().max() > 1.0  # x10 scale: non-trivial targets
    torch.manual_seed(0)
    proj = OutputProjector(LLM_DIM, projector_config_for(decoder, cfg.projector))
    inputs = torch.randn(len(CAPTIONS), 8, LLM_DIM)
    opt = torch.optim.AdamW(proj.parameters(), lr=5e-3, weight_decay=0.0)
    first = last = None
    for _ in range(400):
        loss = F.mse_loss(proj(inputs), targets)
        first = loss.item() if first is None else first
        last = loss.item()
        if last <= 0.1 * first:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert last <= 0.1 * first, f"MSE {first:.3f} -> {last:.3f}"
