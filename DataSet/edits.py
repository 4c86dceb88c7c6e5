"""Time stretching and pitch shifting for MUEdit, in float, at the input's own sample rate.

Engine: the Rubber Band Library (`rubberband` command line, Debian package `rubberband-cli`,
GPL-2.0-or-later, maintained by Particular Programs; release 3.x here) with its R3 "finer"
engine by default. Why it and not a WSOLA library:
- WSOLA (audiotsm, pytsmod) repeats or drops whole waveform segments: fine for speech and
  monophonic lines, but on polyphonic music it smears transients and doubles beats, and the
  Python WSOLA packages are unmaintained (audiotsm's last release is from 2017).
- librosa's `time_stretch`/`pitch_shift` are a plain phase vocoder (no phase locking, no transient
  handling): audible "phasiness" on real music. It remains as the `librosa` engine, a fallback
  that needs nothing outside the venv.
- Rubber Band handles transients and phase coherence for music (used by Ardour, Audacity,
  Sonic Visualiser); `-D` gives the exact output length, `-f` the exact frequency ratio.

Contract (both engines): float32 mono in, float32 mono out; `time_stretch(factor)` returns exactly
`round(factor * len(x))` samples (factor = output duration / input duration, so 1.5 is 1.5x
longer); `pitch_shift(cents)` keeps the length. No clipping: when the processed signal's peak
exceeds full scale it is scaled down to `PEAK_LIMIT`, and the gain applied is returned.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from DataSet.common import ItemError

Engine = Literal["rubberband", "librosa"]
ENGINES: tuple[str, ...] = ("rubberband", "librosa")
#: Peak after scaling down an over-full-scale result (a hair under 1.0 so that 16-bit PCM
#: rounding can never reach the rails).
PEAK_LIMIT = 0.99


class EditError(ItemError):
    """The edit could not be made (engine missing or failing); the message says why."""


@dataclass
class Edited:
    """An edited waveform and what was done to keep it in range."""

    wave: np.ndarray
    gain: float  # 1.0 unless the peak exceeded full scale and the result was scaled down
    peak_before_gain: float


def rubberband_available() -> bool:
    return shutil.which("rubberband") is not None


def default_engine() -> str:
    return "rubberband" if rubberband_available() else "librosa"


def engine_version(engine: str) -> str:
    """A version string for the manifest."""
    if engine == "rubberband":
        exe = _rubberband_exe()
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
        return "rubberband " + (out.stdout.strip() or out.stderr.strip().splitlines()[-1])
    import librosa

    return f"librosa {librosa.__version__}"


def _rubberband_exe() -> str:
    exe = shutil.which("rubberband")
    if exe is None:
        raise EditError("the `rubberband` program is not installed (Debian: apt-get install "
                        "rubberband-cli); use --engine librosa for the phase-vocoder fallback")
    return exe


def _run_rubberband(x: np.ndarray, sr: int, args: list[str], fine: bool) -> np.ndarray:
    """Run the CLI on float32 WAV temp files (float in and out: no 16-bit round trip)."""
    exe = _rubberband_exe()
    with tempfile.TemporaryDirectory(prefix="rb_") as d:
        src, dst = Path(d) / "in.wav", Path(d) / "out.wav"
        sf.write(src, x, sr, subtype="FLOAT")
        cmd = [exe, "-q", "-3" if fine else "-2", *args, str(src), str(dst)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0 or not dst.exists():
            raise EditError(f"rubberband failed ({' '.join(cmd[:-2])}): "
                            f"{res.stderr.strip() or res.returncode}")
        y, out_sr = sf.read(dst, dtype="float32", always_2d=True)
    if out_sr != sr:
        raise EditError(f"rubberband changed the sample rate {sr} -> {out_sr}")
    return y[:, 0] if y.shape[1] == 1 else y.mean(axis=1)


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad to exactly n samples (engines may be off by a frame or two)."""
    if y.shape[0] >= n:
        return y[:n]
    return np.pad(y, (0, n - y.shape[0]))


def _limit_peak(y: np.ndarray) -> Edited:
    y = np.asarray(y, dtype=np.float32)
    if not np.all(np.isfinite(y)):
        raise EditError("the edit produced NaN or infinite samples")
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    gain = 1.0
    if peak > 1.0:
        gain = PEAK_LIMIT / peak
        y = y * np.float32(gain)
    return Edited(wave=y, gain=gain, peak_before_gain=peak)


def time_stretch(x: np.ndarray, sr: int, factor: float, *, engine: str = "rubberband",
                 fine: bool = True) -> Edited:
    """Stretch `x` to `factor` times its duration, keeping the pitch."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"stretch factor must be a positive number, got {factor}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    n_out = max(1, int(round(factor * x.shape[0])))
    if factor == 1.0:
        y = x.copy()
    elif engine == "rubberband":
        y = _run_rubberband(x, sr, ["-D", f"{n_out / sr:.9f}"], fine)
    elif engine == "librosa":
        import librosa

        y = librosa.effects.time_stretch(x, rate=1.0 / factor)  # librosa's rate = speed-up
    else:
        raise ValueError(f"unknown engine {engine!r}; choose from {ENGINES}")
    return _limit_peak(_fit_length(y, n_out))


def pitch_shift(x: np.ndarray, sr: int, cents: float, *, engine: str = "rubberband",
                fine: bool = True) -> Edited:
    """Shift the pitch of `x` by `cents` (100 per semitone), keeping the duration."""
    if not math.isfinite(cents):
        raise ValueError(f"cents must be finite, got {cents}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if cents == 0:
        y = x.copy()
    elif engine == "rubberband":
        ratio = 2.0 ** (cents / 1200.0)
        y = _run_rubberband(x, sr, ["-f", f"{ratio:.12f}"], fine)
    elif engine == "librosa":
        import librosa

        y = librosa.effects.pitch_shift(x, sr=sr, n_steps=cents / 100.0, bins_per_octave=12,
                                        res_type="soxr_hq")
    else:
        raise ValueError(f"unknown engine {engine!r}; choose from {ENGINES}")
    return _limit_peak(_fit_length(y, x.shape[0]))


def speed_folder(factor: float) -> str:
    """The published folder name of a stretch factor: 0.5 -> "0_5", 1.0 -> "1_0"."""
    text = f"{factor:.6f}".rstrip("0")
    if text.endswith("."):
        text += "0"
    return text.replace(".", "_")


def pitch_folder(cents: float) -> str:
    """The folder name of a pitch shift: -500 -> "down_500", 500 -> "up_500", 0 -> "same"."""
    if cents == 0:
        return "same"
    magnitude = f"{abs(cents):g}".replace(".", "_")
    return f"{'up' if cents > 0 else 'down'}_{magnitude}"
