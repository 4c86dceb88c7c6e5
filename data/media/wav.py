"""The one WAV writer of the project (atomic; NaN/inf refused; nothing clipped silently)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from data.media.errors import MediaError, PathLike
from util.atomic import atomic_path

#: WAV sample formats `write_wav` writes. FLOAT keeps every value as it is; PCM_16 is compact.
WAV_SUBTYPES = ("FLOAT", "PCM_16")
#: A 2-D wave with more rows than this is taken for a (samples, channels) array and refused.
MAX_WAV_CHANNELS = 32


def write_wav(
    path: PathLike, wave: np.ndarray, sr: int, *, subtype: str = "FLOAT"
) -> Path:
    """Write `wave` (float, (n,) mono or (channels, n)) to the WAV file `path`, atomically.

    The one WAV writer of the project, so every file we produce has the same guarantees:
    - a reader never sees half a file (temporary file, fsync, rename: `util.atomic`);
    - NaN or infinite samples raise `MediaError` naming the path: they mean a numerical fault
      upstream, and writing them as silence (or noise) would hide it;
    - nothing is clipped silently. "FLOAT" (default) stores 32-bit float samples, so values
      beyond [-1, 1] are kept exactly (a player clips on playback, `load_audio` clips on reading);
      "PCM_16" (compact, for generated datasets) refuses any |x| > 1 with `MediaError` instead of
      clipping it.
    Returns `path` as a Path.
    """
    path = Path(path)
    data = _wav_frames(path, wave)
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"{path}: sample rate must be a positive integer, got {sr!r}")
    if subtype not in WAV_SUBTYPES:
        raise ValueError(f"{path}: WAV subtype must be one of {WAV_SUBTYPES}, got {subtype!r}")
    if not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise MediaError(path, f"refusing to write audio with {bad} NaN or infinite samples")
    peak = float(np.abs(data).max())
    if subtype == "PCM_16" and peak > 1.0:
        raise MediaError(
            path, f"peak {peak:.3f} exceeds 1.0: PCM_16 would clip it (write FLOAT, or scale)"
        )
    with atomic_path(path) as tmp:
        sf.write(tmp, data, int(sr), subtype=subtype, format="WAV")
    return path


def _wav_frames(path: Path, wave: np.ndarray) -> np.ndarray:
    """(n,) or (channels, n) float -> soundfile's (n,) or (n, channels) float32."""
    arr = np.asarray(wave)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{path}: expected a float waveform, got dtype {arr.dtype}")
    if arr.ndim == 2:
        if arr.shape[0] > MAX_WAV_CHANNELS:
            raise ValueError(
                f"{path}: expected (channels, samples) with at most {MAX_WAV_CHANNELS} channels, "
                f"got shape {arr.shape} (transpose a (samples, channels) array)"
            )
        arr = arr.T
    elif arr.ndim != 1:
        raise ValueError(f"{path}: expected a (n,) or (channels, n) waveform, got {arr.shape}")
    if arr.shape[0] == 0 or arr.size == 0:
        raise MediaError(path, "refusing to write audio with no samples")
    return np.ascontiguousarray(arr, dtype=np.float32)
