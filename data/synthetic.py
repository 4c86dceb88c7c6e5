"""Small generated datasets in the published M2UGen layouts, for tests, the demo and learning
measurements.

    python -m data.synthetic --out DIR --seed S [--n N]   (default N: the tiny recipe's size)

writes (layout of docs/DATA.md) MUCaps, COCO, MUVideo captions, MusicQA, Alpaca, MUImage,
MUVideo and MUEdit instructions, plus `attributes.json` (ground truth of every media file) and
`split.json` (about 80/20 train/test over media files, so learning is measured on held-out items).
Same seed and N -> byte-identical files (no timestamps in WAV/PNG/MP4; see `write_mp4`). The
folder is built aside and swapped in (`util.atomic.atomic_dir`): it is complete or absent.

Design (the reasons and the measured numbers: docs/SYNTHETIC.md). The data must teach something
the `tiny` preset can learn with frozen random-weight encoders whose features the bridges pool
over time or tokens, so every attribute is a property that survives pooling:

- music (3 s, 16 kHz mono WAV): instrument {piano, organ, flute, guitar} as a 2 x 2 design of
  spectrum (dark / bright) and envelope (sustained / percussive) plus noise cues (see `_note`),
  register {low, high}, tempo {slow, fast} (legato versus staccato note rate);
- images (64x64 PNG): colour {red, green, blue, yellow} of one object at a random position, and
  its size {small, large}; the object's shape varies as a nuisance;
- videos (16 frames, 32x32, 8 fps H.264 intra-only MP4): colour of a drifting object and
  brightness {brightening, darkening} of the whole scene over time.

The attribute vocabularies below (INSTRUMENTS ... BRIGHTNESS) are the project's one source of
these words. Learnable cross-modal mappings make any-to-music targets follow from the input:
- MUImage: colour -> instrument (red piano, green organ, blue flute, yellow guitar),
  size -> register (small high, large low); the tempo is named in the instruction.
- MUVideo: colour -> instrument (same map), brightening -> fast, darkening -> slow; the register is
  named in the instruction.
- MUEdit: output = input with exactly one attribute changed; the instruction names the new value.

Captions come from several templates and always contain every attribute value as a word.

Held out (`split.json` "test"), so the metrics measure generalisation and not recall:
- three music attribute combinations (`held_out_combinations(seed)`, one per instrument) never
  occur in training: no training clip, caption, answer or request target has them. Every held-out
  music request (MUImage, MUVideo, MUEdit test items) asks for one of them; MUCaps and MusicQA
  hold the other 13 combinations (20% of their items held out at random);
- held-out music requests are phrased with request templates that no training item uses.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

import av
import numpy as np
from PIL import Image

from data.media import write_wav
from llama.config import get_recipe
from util.atomic import atomic_dir, write_text
from util.hashing import sha256_file, sha256_json, stable_int

__all__ = [
    "HELD_OUT_COMBINATIONS",
    "held_out_combinations",
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
    "SAMPLE_RATE",
    "generate",
    "synth_music",
    "draw_image",
    "render_video",
    "write_music",
    "write_png",
    "write_mp4",
    "music_caption",
    "music_captions",
    "music_template_of",
    "image_caption",
    "video_caption",
    "dataset_digest",
    "main",
]

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

COLOUR_TO_INSTRUMENT = {"red": "piano", "green": "organ", "blue": "flute", "yellow": "guitar"}
SIZE_TO_REGISTER = {"small": "high", "large": "low"}
BRIGHTNESS_TO_TEMPO = {"brightening": "fast", "darkening": "slow"}

SAMPLE_RATE = 16000
CLIP_SECONDS = 3.0
IMAGE_SIZE = 64
VIDEO_SIZE = 32
VIDEO_FRAMES = 16
VIDEO_FPS = 8
TEST_FRACTION = 0.2
DEFAULT_N = get_recipe("tiny").data_n  # the size the tiny training recipe is measured on
HELD_OUT_COMBINATIONS = 3  # music attribute combinations that only held-out requests ask for

Attrs = dict[str, str]

# ---------------------------------------------------------------------------------------------
# Music


def _midi_to_hz(m: np.ndarray | float) -> np.ndarray | float:
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


_PENTATONIC = np.array([0, 2, 4, 7, 9])
_REGISTER_ROOT = {"low": 40, "high": 72}  # E2 (82 Hz) and C5 (523 Hz); notes span ~1.3 octaves
_NOTE_SECONDS = {"slow": (0.7, 0.9), "fast": (0.13, 0.17)}
_SOUNDING = {"slow": 1.0, "fast": 0.6}  # fast notes are staccato: silence between notes
_BREATH = 0.5  # flute hiss level relative to its tone peak


def _note(instrument: str, f0: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One note of `n` samples. The four timbres form a 2 x 2 design that a small random
    convolutional front end can hear (measurements: docs/SYNTHETIC.md):

    - spectrum: dark (a few low partials: piano, flute) or bright (partials up to Nyquist with a
      slow 1/k**0.5 roll-off: organ, guitar);
    - envelope: sustained (flute, organ) or percussive, decaying within ~0.1 s (piano, guitar);
    - noise: the flute breathes (a high, airy hiss under the whole note), the guitar's pluck is a
      short noise burst; piano and organ are pure tones. Envelope alone was confused at fast
      tempi (flute/piano, guitar/organ); noise is a cue the random front end hears well, and a
      high hiss is not masked by the low partials the way an earlier low-passed breath was.
    """
    t = np.arange(n) / sr
    nyquist = sr / 2
    bright = instrument in ("organ", "guitar")
    if instrument not in INSTRUMENTS:
        raise ValueError(f"unknown instrument {instrument!r}")
    if bright:
        ks = np.arange(1, int(nyquist // f0) + 1)
        amps = 1.0 / ks**0.5
        if instrument == "organ":
            amps = amps * (ks % 2 == 1)  # odd partials: a reedy stop
    else:
        ks = np.array([1, 2, 3])
        amps = np.array([1.0, 0.15, 0.05])
    freqs = f0 * ks
    if instrument in ("piano", "guitar"):
        env = np.exp(-25.0 * t) * np.minimum(t / 0.002, 1.0)
    else:
        env = np.minimum(t / 0.03, 1.0) * np.minimum((t[-1] - t) / 0.03 + 1e-3, 1.0)
    phases = rng.uniform(0, 2 * np.pi, size=len(ks))
    keep = (freqs < nyquist) & (amps > 0)
    waves = np.sin(2 * np.pi * np.outer(freqs[keep], t) + phases[keep, None])
    tone = (amps[keep, None] * waves).sum(0)
    tone = tone / max(np.abs(tone).max(), 1e-9)
    if instrument == "flute":  # breath: a high, airy hiss under the whole note
        white = rng.standard_normal(n)
        noise = white - _lowpass(white, 0.3)
        tone = tone + _BREATH * noise / max(np.abs(noise).max(), 1e-9)
    elif instrument == "guitar":  # pluck: a 20 ms noise burst at the attack
        tone = tone + 0.8 * rng.standard_normal(n) * np.exp(-t / 0.02)
    return tone / max(np.abs(tone).max(), 1e-9) * env


def _lowpass(x: np.ndarray, alpha: float) -> np.ndarray:
    """One-pole low-pass filter (alpha in (0, 1]: smaller is darker)."""
    from scipy.signal import lfilter

    return lfilter([alpha], [1.0, alpha - 1.0], x)


def synth_music(
    attrs: Attrs, rng: np.random.Generator, sr: int = SAMPLE_RATE, seconds: float = CLIP_SECONDS
) -> np.ndarray:
    """A clip of random pentatonic notes with the given instrument, register and tempo (float32)."""
    n_total = int(round(seconds * sr))
    out = np.zeros(n_total, dtype=np.float64)
    root = _REGISTER_ROOT[attrs["register"]] + int(rng.integers(0, 5))
    lo, hi = _NOTE_SECONDS[attrs["tempo"]]
    pos = 0
    while pos < n_total:
        dur = int(rng.uniform(lo, hi) * sr)
        degree = int(rng.integers(0, 8))
        midi = root + 12 * (degree // 5) + _PENTATONIC[degree % 5]
        n = min(int(dur * _SOUNDING[attrs["tempo"]]), n_total - pos)
        out[pos : pos + n] += _note(attrs["instrument"], float(_midi_to_hz(midi)), n, sr, rng)[:n]
        pos += dur
    peak = np.abs(out).max()
    gain = rng.uniform(0.5, 0.8)
    return (out / max(peak, 1e-9) * gain).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Images and video


_RGB = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (230, 210, 30),
}
_SHAPES = ("disc", "square", "diamond")


def _colour(name: str, rng: np.random.Generator) -> np.ndarray:
    base = np.array(_RGB[name], dtype=np.float64)
    return np.clip(base + rng.integers(-20, 21, size=3), 0, 255)


def _shape_mask(shape: str, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = np.abs(yy - cy), np.abs(xx - cx)
    if shape == "disc":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (dy <= r * 0.85) & (dx <= r * 0.85)
    return dy + dx <= r * 1.2  # diamond


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(90, 170)
    noise = rng.normal(0, 6, size=(size, size, 1))
    return np.clip(grey + noise, 0, 255).repeat(3, axis=2)


def draw_image(attrs: Attrs, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 (size, size, 3): one coloured object of the given size at a random position."""
    img = _background(size, rng)
    r = (rng.uniform(0.11, 0.15) if attrs["size"] == "small" else rng.uniform(0.3, 0.38)) * size
    cy, cx = rng.uniform(r, size - r, size=2)
    mask = _shape_mask(_SHAPES[int(rng.integers(0, len(_SHAPES)))], size, cy, cx, r)
    img[mask] = _colour(attrs["colour"], rng)
    return img.round().astype(np.uint8)


def render_video(
    attrs: Attrs,
    rng: np.random.Generator,
    frames: int = VIDEO_FRAMES,
    size: int = VIDEO_SIZE,
) -> np.ndarray:
    """uint8 (frames, size, size, 3): a drifting coloured object; the scene brightens or darkens."""
    base = _background(size, rng)
    r = rng.uniform(0.2, 0.3) * size
    y0, x0 = rng.uniform(r, size - r, size=2)
    vy, vx = rng.uniform(-0.6, 0.6, size=2)
    colour = _colour(attrs["colour"], rng)
    shape = _SHAPES[int(rng.integers(0, len(_SHAPES)))]
    dim, full = rng.uniform(0.2, 0.35), rng.uniform(0.95, 1.1)
    ramp = np.linspace(dim, full, frames)
    if attrs["brightness"] == "darkening":
        ramp = ramp[::-1]
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for f in range(frames):
        img = base.copy()
        cy = np.clip(y0 + vy * f, r, size - r)
        cx = np.clip(x0 + vx * f, r, size - r)
        img[_shape_mask(shape, size, cy, cx, r)] = colour
        out[f] = np.clip(img * ramp[f], 0, 255).round().astype(np.uint8)
    return out


def _video_codec() -> str:
    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except av.error.FFmpegError:
            continue
        except ValueError:
            continue
    raise RuntimeError("neither libx264 nor mpeg4 encoders are available in PyAV's FFmpeg")


def write_mp4(path: Path, frames: np.ndarray, fps: int = VIDEO_FPS) -> None:
    """Deterministic MP4: no creation time, fixed time base, single-threaded encoder.

    H.264 is encoded intra-only: with inter prediction, x264 produced process-dependent bytes for
    these tiny frames (observed here even with threads=1); intra-only output is reproducible.
    """
    codec = _video_codec()
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.time_base = Fraction(1, fps)
        if codec == "libx264":
            stream.options = {
                "crf": "16",
                "preset": "fast",
                "threads": "1",
                "x264-params": "keyint=1",
            }
        else:
            stream.options = {"qscale": "3"}
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_png(path: Path, img: np.ndarray) -> None:
    Image.fromarray(img, mode="RGB").save(path, format="PNG", optimize=False)


def write_music(path: Path, wave: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """16-bit WAV: half the size of float, and `synth_music` peaks at 0.8, so nothing clips."""
    write_wav(path, wave, sr, subtype="PCM_16")


# ---------------------------------------------------------------------------------------------
# Text


_MUSIC_TEMPLATES = (
    "A {tempo} {instrument} melody in a {register} register.",
    "Solo {instrument} music with a {tempo} tempo, played in the {register} register.",
    "This is a {tempo} tune on the {instrument}, {register} register.",
    "The {instrument} plays {tempo} notes in a {register} register.",
    "A {register} register {instrument} piece at a {tempo} tempo.",
)
_IMAGE_TEMPLATES = (
    "A {size} {colour} object on a grey background.",
    "An image of a {size} {colour} shape.",
    "A picture showing one {colour} object; the object is {size}.",
    "A {colour} shape, {size}, somewhere in the image.",
)
_VIDEO_TEMPLATES = (
    "A video of a {colour} object; the scene is {brightness}.",
    "A {colour} shape drifts while the clip keeps {brightness}.",
    "A clip with a {colour} object, {brightness} over time.",
    "The video shows a {colour} shape and the picture is {brightness}.",
)


def _fill(templates: tuple[str, ...], attrs: Attrs, rng: np.random.Generator) -> str:
    return templates[int(rng.integers(0, len(templates)))].format(**attrs)


def music_caption(attrs: Attrs, rng: np.random.Generator) -> str:
    return _fill(_MUSIC_TEMPLATES, attrs, rng)


def music_captions(attrs: Attrs) -> list[str]:
    """Every caption template filled with `attrs`: all the ways the data describes that music."""
    return [t.format(**attrs) for t in _MUSIC_TEMPLATES]


def music_template_of(text: str) -> int | None:
    """Index (into `music_captions`) of the caption template that `text` contains, whatever words
    fill its slots; None when it contains none."""
    for k, template in enumerate(_MUSIC_TEMPLATES):
        pattern = re.escape(template)
        for slot in AUDIO_ATTRIBUTES:
            pattern = pattern.replace(re.escape("{" + slot + "}"), r"[a-z]+")
        if re.search(pattern, text, flags=re.IGNORECASE):
            return k
    return None


def image_caption(attrs: Attrs, rng: np.random.Generator) -> str:
    return _fill(_IMAGE_TEMPLATES, attrs, rng)


def video_caption(attrs: Attrs, rng: np.random.Generator) -> str:
    return _fill(_VIDEO_TEMPLATES, attrs, rng)


_QA = {
    "instrument": (
        ("What instrument is playing?", "The instrument is the {instrument}."),
        ("Which instrument do you hear in this music?", "I hear a {instrument}."),
    ),
    "register": (
        ("Is this music in a low or high register?", "It is in a {register} register."),
        ("Describe the register of the melody.", "The melody is in the {register} register."),
    ),
    "tempo": (
        ("Is the tempo slow or fast?", "The tempo is {tempo}."),
        ("How fast is this music?", "It is {tempo} music."),
    ),
}
_DESCRIBE_QUESTIONS = ("Describe the music.", "What do you hear in this clip?")

_ALPACA = (
    ("Name an instrument with keys and hammers.", "The piano."),
    ("Name an instrument that is played by blowing across a hole.", "The flute."),
    ("Name an instrument with six strings that is often plucked.", "The guitar."),
    ("Name an instrument with pipes and a keyboard.", "The organ."),
    ("What is the opposite of slow?", "Fast."),
    ("What is the opposite of fast?", "Slow."),
    ("What is the opposite of low?", "High."),
    ("What is the opposite of high?", "Low."),
    ("What is the opposite of small?", "Large."),
    ("What is the opposite of large?", "Small."),
    ("What colour do you get by mixing red and green light?", "Yellow."),
    ("What colour is the sky on a clear day?", "Blue."),
    ("What colour is fresh grass?", "Green."),
    ("What colour is a ripe tomato?", "Red."),
    ("What does tempo mean in music?", "Tempo is the speed of the music."),
    ("What does register mean in music?", "Register is how low or high the notes are."),
    ("Write a short sentence about a song.", "The song has a bright melody."),
    ("Say hello.", "Hello!"),
    ("Count from one to three.", "One, two, three."),
    ("Is a video made of images?", "Yes, a video is a sequence of images."),
)

# Training phrasings: several per task, so that the intent (make music) is learned apart from the
# wording and carries over to the held-out phrasings below.
_MUIMAGE_REQUESTS = (
    "Compose {tempo} music for this image.",
    "Generate {tempo} music that matches this picture.",
    "Write a {tempo} song inspired by this image.",
    "Produce a {tempo} tune for this photo.",
    "I need {tempo} music that suits this image.",
    "Give me a {tempo} melody for this picture.",
)
_MUVIDEO_REQUESTS = (
    "Compose music in a {register} register for this video.",
    "Generate {register} register music that fits this clip.",
    "Write a song for this video, in the {register} register.",
    "Produce {register} register music for this video.",
    "I need a tune in the {register} register for this clip.",
    "Give me {register} register music for this clip.",
)
# Held-out phrasings: only test items use them (the routing metric sees unseen instructions).
# Each is a sentence no training item has, built from tokens the training requests use: a model
# trained from scratch cannot know a word it never saw ("Score this video..." was routed on 19 of
# 21 items for one seed and on 4 of 23 for another), so these test the intent carried over to a
# new wording, not a guess at an unknown word. Each also names what it asks for (music, song,
# tune, melody, or the attribute it changes): "Make this fast." named nothing and was answered
# as a caption request on every item for two seeds.
_MUIMAGE_REQUESTS_HELD_OUT = (
    "Write a {tempo} melody that suits this picture.",
    "I need a {tempo} song that matches this image.",
)
_MUVIDEO_REQUESTS_HELD_OUT = (
    "Compose a song in the {register} register for this clip.",
    "I need {register} register music that fits this video.",
)
_EDIT_REQUESTS_HELD_OUT = {
    "instrument": ("Rewrite this for a {instrument}.",
                   "Play this music with the {instrument} instead."),
    "register": ("Move this to the {register} register.",
                 "Put this in the {register} register."),
    "tempo": ("Make the tempo of this music {tempo}.",
              "Rework the tempo of this music to {tempo}."),
}
_EDIT_REQUESTS = {
    "instrument": (
        "Change the instrument of this music to the {instrument}.",
        "Play this with a {instrument} instead.",
        "Rewrite this music for the {instrument}.",
    ),
    "register": (
        "Move this music to a {register} register.",
        "Play this in the {register} register.",
        "Put this music in a {register} register.",
    ),
    "tempo": ("Make this music {tempo}.", "Change the tempo of this music to {tempo}.",
              "Rework this music to be {tempo}."),
}
_ANSWERS = (
    "Here is the music: {caption}",
    "Sure. {caption}",
    "This is what I made: {caption}",
)


# ---------------------------------------------------------------------------------------------
# Dataset assembly


@dataclass
class _Writer:
    """Collects attributes, split membership and the files written below `root`; `held_out` are
    the music attribute combinations that only test items may have."""

    root: Path
    attributes: dict[str, Attrs]
    train: list[str]
    test: list[str]
    held_out: list[Attrs]

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def assign(self, paths: Iterable[Path], is_test: bool) -> None:
        (self.test if is_test else self.train).extend(self.rel(p) for p in paths)


def _rng(seed: int, name: str) -> np.random.Generator:
    """Independent stream per dataset so each part is stable on its own."""
    return np.random.default_rng([seed, stable_int(name)])


def _draw_attrs(space: dict[str, tuple[str, ...]], i: int) -> Attrs:
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
    rng = _rng(seed, "held-out combinations")
    return [
        {
            "instrument": str(inst),
            "register": REGISTERS[int(rng.integers(0, len(REGISTERS)))],
            "tempo": TEMPOS[int(rng.integers(0, len(TEMPOS)))],
        }
        for inst in rng.permutation(list(INSTRUMENTS))[:HELD_OUT_COMBINATIONS]
    ]


def _music_combos(held_out: list[Attrs], held: bool) -> list[Attrs]:
    """All music combinations in `held_out` (held=True) or all the others (held=False)."""
    n = int(np.prod([len(v) for v in AUDIO_ATTRIBUTES.values()]))
    combos = [_draw_attrs(AUDIO_ATTRIBUTES, i) for i in range(n)]
    return [c for c in combos if (c in held_out) == held]


def _balanced(combos: list[Attrs], n: int, rng: np.random.Generator) -> list[Attrs]:
    """n copies cycling over `combos` (balanced), in random order."""
    picks = [dict(combos[i % len(combos)]) for i in range(n)]
    return [picks[j] for j in rng.permutation(n)]


def _request_targets(
    held_out: list[Attrs], test: np.ndarray, rng: np.random.Generator
) -> list[Attrs]:
    """Music targets of requests: held-out combinations for test items, the others for train."""
    pools = {
        held: iter(_balanced(_music_combos(held_out, held), int((test == held).sum()), rng))
        for held in (True, False)
    }
    return [next(pools[bool(t)]) for t in test]


def _test_mask(count: int, rng: np.random.Generator) -> np.ndarray:
    n_test = int(round(count * TEST_FRACTION))
    mask = np.zeros(count, dtype=bool)
    mask[rng.permutation(count)[:n_test]] = True
    return mask


def _json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def _music_clip(w: _Writer, path: Path, attrs: Attrs, rng: np.random.Generator) -> str:
    write_music(path, synth_music(attrs, rng))
    w.attributes[w.rel(path)] = dict(attrs)
    return music_caption(attrs, rng)


def _mucaps(w: _Writer, n: int, seed: int) -> None:
    rng = _rng(seed, "MUCaps")
    folder = w.root / "MUCaps" / "audios"
    folder.mkdir(parents=True)
    captions: dict[str, str] = {}
    test = _test_mask(n, rng)
    for i, a in enumerate(_balanced(_music_combos(w.held_out, False), n, rng)):
        path = folder / f"mucaps_{i:05d}.wav"
        captions[path.name] = _music_clip(w, path, a, rng)
        w.assign([path], bool(test[i]))
    _json(w.root / "MUCaps" / "MUCapsCaptions.json", captions)


def _coco(w: _Writer, n: int, seed: int) -> None:
    rng = _rng(seed, "COCO")
    folder = w.root / "COCO" / "images"
    folder.mkdir(parents=True)
    captions: dict[str, str] = {}
    test = _test_mask(n, rng)
    for i, a in enumerate(_shuffled_attrs(IMAGE_ATTRIBUTES, n, rng)):
        path = folder / f"coco_{i:05d}.png"
        write_png(path, draw_image(a, rng))
        w.attributes[w.rel(path)] = a
        captions[path.name] = image_caption(a, rng)
        w.assign([path], bool(test[i]))
    _json(w.root / "COCO" / "CocoCaptions.json", captions)


_INSTRUMENT_TO_COLOUR = {v: k for k, v in COLOUR_TO_INSTRUMENT.items()}
_REGISTER_TO_SIZE = {v: k for k, v in SIZE_TO_REGISTER.items()}
_TEMPO_TO_BRIGHTNESS = {v: k for k, v in BRIGHTNESS_TO_TEMPO.items()}


def _muvideo(w: _Writer, n: int, n_instr: int, seed: int) -> None:
    """MUVideo: n captioned videos; the first n_instr also get a music-generation instruction,
    whose music target fixes the video (colour <- instrument, brightness <- tempo)."""
    rng = _rng(seed, "MUVideo")
    videos = w.root / "MUVideo" / "videos"
    audios = w.root / "MUVideo" / "audios"
    videos.mkdir(parents=True)
    audios.mkdir(parents=True)
    captions: dict[str, str] = {}
    items: list[dict[str, Any]] = []
    test = np.concatenate([_test_mask(n_instr, rng), _test_mask(n - n_instr, rng)])
    targets = _request_targets(w.held_out, test[:n_instr], rng)
    plain = _shuffled_attrs(VIDEO_ATTRIBUTES, n - n_instr, rng)
    for i in range(n):
        if i < n_instr:
            target = targets[i]
            a = {"colour": _INSTRUMENT_TO_COLOUR[target["instrument"]],
                 "brightness": _TEMPO_TO_BRIGHTNESS[target["tempo"]]}
        else:
            a = plain[i - n_instr]
        vpath = videos / f"muvideo_{i:05d}.mp4"
        write_mp4(vpath, render_video(a, rng))
        w.attributes[w.rel(vpath)] = a
        vcap = video_caption(a, rng)
        captions[vpath.name] = vcap
        files = [vpath]
        if i < n_instr:
            apath = audios / f"muvideo_{i:05d}.wav"
            mcap = _music_clip(w, apath, target, rng)
            templates = _MUVIDEO_REQUESTS_HELD_OUT if test[i] else _MUVIDEO_REQUESTS
            request = _fill(templates, {"register": target["register"]}, rng)
            items.append(_any_to_music(vpath.name, apath.name, "video", request, vcap, mcap, rng))
            files.append(apath)
        w.assign(files, bool(test[i]))
    _json(w.root / "MUVideo" / "MUVideoCaptions.json", captions)
    _json(w.root / "MUVideo" / "MUVideoInstructions.json", items)


def _muimage(w: _Writer, n: int, seed: int) -> None:
    """MUImage: the music target fixes the image (colour <- instrument, size <- register); the
    tempo is named in the request."""
    rng = _rng(seed, "MUImage")
    images = w.root / "MUImage" / "images"
    audios = w.root / "MUImage" / "audios"
    images.mkdir(parents=True)
    audios.mkdir(parents=True)
    items: list[dict[str, Any]] = []
    test = _test_mask(n, rng)
    for i, target in enumerate(_request_targets(w.held_out, test, rng)):
        a = {"colour": _INSTRUMENT_TO_COLOUR[target["instrument"]],
             "size": _REGISTER_TO_SIZE[target["register"]]}
        ipath = images / f"muimage_{i:05d}.png"
        write_png(ipath, draw_image(a, rng))
        w.attributes[w.rel(ipath)] = a
        apath = audios / f"muimage_{i:05d}.wav"
        mcap = _music_clip(w, apath, target, rng)
        templates = _MUIMAGE_REQUESTS_HELD_OUT if test[i] else _MUIMAGE_REQUESTS
        request = _fill(templates, {"tempo": target["tempo"]}, rng)
        icap = image_caption(a, rng)
        items.append(_any_to_music(ipath.name, apath.name, "image", request, icap, mcap, rng))
        w.assign([ipath, apath], bool(test[i]))
    _json(w.root / "MUImage" / "MUImageInstructions.json", items)


def _edit_source(b: Attrs, first: int, held_out: list[Attrs], rng: np.random.Generator
                 ) -> tuple[str, Attrs]:
    """The edit's input: `b` with one attribute changed (trying attribute `first` first), never a
    held-out combination (so a training input never has one either)."""
    names = list(AUDIO_ATTRIBUTES)
    for k in range(len(names)):
        changed = names[(first + k) % len(names)]
        choices = [dict(b, **{changed: v}) for v in AUDIO_ATTRIBUTES[changed] if v != b[changed]]
        choices = [c for c in choices if c not in held_out]
        if choices:
            return changed, choices[int(rng.integers(0, len(choices)))]
    raise AssertionError(f"no edit source for {b}: every neighbour is held out")


def _muedit(w: _Writer, n: int, seed: int) -> None:
    """n pairs: input and output music differing in exactly one attribute; held-out pairs ask for
    a held-out combination."""
    rng = _rng(seed, "MUEdit")
    audios = w.root / "MUEdit" / "audios"
    audios.mkdir(parents=True)
    items: list[dict[str, Any]] = []
    test = _test_mask(n, rng)
    for i, b in enumerate(_request_targets(w.held_out, test, rng)):
        changed, a = _edit_source(b, i % len(AUDIO_ATTRIBUTES), w.held_out, rng)
        src, dst = audios / f"muedit_{i:05d}_in.wav", audios / f"muedit_{i:05d}_out.wav"
        cap_in = _music_clip(w, src, a, rng)
        cap_out = _music_clip(w, dst, b, rng)
        templates = _EDIT_REQUESTS_HELD_OUT if test[i] else _EDIT_REQUESTS
        request = _fill(templates[changed], b, rng)
        items.append(_any_to_music(src.name, dst.name, "audio", request, cap_in, cap_out, rng))
        w.assign([src, dst], bool(test[i]))
    _json(w.root / "MUEdit" / "MUEditInstructions.json", items)


def _musicqa(w: _Writer, n: int, seed: int) -> None:
    rng = _rng(seed, "MusicQA")
    audios = w.root / "MusicQA" / "audios"
    audios.mkdir(parents=True)
    items: list[dict[str, Any]] = []
    test = _test_mask(n, rng)
    for i, a in enumerate(_balanced(_music_combos(w.held_out, False), n, rng)):
        path = audios / f"musicqa_{i:05d}.wav"
        caption = _music_clip(w, path, a, rng)
        asked = list(rng.permutation(list(AUDIO_ATTRIBUTES)))[: int(rng.integers(1, 4))]
        conversation: list[dict[str, str]] = []
        for attr in asked:
            q, ans = _QA[str(attr)][int(rng.integers(0, 2))]
            conversation += [
                {"from": "human", "value": q},
                {"from": "gpt", "value": ans.format(**a)},
            ]
        if rng.random() < 0.3:
            q = _DESCRIBE_QUESTIONS[int(rng.integers(0, len(_DESCRIBE_QUESTIONS)))]
            conversation += [{"from": "human", "value": q}, {"from": "gpt", "value": caption}]
        items.append({"audio_name": path.name, "conversation": conversation})
        w.assign([path], bool(test[i]))
    _json(w.root / "MusicQA" / "MusicQA.json", items)


def _alpaca(w: _Writer) -> None:
    folder = w.root / "Alpaca"
    folder.mkdir(parents=True)
    items = [
        {"conversation": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
        for q, a in _ALPACA
    ]
    _json(folder / "alpaca_data.json", items)


def _any_to_music(
    input_file: str,
    output_file: str,
    modality: str,
    request: str,
    input_caption: str,
    music_caption_text: str,
    rng: np.random.Generator,
) -> dict[str, Any]:
    answer = _fill(_ANSWERS, {"caption": music_caption_text}, rng)
    return {
        "input_file": input_file,
        "output_file": output_file,
        "conversation": [
            {
                "from": "human",
                "value": request,
                "input_modality": modality,
                "caption": input_caption,
            },
            {
                "from": "gpt",
                "value": answer,
                "output_modality": "audio",
                "caption": music_caption_text,
            },
        ],
    }


def _shuffled_attrs(
    space: dict[str, tuple[str, ...]], n: int, rng: np.random.Generator
) -> list[Attrs]:
    """n attribute dicts, balanced over all combinations, in random order."""
    combos = [_draw_attrs(space, i) for i in range(n)]
    return [combos[j] for j in rng.permutation(n)]


def generate(out: str | os.PathLike, seed: int = 0, n: int = DEFAULT_N) -> dict[str, int]:
    """Write the whole synthetic dataset below `out` (must be absent or empty).

    `n` = number of items per modality in the captioning sets (MUCaps clips, COCO images, MUVideo
    videos) and MusicQA clips; MUImage, MUVideo instructions and MUEdit get n // 2 items each (at
    least 1). MusicQA is the larger instruction set because answering questions about held-out
    clips is the hardest stage-3 skill (measured: held-out QA 0.90 with n // 2 clips).
    Returns counts of written files per kind.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root}: exists and is not an empty folder")
    half = max(1, n // 2)
    with atomic_dir(root) as tmp:  # a crash leaves no half-written dataset behind
        w = _Writer(root=tmp, attributes={}, train=[], test=[],
                    held_out=held_out_combinations(seed))
        _mucaps(w, n, seed)
        _coco(w, n, seed)
        _muvideo(w, n, min(half, n), seed)
        _muimage(w, half, seed)
        _musicqa(w, n, seed)
        _muedit(w, half, seed)
        _alpaca(w)
        _json(tmp / "attributes.json", dict(sorted(w.attributes.items())))
        _json(tmp / "split.json", {"train": sorted(w.train), "test": sorted(w.test)})
    counts = {"wav": 0, "png": 0, "mp4": 0}
    for rel in w.attributes:
        counts[rel.rsplit(".", 1)[1]] += 1
    return counts


def dataset_digest(root: str | os.PathLike) -> str:
    """SHA-256 over every file's relative path and content hash (for determinism checks)."""
    base = Path(root)
    files = sorted(q for q in base.rglob("*") if q.is_file())
    return sha256_json({p.relative_to(base).as_posix(): sha256_file(p) for p in files})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.synthetic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="output folder (absent or empty)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=DEFAULT_N,
                        help=f"items per modality (default {DEFAULT_N}: the size the tiny "
                             f"preset's training recipe is measured on)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        counts = generate(args.out, seed=args.seed, n=args.n)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    took = time.perf_counter() - start
    print(
        f"wrote {counts['wav']} wav, {counts['png']} png, {counts['mp4']} mp4 to {args.out} "
        f"in {took:.1f} s; digest {dataset_digest(args.out)[:16]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
