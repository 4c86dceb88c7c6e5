"""Weight loading and saving: parity with transformers, Meta shards, HF variants, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM

from llama.backbone import Transformer
from llama.generation import generate
from llama.weights import (
    WeightsError,
    base_weight_shapes,
    hf_to_meta_state_dict,
    load_backbone,
    load_base_state_dict,
    meta_to_hf_state_dict,
    read_config,
    save_hf,
    save_meta,
)

VOCAB = 256


def _hf_model(kv_heads: int, seed: int) -> LlamaForCausalLM:
    cfg = HFLlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=kv_heads, rms_norm_eps=1e-5,
        rope_theta=10000.0, max_position_embeddings=128, initializer_range=0.2,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights, so a misplaced norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module", params=[4, 2], ids=["plain", "gqa"])
def hf_pair(request, tmp_path_factory) -> tuple[LlamaForCausalLM, Path]:
    model = _hf_model(request.param, seed=request.param)
    folder = tmp_path_factory.mktemp(f"hf{request.param}")
    model.save_pretrained(folder)
    return model, folder


def _tokens(batch: int, length: int, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_logits_match_transformers(hf_pair) -> None:
    hf, folder = hf_pair
    ours = load_backbone(folder).eval()
    assert ours.config.kv_heads == hf.config.num_key_value_heads
    tokens = _tokens(2, 20)
    with torch.no_grad():
        ref = hf(tokens).logits
        got = ours(tokens)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    rel = (got - ref).abs().max() / ref.abs().max()
    assert rel < 1e-4, f"relative logit error {rel:.2e}"


def test_greedy_matches_transformers_generate(hf_pair) -> None:
    hf, folder = hf_pair
    ours = load_backbone(folder).eval()
    prompt = _tokens(1, 7, seed=3)[0].tolist()
    with torch.no_grad():
        ref = hf.generate(
            torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None,
            pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        )[0, len(prompt):].tolist()
    got = generate(ours, [prompt], max_new_tokens=12)[0]
    assert got == ref
    assert len(set(got)) > 1  # a degenerate continuation would prove little


def test_meta_load_matches_hf_load_and_permutation(hf_pair, tmp_path) -> None:
    _, folder = hf_pair
    cfg, sd, _ = load_base_state_dict(folder)
    save_meta(sd, cfg, tmp_path / "meta")
    from_meta = load_backbone(tmp_path / "meta").state_dict()
    from_hf = load_backbone(folder).state_dict()
    for k in base_weight_shapes(cfg):
        assert torch.equal(from_meta[k], from_hf[k]), k
    # permuting to HF and back is the identity, and really permutes wq/wk rows
    back = hf_to_meta_state_dict(meta_to_hf_state_dict(sd, cfg), cfg)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    hf_sd = meta_to_hf_state_dict(sd, cfg)
    assert not torch.equal(hf_sd["model.layers.0.self_attn.k_proj.weight"],
                           sd["layers.0.attention.wk.weight"])


def _random_meta(tmp: Path, dtype=torch.float32, kv_heads: int = 2, shards: int = 1):
    from llama.config import llama_tiny
    import dataclasses

    cfg = dataclasses.replace(llama_tiny(), vocab_size=96, dim=64, n_kv_heads=kv_heads)
    gen = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=gen).to(dtype) for k, s in base_weight_shapes(cfg).items()}
    save_meta(sd, cfg, tmp, n_shards=shards)
    return cfg, sd


def test_two_shard_meta_loads_like_one_shard(tmp_path) -> None:
    cfg, sd = _random_meta(tmp_path / "one", torch.bfloat16)
    save_meta(sd, cfg, tmp_path / "two", n_shards=2)
    assert sorted(p.name for p in (tmp_path / "two").glob("*.pth")) == [
        "consolidated.00.pth", "consolidated.01.pth"]
    shard0 = torch.load(tmp_path / "two" / "consolidated.00.pth", weights_only=True)
    assert shard0["layers.0.attention.wq.weight"].shape == (32, 64)  # column-parallel: dim 0
    assert shard0["layers.0.attention.wo.weight"].shape == (64, 32)  # row-parallel: dim 1
    assert shard0["tok_embeddings.weight"].shape == (96, 32)
    one = load_backbone(tmp_path / "one").state_dict()
    two = load_backbone(tmp_path / "two").state_dict()
    for k in sd:
        assert one[k].dtype == torch.bfloat16, k
        assert torch.equal(one[k], two[k]) and torch.equal(one[k], sd[k]), k


def test_dtype_device_and_tuning_parameters(tmp_path) -> None:
    cfg, sd = _random_meta(tmp_path / "m", torch.bfloat16)
    kept = load_backbone(tmp_path / "m")
    assert kept.tok_embeddings.weight.dtype == torch.bfloat16
    model = load_backbone(tmp_path / "m", dtype=torch.float32, device="cpu",
                          config_overrides={"lora_rank": 4})
    assert model.config.lora_rank == 4 and model.config.vocab_size == 96
    assert torch.equal(model.layers[1].feed_forward.w2.weight,
                       sd["layers.1.feed_forward.w2.weight"].float())
    params = dict(model.named_parameters())
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params.values())
    assert params["layers.0.attention.lora_wq_l1.weight"].shape == (4, 64)
    assert params["layers.0.attention.lora_wq_l1.weight"].abs().sum() > 0  # nn.Linear init
    assert torch.isfinite(params["prefix_query.weight"]).all()
    assert params["prefix_query.weight"].std() > 0.1
    for name, p in params.items():
        if name.endswith(".bias") or "_l2." in name or name.endswith(".gate"):
            assert not p.any(), name
    # loading gives the same function as a model built and filled in memory
    ref = Transformer(model.config)
    ref.load_state_dict({**ref.state_dict(), **{k: v.float() for k, v in sd.items()}})
    tokens = _tokens(1, 9, vocab=96)
    with torch.no_grad():
        assert torch.allclose(model(tokens), ref(tokens), atol=1e-5)


def test_hf_variants_bin_sharded_tied(tmp_path) -> None:
    cfg, sd = _random_meta(tmp_path / "m")
    ref = load_backbone(tmp_path / "m").state_dict()
    save_hf(sd, cfg, tmp_path / "sharded", max_shard_bytes=100_000)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    # .bin layout
    (tmp_path / "bin").mkdir()
    shutil.copy(tmp_path / "sharded" / "config.json", tmp_path / "bin" / "config.json")
    torch.save(meta_to_hf_state_dict(sd, cfg), tmp_path / "bin" / "pytorch_model.bin")
    for sub in ("sharded", "bin"):
        got = load_backbone(tmp_path / sub).state_dict()
        assert all(torch.equal(got[k], ref[k]) for k in sd), sub
    # tied embeddings: no lm_head in the file
    (tmp_path / "tied").mkdir()
    conf = json.loads((tmp_path / "sharded" / "config.json").read_text())
    conf["tie_word_embeddings"] = True
    (tmp_path / "tied" / "config.json").write_text(json.dumps(conf))
    hf_sd = {k: v for k, v in meta_to_hf_state_dict(sd, cfg).items() if k != "lm_head.weight"}
    save_file(hf_sd, str(tmp_path / "tied" / "model.safetensors"), metadata={"format": "pt"})
    tied = load_backbone(tmp_path / "tied")
    assert torch.equal(tied.output.weight, sd["tok_embeddings.weight"])


def test_read_config_meta_vocab_from_embedding(tmp_path) -> None:
    cfg, _ = _random_meta(tmp_path / "m")
    params = json.loads((tmp_path / "m" / "params.json").read_text())
    params["vocab_size"] = -1  # as in Meta's published params.json
    (tmp_path / "m" / "params.json").write_text(json.dumps(params))
    layout, got = read_config(tmp_path / "m")
    assert layout == "meta" and got.vocab_size == 96 and got.hidden_dim == cfg.hidden_dim


# ---------------------------------------------------------------------------------------------
# Bad input


def test_folder_of_neither_layout(tmp_path) -> None:
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(WeightsError, match="neither a Meta"):
        load_backbone(tmp_path)
    with pytest.raises(WeightsError, match="no such weight folder"):
        load_backbone(tmp_path / "absent")


def test_missing_meta_shard(tmp_path) -> None:
    _random_meta(tmp_path / "m", shards=2)
    (tmp_path / "m" / "consolidated.00.pth").unlink()
    with pytest.raises(WeightsError, match=r"missing shard\(s\) consolidated\.00\.pth"):
        load_backbone(tmp_path / "m")
    _random_meta(tmp_path / "n", shards=2)
    (tmp_path / "n" / "consolidated.01.pth").unlink()  # last shard gone: shapes reveal it
    with pytest.raises(WeightsError, match=r"consolidated\.00\.pth: .* has shape"):
        load_backbone(tmp_path / "n")


def test_shape_mismatch_names_file_and_weight(tmp_path) -> None:
    _random_meta(tmp_path / "m")
    params = json.loads((tmp_path / "m" / "params.json").read_text())
    params["vocab_size"] = 100
    (tmp_path / "m" / "params.json").write_text(json.dumps(params))
    with pytest.raises(WeightsError, match=r"consolidated\.00\.pth: tok_embeddings\.weight has "
                       r"shape \(96, 64\), the config implies \(100, 64\)"):
        load_backbone(tmp_path / "m")


def test_hf_bad_inputs(tmp_path) -> None:
    cfg, sd = _random_meta(tmp_path / "m")
    save_hf(sd, cfg, tmp_path / "sharded", max_shard_bytes=100_000)
    victim = sorted((tmp_path / "sharded").glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(WeightsError, match=f"{victim.name}: missing shard"):
        load_backbone(tmp_path / "sharded")
    save_hf(sd, cfg, tmp_path / "h")
    (tmp_path / "h" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match=r"model\.safetensors: cannot read safetensors"):
        load_backbone(tmp_path / "h")
    conf = json.loads((tmp_path / "h" / "config.json").read_text())
    (tmp_path / "h" / "config.json").write_text(json.dumps({**conf, "model_type": "gpt2"}))
    with pytest.raises(WeightsError, match=r"config\.json: model_type is 'gpt2'"):
        load_backbone(tmp_path / "h")
    (tmp_path / "h" / "config.json").write_text("{broken")
    with pytest.raises(WeightsError, match=r"config\.json: cannot read JSON"):
        load_backbone(tmp_path / "h")


def test_corrupt_meta_shard_and_bad_override(tmp_path) -> None:
    _random_meta(tmp_path / "m")
    with pytest.raises(WeightsError, match="unknown LlamaConfig field"):
        load_backbone(tmp_path / "m", config_overrides={"lora_rnk": 2})
    (tmp_path / "m" / "consolidated.00.pth").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match=r"consolidated\.00\.pth: cannot read PyTorch weights"):
        load_backbone(tmp_path / "m")


def test_a_crash_while_saving_keeps_the_previous_files_whole(tmp_path, monkeypatch) -> None:
    import safetensors.torch

    cfg, sd = _random_meta(tmp_path / "m")
    save_hf(sd, cfg, tmp_path / "h")
    before = {p.name: p.read_bytes() for p in (tmp_path / "h").iterdir()}
    before_meta = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    doubled = {k: t * 2 for k, t in sd.items()}

    def half_write(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_write)
    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_hf(doubled, cfg, tmp_path / "h")
    with pytest.raises(OSError, match="disk full"):
        save_meta(doubled, cfg, tmp_path / "m")
    assert {p.name: p.read_bytes() for p in (tmp_path / "h").iterdir()} == before
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before_meta
    monkeypatch.undo()
    _, back, _ = load_base_state_dict(tmp_path / "h")
    assert all(torch.equal(back[k], sd[k]) for k in sd)
