"""The one key table: every key of the reference releases lands somewhere for a stated reason,
every learned parameter of our model comes from exactly one release key, and the rows that
describe transformers' own renames are what transformers really does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llama.release import keymap
from llama.release.infer import detect_layout, release_config
from llama.release.read import read_release

REF = Path(__file__).resolve().parents[1] / "published_reference"
COMP = REF / "components"


@pytest.fixture(scope="module", params=["m2ugen", "mumu", "m2ugen_audioldm2"])
def release(request):
    path = REF / request.param / "checkpoint.pth"
    state, args = read_release(path)
    layout = detect_layout(state, str(path))
    cfg = release_config(state, args, layout, path, llama_dir=str(COMP), paths={})
    return request.param, state, cfg


def _meta_model(cfg):
    from llama.m2ugen import M2UGen

    with torch.device("meta"):
        return M2UGen(cfg, device="meta", load_decoder=False)


def test_every_release_key_is_mapped_ignored_or_a_component(release):
    name, state, cfg = release
    mapped = keymap.map_keys(state, cfg.llama.vocab_size, cfg.llama.first_adapter_layer)
    assert mapped.unknown == []
    placed = (set(mapped.source.values()) | {k for ks in mapped.ignored.values() for k in ks}
              | {k for part in mapped.components.values() for k in part})
    assert placed == set(state)
    if name == "mumu":  # the never-trained video pooling of the newer release, with its reason
        why = keymap.ignored_reason("iu_vivit_rnn.weight_ih_l0", cfg.llama.first_adapter_layer)
        assert "never ran" in why and mapped.ignored[why]


def test_every_learned_parameter_comes_from_one_release_key(release):
    _, state, cfg = release
    mapped = keymap.map_keys(state, cfg.llama.vocab_size, cfg.llama.first_adapter_layer)
    model = _meta_model(cfg)
    params = {n: p for n, p in model.named_parameters()}
    assert set(mapped.ours) == set(params)
    for name, value in mapped.ours.items():
        assert tuple(value.shape) == tuple(params[name].shape), name


@pytest.mark.parametrize("release_key, ours", [
    ("mu_mert_agg.weight", "bridges.audio.agg.weight"),
    ("mu_mert_rnn.weight_hh_l0", "bridges.audio.rnn.weight_hh_l0"),
    ("mu_mert_attention.bias", "bridges.audio.attention.bias"),
    ("mu_mert_f1_1.weight", "bridges.audio.blocks.0.w1.weight"),
    ("iu_vit_f2_3.weight", "bridges.image.blocks.2.w2.weight"),
    ("iu_vivit_norm_2.weight", "bridges.video.blocks.1.norm.weight"),
    ("iu_vivit_proj.bias", "bridges.video.proj.bias"),
    ("llama.layers.3.attention.lora_wq_l1.weight", "backbone.layers.3.attention.lora_wq_l1.weight"),
    ("output_projector.tfm.encoder.layers.0.linear1.weight",
     "projector.tfm.encoder.layers.0.linear1.weight"),
])
def test_rules_read_like_the_table(release_key, ours):
    mapped = keymap.map_keys({release_key: torch.zeros(1)}, base_vocab=1, first_adapter_layer=0)
    assert mapped.source == {ours: release_key}


def test_vocabulary_rows_split_and_gates_flatten():
    state = {"llama.tok_embeddings.weight": torch.arange(12.0).reshape(6, 2),
             "llama.layers.0.attention.gate": torch.ones(1, 4, 1, 1),
             "llama.layers.2.attention.gate": torch.full((1, 4, 1, 1), 2.0)}
    mapped = keymap.map_keys(state, base_vocab=4, first_adapter_layer=1)
    assert mapped.ours["backbone.tok_embeddings.weight"].shape == (4, 2)
    assert torch.equal(mapped.ours["backbone.new_tok_embeddings"], state[
        "llama.tok_embeddings.weight"][4:])
    assert mapped.ours["backbone.layers.2.attention.gate"].shape == (4,)
    assert list(mapped.ignored.values()) == [["llama.layers.0.attention.gate"]]


def test_legacy_prefixes_and_unknown_keys():
    assert keymap.canonical_key("module.mu_mert_agg.weight") == "mu_mert_agg.weight"
    assert keymap.canonical_key("iu_vit_rnn.bias_hh_l0") == "iu_vivit_rnn.bias_hh_l0"
    assert keymap.canonical_key("iu_vit_proj.weight") == "iu_vit_proj.weight"
    mapped = keymap.map_keys({"mystery.weight": torch.zeros(1)}, 1, 0)
    assert mapped.unknown == ["mystery.weight"]


def test_component_legacy_rows_are_what_transformers_renames():
    """COMPONENT_LEGACY documents renames transformers' conversion mapping performs; if a
    transformers release stops doing one of them, this fails (and the table must change)."""
    from transformers import HubertConfig, HubertModel, ViTConfig, ViTModel
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, rename_source_key

    with torch.device("meta"):
        models = [HubertModel(HubertConfig.from_pretrained(COMP / "mert")),
                  ViTModel(ViTConfig.from_pretrained(COMP / "vit"), add_pooling_layer=False)]
    for row in keymap.COMPONENT_LEGACY:
        old, new = row.old.format(n=0), row.new.format(n=0)
        results = []
        for model in models:
            transforms = get_model_conversion_mapping(model)
            renames = [t for t in transforms if not isinstance(t, WeightConverter)]
            converters = [t for t in transforms if isinstance(t, WeightConverter)]
            results.append(rename_source_key(old, renames, converters)[0])
        assert new in results, (row, results)
        assert any(new in model.state_dict() for model in models), row


def test_layouts_name_their_chat_style():
    names = [layout.name for layout in keymap.LAYOUTS]
    assert names == ["mumu-llama", "m2ugen"]
    assert keymap.LAYOUTS[0].style.stop.aud == "after_run"
    assert "video" not in keymap.LAYOUTS[0].style.modalities
    assert keymap.LAYOUTS[1].style.stop.aud == "continue"
