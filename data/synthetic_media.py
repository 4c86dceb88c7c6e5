"""The media of the synthetic data (`data.synthetic`): music clips, images and videos drawn from
their attributes, and deterministic writers (same input, same bytes).

- music (3 s, 16 kHz mono, 16-bit WAV): instrument as a 2 x 2 design of spectrum (dark / bright)
  and envelope (sustained / percussive) plus noise cues (see `_note`), register (fundamentals
  around 80-200 Hz versus 500-1200 Hz), tempo (legato versus staccato note rate);
- images (64x64 PNG): one coloured object of a given size at a random position; its shape varies
  as a nuisance;
- videos (16 frames, 32x32, 8 fps, intra-only H.264 MP4): a drifting coloured object while the
  whole scene brightens or darkens.
Why these properties (random tiny encoders carry them through pooling): docs/SYNTHETIC.md.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from data.media import write_wav
from data.synthetic_attributes import INSTRUMENTS, Attrs

__all__ = [
    "SAMPLE_RATE",
    "CLIP_SECONDS",
    "IMAGE_SIZE",
    "VIDEO_SIZE",
    "VIDEO_FRAMES",
    "VIDEO_FPS",
    "synth_music",
    "draw_image",
    "render_video",
    "write_music",
    "write_png",
    "write_mp4",
]

SAMPLE_RATE = 16000
CLIP_SECONDS = 3.0
IMAGE_SIZE = 64
VIDEO_SIZE = 32
VIDEO_FRAMES = 16
VIDEO_FPS = 8

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

