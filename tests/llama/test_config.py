"""llama.config training recipes: per-stage defaults as data, one per preset."""

from __future__ import annotations

import pytest

from llama.config import PRESETS, RECIPES, TRAIN_DEFAULTS, TrainRecipe, get_recipe


def test_every_preset_has_a_recipe_that_resolves_every_flag_per_stage():
    assert set(RECIPES) == set(PRESETS)
    for name in PRESETS:
        for stage in (1, 2, 3):
            assert set(get_recipe(name).for_stage(stage)) == set(TRAIN_DEFAULTS)


def test_stage_values_win_over_common_ones_and_those_over_the_defaults():
    r = TrainRecipe(common={"lr": 1.0, "epochs": 2}, stages={2: {"lr": 0.5}})
    assert r.for_stage(1)["lr"] == 1.0 and r.for_stage(2)["lr"] == 0.5
    assert r.for_stage(3)["epochs"] == 2
    assert r.for_stage(3)["batch_size"] == TRAIN_DEFAULTS["batch_size"]


def test_tiny_recipe_differs_per_stage_and_names_its_data_size():
    tiny = get_recipe("tiny")
    assert tiny.data_n and tiny.data_n > 0
    assert tiny.for_stage(1)["bridge_lr_scale"] < 1.0
    assert tiny.for_stage(1)["replay"] == 0.0 < tiny.for_stage(3)["replay"]


def test_bad_recipes_and_names_are_refused():
    with pytest.raises(ValueError, match="unknown training flags"):
        TrainRecipe(common={"learning_rate": 1.0}).for_stage(1)
    with pytest.raises(ValueError, match="stage must be"):
        get_recipe("tiny").for_stage(4)
    with pytest.raises(ValueError, match="known: tiny"):
        get_recipe("nope")
