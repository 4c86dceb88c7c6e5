"""Audio measures for the music filter and the MUEdit pair matching.

- loudness: integrated loudness in LUFS (ITU-R BS.1770-4 K-weighting and gating, via
  pyloudnorm); -inf for digital silence, reported as None in JSON.
- silence ratio: share of 50 ms frames whose RMS is below `silence_db` dBFS (default -60).
- clipping ratio: share of samples at or above `clip_level` in magnitude.
- speech: Silero VAD (weights shipped inside the `silero-vad` package, run with torch JIT):
  speech seconds and share of the clip, from `get_speech_timestamps` at 16 kHz.
- tempo: librosa's beat tracker (BPM).
These replace the published "SNR" filter, which compared the clip with freshly drawn unit noise
and inverted the sign (it kept the quietest clips).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

VAD_RATE = 16000


def loudness_lufs(wave: np.ndarray, sr: int) -> float:
    """Integrated loudness (LUFS). Clips shorter than one 400 ms gating block are measured on a
    zero-padded block (pyloudnorm refuses them otherwise)."""
    import pyloudnorm

    x = np.asarray(wave, dtype=np.float64)
    block = int(math.ceil(0.4 * sr))
    if x.shape[0] < block:
        x = np.pad(x, (0, block - x.shape[0]))
    return float(pyloudnorm.Meter(sr).integrated_loudness(x))


def frame_rms_db(wave: np.ndarray, sr: int, frame_seconds: float = 0.05) -> np.ndarray:
    n = max(1, int(sr * frame_seconds))
    usable = (wave.shape[0] // n) * n
    if usable == 0:
        frames = wave[None, :]
    else:
        frames = wave[:usable].reshape(-1, n)
    rms = np.sqrt(np.mean(np.square(frames.astype(np.float64)), axis=1))
    return 20.0 * np.log10(np.maximum(rms, 1e-10))


def silence_ratio(wave: np.ndarray, sr: int, silence_db: float = -60.0) -> float:
    return float(np.mean(frame_rms_db(wave, sr) < silence_db))


def clipping_ratio(wave: np.ndarray, clip_level: float = 0.999) -> float:
    return float(np.mean(np.abs(wave) >= clip_level)) if wave.size else 0.0


def tempo_bpm(wave: np.ndarray, sr: int) -> float:
    import librosa

    tempo, _ = librosa.beat.beat_track(y=np.asarray(wave, dtype=np.float32), sr=sr)
    return float(np.atleast_1d(tempo)[0])


class SpeechDetector:
    """Silero VAD, loaded once from the weights inside the `silero-vad` package."""

    def __init__(self, threshold: float = 0.5, onnx: bool = False) -> None:
        from silero_vad import get_speech_timestamps, load_silero_vad

        self.model = load_silero_vad(onnx=onnx)
        self._timestamps = get_speech_timestamps
        self.threshold = threshold
        self.identity = "silero-vad " + _package_version("silero-vad") + (" onnx" if onnx else "")

    def speech_seconds(self, wave16k: np.ndarray) -> float:
        """Seconds of speech in a 16 kHz float clip."""
        import torch

        audio = torch.from_numpy(np.ascontiguousarray(wave16k, dtype=np.float32))
        with torch.no_grad():
            stamps = self._timestamps(audio, self.model, threshold=self.threshold,
                                      sampling_rate=VAD_RATE)
        self.model.reset_states()
        return sum(s["end"] - s["start"] for s in stamps) / VAD_RATE


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


@dataclass
class Thresholds:
    """A clip is kept as music when every measure is within its threshold."""

    max_speech_ratio: float = 0.1  # share of the clip that the VAD marks as speech
    min_loudness: float = -45.0  # LUFS; quieter clips are near-silent
    max_silence_ratio: float = 0.5
    max_clipping_ratio: float = 0.01
    min_seconds: float = 1.0
    silence_db: float = -60.0  # a 50 ms frame below this RMS (dBFS) counts as silent


def decide(measures: dict[str, Any], t: Thresholds) -> list[str]:
    """Reasons to reject a clip (empty: keep)."""
    reasons = []
    if measures["seconds"] < t.min_seconds:
        reasons.append(f"shorter than {t.min_seconds} s")
    if measures["speech_ratio"] > t.max_speech_ratio:
        reasons.append(f"speech {measures['speech_ratio']:.2f} > {t.max_speech_ratio}")
    loud = measures["loudness_lufs"]
    if loud is None or loud < t.min_loudness:
        reasons.append(f"loudness {loud} LUFS < {t.min_loudness}")
    if measures["silence_ratio"] > t.max_silence_ratio:
        reasons.append(f"silence {measures['silence_ratio']:.2f} > {t.max_silence_ratio}")
    if measures["clipping_ratio"] > t.max_clipping_ratio:
        reasons.append(f"clipping {measures['clipping_ratio']:.4f} > {t.max_clipping_ratio}")
    return reasons


def finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
