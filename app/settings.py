"""Generation settings from user values: defaults and validation come from ONE place.

`llama.m2ugen.GenerationSettings` defines every setting's default and valid range; this module
turns loosely typed values (argparse flags, JSON batch fields, gradio widgets) into a validated
instance. A value of None means "not given": the class default applies, and for guidance and
diffusion steps the loaded decoder's own configuration (`DecoderConfig`) fills it in later.
The caller's objects (value mappings, decoder configs) are never modified.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping, Optional

from app.errors import InputError

if TYPE_CHECKING:
    from llama.config import DecoderConfig
    from llama.m2ugen import GenerationSettings


def setting_names() -> tuple[str, ...]:
    """Names of every generation setting, in definition order."""
    from llama.m2ugen import GenerationSettings

    return tuple(f.name for f in dataclasses.fields(GenerationSettings))


def defaults() -> "GenerationSettings":
    """The settings used when nothing is given."""
    from llama.m2ugen import GenerationSettings

    return GenerationSettings()


def default_guidance(decoder: "DecoderConfig") -> float:
    """The guidance a turn gets when none is given: the decoder configuration's."""
    return float(decoder.guidance_scale)


def default_steps(decoder: "DecoderConfig") -> int:
    """The diffusion steps a turn gets when none are given: the decoder configuration's."""
    return int(decoder.num_inference_steps)


def _as_int(value: Any) -> Any:
    """Integral floats (gradio sliders, JSON 8.0) become ints; anything else is left to
    validation, which names the field."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def make_settings(
    values: Optional[Mapping[str, Any]] = None,
    *,
    decoder: Optional["DecoderConfig"] = None,
) -> "GenerationSettings":
    """Validated GenerationSettings from `values` (None entries = default).

    With `decoder`, settings that depend on it are checked too (longest clip, steps only for
    AudioLDM2). Raises InputError naming the setting."""
    from llama.m2ugen import GenerationSettings

    given = {k: v for k, v in (values or {}).items() if v is not None}
    unknown = sorted(set(given) - set(setting_names()))
    if unknown:
        raise InputError(f"unknown setting(s) {unknown}; known: {list(setting_names())}")
    for name in GenerationSettings.INT_FIELDS:
        if name in given:
            given[name] = _as_int(given[name])
    settings = GenerationSettings(**given)
    try:
        settings.validate(decoder)
    except ValueError as err:
        raise InputError(str(err)) from None
    return settings
