"""Test audio for the DataSet tests (tones and chords of known pitch and tempo, real recordings)
and the measures the MUEdit checks use (duration, pitch, tempo)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf


def harmonic_tone(f0: float, seconds: float, sr: int, partials: int = 5,
                  amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = sum((1.0 / k) * np.sin(2 * np.pi * f0 * k * t) for k in range(1, partials + 1))
    env = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)  # 20 ms fades, no clicks
    return (amp * x / np.abs(x).max() * env).astype(np.float32)


def chord_pulses(sr: int, bpm: float = 120.0, beats: int = 6,
                 freqs: tuple[float, ...] = (261.63, 329.63, 392.0)) -> np.ndarray:
    """A C-major chord struck on every beat (decaying): polyphonic, known pitch and tempo."""
    ioi = int(round(60.0 / bpm * sr))
    n = ioi * beats
    t = np.arange(ioi) / sr
    note = sum(np.sin(2 * np.pi * f * k * t) / k for f in freqs for k in (1, 2, 3))
    note = note * np.exp(-t * 6.0) * np.minimum(1.0, t / 0.003)
    out = np.zeros(n)
    for b in range(beats):
        out[b * ioi:(b + 1) * ioi] += note
    return (0.6 * out / np.abs(out).max()).astype(np.float32)


def real_recording() -> Path:
    """A short real music recording that ships with an installed package (gradio's demo
    media): 3 s, 22.05 kHz."""
    spec = importlib.util.find_spec("gradio")
    assert spec is not None and spec.origin is not None
    p = Path(spec.origin).parent / "media_assets" / "audio" / "cantina.wav"
    assert p.is_file(), p
    return p


def real_speech() -> Path:
    spec = importlib.util.find_spec("gradio")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "media_assets" / "audio" / "heath_ledger.mp3"


def write(path: Path, wave: np.ndarray, sr: int, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, sr, **kw)
    return path


# ----- measures

CENT_STEP = 2.0  # resolution of the log-frequency grid


def median_f0(y: np.ndarray, sr: int, fmin: float = 100.0, fmax: float = 1000.0) -> float:
    """Median pyin f0 over the voiced frames (Hz)."""
    f0, voiced, _ = librosa.pyin(y, fmin=fmin, fmax=fmax, sr=sr, frame_length=2048)
    return float(np.nanmedian(f0[voiced]))


def log_spectrum(y: np.ndarray, sr: int, fmin: float = 80.0, fmax: float = 5000.0) -> np.ndarray:
    """Time-averaged magnitude spectrum on a log-frequency grid of CENT_STEP cents."""
    spec = np.abs(librosa.stft(y, n_fft=8192, hop_length=2048)).mean(axis=1)
    freqs = np.fft.rfftfreq(8192, 1.0 / sr)
    n = int(1200 * np.log2(fmax / fmin) / CENT_STEP)
    grid = fmin * 2.0 ** (np.arange(n) * CENT_STEP / 1200)
    return np.log1p(np.interp(grid, freqs, spec) / (spec.max() + 1e-12) * 1000.0)


def shift_cents(ref: np.ndarray, sr_ref: int, y: np.ndarray, sr_y: int,
                max_cents: float = 1300.0) -> float:
    """How many cents `y` sits above `ref`: the lag that best aligns their log spectra."""
    a, b = log_spectrum(ref, sr_ref), log_spectrum(y, sr_y)
    a, b = a - a.mean(), b - b.mean()
    max_lag = int(max_cents / CENT_STEP)
    lags = np.arange(-max_lag, max_lag + 1)
    scores = []
    for lag in lags:
        if lag >= 0:
            s = np.dot(a[: len(a) - lag], b[lag:])
        else:
            s = np.dot(a[-lag:], b[: len(b) + lag])
        scores.append(s)
    scores = np.asarray(scores)
    i = int(np.argmax(scores))
    frac = 0.0
    if 0 < i < len(scores) - 1:  # parabolic refinement
        y0, y1, y2 = scores[i - 1], scores[i], scores[i + 1]
        denom = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / denom if denom else 0.0
    return float((lags[i] + frac) * CENT_STEP)


def tempo(y: np.ndarray, sr: int) -> float:
    t, _ = librosa.beat.beat_track(y=y, sr=sr)
    return float(np.atleast_1d(t)[0])


def beat_period(y: np.ndarray, sr: int) -> float:
    """Median inter-onset interval (s): the tempo of a clip with one onset per beat."""
    onsets = librosa.onset.onset_detect(y=y, sr=sr, units="time", hop_length=256)
    assert len(onsets) >= 3, f"too few onsets to measure tempo: {onsets}"
    return float(np.median(np.diff(onsets)))
