"""Audio in and out for the dataset steps: decode at the file's own sample rate, write WAV.

`data.media.load_audio(path, sr)` always converts to a requested rate; edits must keep the
input's rate, so the native rate is read from the header first (libsndfile, else FFmpeg) and
passed back as `sr` (no resampling happens when the rates match). Decoding itself stays in
`data.media`, so every format it reads works here and fails with the same `MediaError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from data.media import MediaError, load_audio
from data.media import write_wav as _write_wav


def native_rate(path: str | os.PathLike) -> int:
    """The sample rate stored in the file (first audio stream for containers)."""
    p = Path(path)
    if not p.is_file():
        raise MediaError(p, "file not found")
    try:
        return int(sf.info(str(p)).samplerate)
    except sf.SoundFileError:
        pass  # not a libsndfile format (m4a/aac/mp4...): ask FFmpeg
    try:
        with av.open(str(p), mode="r") as container:
            if not container.streams.audio:
                raise MediaError(p, "no audio stream")
            stream = container.streams.audio[0]
            rate = (stream.codec_context.sample_rate if stream.codec_context else 0) or stream.rate
    except (av.error.FFmpegError, ValueError) as e:
        raise MediaError(p, f"cannot read the audio header: {e}") from e
    if not rate or rate <= 0:
        raise MediaError(p, "audio stream has no sample rate")
    return int(rate)


def load_native(path: str | os.PathLike, **kwargs) -> tuple[np.ndarray, int]:
    """float32 mono in [-1, 1] at the file's own rate, and that rate."""
    sr = native_rate(path)
    return load_audio(path, sr, **kwargs), sr


def write_wav(path: str | os.PathLike, wave: np.ndarray, sr: int,
              subtype: str = "PCM_16") -> Path:
    """Write a float waveform as WAV through the project's one writer (atomic; NaN/inf and, for
    PCM_16, any sample beyond full scale are errors, never clipped)."""
    return _write_wav(path, wave, sr, subtype=subtype)
