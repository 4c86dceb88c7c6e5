"""The attributes of the synthetic data (`data.synthetic`): the one source of their words, the
cross-modal maps that make any-to-music targets follow from the input, and the held-out music
combinations.

Every attribute is a property that survives the pooling of frozen random-weight tiny encoders
(the reasons and the measurements: docs/SYNTHETIC.md). The tiny tokenizer holds every word
below as one piece (`assets/make_tiny_tokenizer_corpus.py` reads them from here).
"""

from __future__ import annotations

import numpy as np

from util.hashing import stable_int

__all__ = [
    "Attrs",
    "INSTRUMENTS",
    "REGISTERS",
    "TEMPOS",
    "COLOURS",
    "SIZES",
    "BRIGHTNESS",
    "AUDIO_ATTRIBUTES",
    "IMAGE_ATTRIBUTES",
    "VIDEO_ATTRIBUTES",
    "COLOUR_TO_INSTRUMENT",
    "SIZE_TO_REGISTER",
    "BRIGHTNESS_TO_TEMPO",
    "INSTRUMENT_TO_COLOUR",
    "REGISTER_TO_SIZE",
    "TEMPO_TO_BRIGHTNESS",
    "HELD_OUT_COMBINATIONS",
    "seeded_rng",
    "draw_attrs",
    "held_out_combinations",
    "music_combos",
    "balanced",
    "shuffled_attrs",
]

Attrs = dict[str, str]

INSTRUMENTS = ("piano", "organ", "flute", "guitar")
REGISTERS = ("low", "high")
TEMPOS = ("slow", "fast")
COLOURS = ("red", "green", "blue", "yellow")
SIZES = ("small", "large")
BRIGHTNESS = ("brightening", "darkening")

AUDIO_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "instrument": INSTRUMENTS,
    "register": REGISTERS,
    "tempo": TEMPOS,
}
IMAGE_ATTRIBUTES: dict[str, tuple[str, ...]] = {"colour": COLOURS, "size": SIZES}
VIDEO_ATTRIBUTES: dict[str, tuple[str, ...]] = {"colour": COLOURS, "brightness": BRIGHTNESS}

# MUImage: colour -> instrument, size -> register;
# MUVideo: colour -> instrument, brightness -> tempo.
COLOUR_TO_INSTRUMENT = {"red": "piano", "green": "organ", "blue": "flute", "yellow": "guitar"}
SIZE_TO_REGISTER = {"small": "high", "large": "low"}
BRIGHTNESS_TO_TEMPO = {"brightening": "fast", "darkening": "slow"}
INSTRUMENT_TO_COLOUR = {v: k for k, v in COLOUR_TO_INSTRUMENT.items()}
REGISTER_TO_SIZE = {v: k for k, v in SIZE_TO_REGISTER.items()}
TEMPO_TO_BRIGHTNESS = {v: k for k, v in BRIGHTNESS_TO_TEMPO.items()}

HELD_OUT_COMBINATIONS = 3  # music attribute combinations that only held-out requests ask for


def seeded_rng(seed: int, name: str) -> np.random.Generator:
    """Independent stream per dataset part, so each part is stable on its own."""
    return np.random.default_rng([seed, stable_int(name)])


def draw_attrs(space: dict[str, tuple[str, ...]], i: int) -> Attrs:
    """The i-th combination of `space` (cycling), so n items cover all combinations evenly."""
    k = i % int(np.prod([len(v) for v in space.values()]))
    out: Attrs = {}
    for name, values in space.items():
        out[name] = values[k % len(values)]
        k //= len(values)
    return out


def held_out_combinations(seed: int) -> list[Attrs]:
    """The music attribute combinations that no training item has, for data seed `seed`: three,
    with three different instruments (so every held-out request names a distinct timbre)."""
    rng = seeded_rng(seed, "held-out combinations")
    return [
        {
            "instrument": str(inst),
            "register": REGISTERS[int(rng.integers(0, len(REGISTERS)))],
            "tempo": TEMPOS[int(rng.integers(0, len(TEMPOS)))],
        }
        for inst in rng.permutation(list(INSTRUMENTS))[:HELD_OUT_COMBINATIONS]
    ]


def music_combos(held_out: list[Attrs], held: bool) -> list[Attrs]:
    """All music combinations in `held_out` (held=True) or all the others (held=False)."""
    n = int(np.prod([len(v) for v in AUDIO_ATTRIBUTES.values()]))
    combos = [draw_attrs(AUDIO_ATTRIBUTES, i) for i in range(n)]
    return [c for c in combos if (c in held_out) == held]


def balanced(combos: list[Attrs], n: int, rng: np.random.Generator) -> list[Attrs]:
    """n copies cycling over `combos` (balanced), in random order."""
    picks = [dict(combos[i % len(combos)]) for i in range(n)]
    return [picks[j] for j in rng.permutation(n)]


def shuffled_attrs(
    space: dict[str, tuple[str, ...]], n: int, rng: np.random.Generator
) -> list[Attrs]:
    """n attribute dicts, balanced over all combinations, in random order."""
    combos = [draw_attrs(space, i) for i in range(n)]
    return [combos[j] for j in rng.permutation(n)]
