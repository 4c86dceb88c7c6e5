"""Meta <-> HF translation: names, the RoPE row permutation and configs, without any files."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from llama.config import llama_tiny
from llama.hf_meta import (
    WeightsError,
    base_weight_shapes,
    config_from_hf,
    config_from_params,
    hf_config_dict,
    hf_name_to_meta,
    hf_to_meta_state_dict,
    meta_name_to_hf,
    meta_params_dict,
    meta_to_hf_state_dict,
    permute_meta_to_hf,
)

CFG = dataclasses.replace(llama_tiny(), vocab_size=96, dim=64, n_kv_heads=2)


def test_every_base_name_maps_both_ways() -> None:
    for name in base_weight_shapes(CFG):
        assert hf_name_to_meta(meta_name_to_hf(name)) == name
    assert hf_name_to_meta("model.layers.0.self_attn.rotary_emb.inv_freq") is None
    with pytest.raises(WeightsError, match="no Hugging Face name"):
        meta_name_to_hf("layers.0.attention.gate")


def test_permutation_moves_rope_pairs_into_halves_and_round_trips() -> None:
    head_dim = 4  # rows of one head: (x0, y0, x1, y1) -> (x0, x1, y0, y1)
    w = torch.arange(2 * head_dim, dtype=torch.float32)[:, None].expand(-1, 3)
    assert permute_meta_to_hf(w, n_heads=2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    gen = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=gen) for k, s in base_weight_shapes(CFG).items()}
    hf = meta_to_hf_state_dict(sd, CFG)
    back = hf_to_meta_state_dict(hf, CFG)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    assert torch.equal(hf["model.layers.0.self_attn.v_proj.weight"],
                       sd["layers.0.attention.wv.weight"])  # only wq/wk are permuted


def _shape_fields(cfg) -> tuple:
    return (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.kv_heads, cfg.hidden_dim, cfg.vocab_size,
            cfg.norm_eps, cfg.rope_theta)


def test_configs_round_trip_through_both_layouts() -> None:
    from_meta = config_from_params(meta_params_dict(CFG), "params.json")
    from_hf = config_from_hf(hf_config_dict(CFG, torch.float32), "config.json")
    assert _shape_fields(from_meta) == _shape_fields(from_hf) == _shape_fields(CFG)
    odd = dataclasses.replace(CFG, ffn_hidden_dim=100)  # no multiple_of rule gives 100
    assert meta_params_dict(odd)["ffn_hidden_dim"] == 100
    assert config_from_params(meta_params_dict(odd), "params.json").hidden_dim == 100
    with pytest.raises(WeightsError, match="config.json: model_type is 'gpt2'"):
        config_from_hf({"model_type": "gpt2"}, "config.json")
    with pytest.raises(WeightsError, match="params.json: missing field 'dim'"):
        config_from_params({"n_layers": 2, "vocab_size": 96}, "params.json")
