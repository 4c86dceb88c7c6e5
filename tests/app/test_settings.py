"""One source of defaults and validation for every generation setting."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest

from app.errors import InputError
from app.settings import default_guidance, default_steps, make_settings, setting_names
from llama.config import DecoderConfig
from llama.m2ugen import GenerationSettings


def test_nothing_given_means_the_library_defaults():
    assert make_settings() == GenerationSettings()
    assert make_settings({name: None for name in setting_names()}) == GenerationSettings()
    assert setting_names() == tuple(f.name for f in dataclasses.fields(GenerationSettings))


def test_integral_floats_become_ints():
    s = make_settings({"max_new_tokens": 8.0, "seed": 3.0, "num_inference_steps": None})
    assert (s.max_new_tokens, s.seed) == (8, 3) and isinstance(s.max_new_tokens, int)


@pytest.mark.parametrize("values, field", [
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": 8.5}, "max_new_tokens"),
    ({"max_new_tokens": True}, "max_new_tokens"),
    ({"max_new_tokens": "8"}, "max_new_tokens"),
    ({"temperature": -1}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"seed": -1}, "seed"),
    ({"audio_seconds": 0}, "audio_seconds"),
    ({"audio_seconds": math.inf}, "audio_seconds"),
    ({"guidance_scale": 0.5}, "guidance_scale"),
    ({"guidance_scale": "high"}, "guidance_scale"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"music_conditioning": "lyrics"}, "music_conditioning"),
    ({"loudness": 3}, "loudness"),
])
def test_invalid_values_name_the_setting(values, field):
    with pytest.raises(InputError, match=field):
        make_settings(values)


def test_guidance_has_one_rule_everywhere():
    """>= 1 (1 disables guidance): the library, the CLI and the demo share it."""
    assert make_settings({"guidance_scale": 1.0}).guidance_scale == 1.0
    with pytest.raises(ValueError, match="guidance_scale must be >= 1"):
        GenerationSettings(guidance_scale=0.0).validate()
    with pytest.raises(InputError, match="guidance_scale must be >= 1"):
        make_settings({"guidance_scale": 0.0})


def test_decoder_dependent_checks_and_defaults():
    musicgen = DecoderConfig(kind="musicgen", max_seconds=10.0, guidance_scale=4.0)
    audioldm2 = DecoderConfig(kind="audioldm2", num_inference_steps=25)
    with pytest.raises(InputError, match="audio_seconds must be <= 10.0"):
        make_settings({"audio_seconds": 12}, decoder=musicgen)
    with pytest.raises(InputError, match="num_inference_steps applies to the AudioLDM2"):
        make_settings({"num_inference_steps": 5}, decoder=musicgen)
    assert make_settings({"num_inference_steps": 5}, decoder=audioldm2).num_inference_steps == 5
    assert make_settings({"audio_seconds": 12}).audio_seconds == 12  # no decoder: no limit known
    assert (default_guidance(musicgen), default_steps(audioldm2)) == (4.0, 25)


def test_callers_objects_are_not_modified():
    values = {"max_new_tokens": 8.0, "temperature": None}
    decoder = DecoderConfig()
    before = (copy.deepcopy(values), copy.deepcopy(decoder))
    make_settings(values, decoder=decoder)
    assert (values, decoder) == before
