"""llama.config training settings and recipes: one dataclass of defaults, per-stage overrides as
data, one recipe per preset, values checked where they are defined."""

from __future__ import annotations

import dataclasses

import pytest

from llama.config import (
    PRESETS, RECIPES, TRAIN_SETTING_FIELDS, SettingError, TrainRecipe, TrainSettings, get_recipe,
)


def test_every_preset_has_a_recipe_that_resolves_every_setting_per_stage():
    assert set(RECIPES) == set(PRESETS)
    for name in PRESETS:
        for stage in (1, 2, 3):
            settings = get_recipe(name).for_stage(stage)
            assert isinstance(settings, TrainSettings)
            settings.check_stage(stage)


def test_stage_values_win_over_common_ones_and_those_over_the_defaults():
    r = TrainRecipe(common={"lr": 1.0, "epochs": 2}, stages={2: {"lr": 0.5}})
    assert r.for_stage(1).lr == 1.0 and r.for_stage(2).lr == 0.5
    assert r.for_stage(3).epochs == 2
    assert r.for_stage(3).batch_size == TrainSettings().batch_size
    # given values (the command line) win over both; None means "not given"
    assert r.for_stage(2, lr=0.1, epochs=None).lr == 0.1
    assert r.for_stage(2, lr=0.1, epochs=None).epochs == 2


def test_the_published_defaults_live_in_one_dataclass():
    assert TrainRecipe().for_stage(1) == TrainSettings()
    assert (TrainSettings().lr, TrainSettings().epochs, TrainSettings().batch_size) == (1e-4, 5, 1)
    # every field documents itself (the CLI's help comes from here)
    assert all(f.metadata.get("help") for f in TRAIN_SETTING_FIELDS.values())
    # test hooks are not production settings
    assert not {"stop_after_steps", "sample_log"} & set(TRAIN_SETTING_FIELDS)


def test_tiny_recipe_differs_per_stage_and_names_its_data_size():
    tiny = get_recipe("tiny")
    assert tiny.data_n and tiny.data_n > 0
    assert tiny.for_stage(1).bridge_lr_scale < 1.0
    assert tiny.for_stage(1).replay == 0.0 < tiny.for_stage(3).replay
    refit = tiny.for_stage(3)  # docs/SYNTHETIC.md, "The projector refit"
    assert refit.projector_refit_steps > 0 and refit.projector_refit_mixup > 0
    assert refit.projector_refit_start == "fresh" != TrainSettings().projector_refit_start


@pytest.mark.parametrize("field,value", [("epochs", 0), ("batch_size", 0), ("audio_crop", 0.0),
                                         ("audio_crop", 1.5), ("lr", 0.0), ("replay", -0.1),
                                         ("mixed_precision", "fp8"),
                                         ("projector_refit_mixup", -0.5),
                                         ("projector_refit_start", "warm")])
def test_out_of_range_settings_are_refused_naming_the_field(field, value):
    with pytest.raises(SettingError) as err:
        TrainSettings(**{field: value})
    assert err.value.name == field and str(value) in str(err.value)


def test_settings_are_immutable_and_stage_checked():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainSettings().lr = 1.0  # type: ignore[misc]
    with pytest.raises(SettingError, match="stage-3"):
        TrainSettings(projector_refit_steps=10).check_stage(2)


def test_bad_recipes_and_names_are_refused():
    with pytest.raises(ValueError, match="unknown training flags"):
        TrainRecipe(common={"learning_rate": 1.0}).for_stage(1)
    with pytest.raises(ValueError, match="stage must be"):
        get_recipe("tiny").for_stage(4)
    with pytest.raises(ValueError, match="known: tiny"):
        get_recipe("nope")
