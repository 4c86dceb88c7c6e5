"""How FAD reads each clip (fad-pytorch's window and crop) and FAD-inf (fadtk's extrapolation).

Window: fad-pytorch embeds one window of `sample_size` = 2^18 samples per file (16.4 s at
16 kHz), cut into 10 chunks (`Evaluation.metrics.audio.fixed_chunks`). Two crops:
- `random` (what the published run did, through aeiou's `AudioDataset` with its defaults): the
  window starts at a uniformly drawn position in [0, len - 2^18] (0 for shorter files, then
  zero-padded); a window whose peak is below -60 dBFS is redrawn from the same file up to 2 times,
  and if it is still silent, replaced by a window drawn from a randomly chosen file of the same
  set, up to 2 times. Here the draws come from one seeded generator per set, in file order.
- `first`: the first 2^18 samples, nothing redrawn (deterministic; silence stays silence).
The two agree on every file of at most 2^18 samples that is not silent.

FAD-inf (fadtk `score_inf`): FAD of n embeddings drawn with replacement from the evaluated set
against the full reference statistics, for 25 values of n evenly spaced from 500 to the set's
size; the line FAD = slope / n + intercept fitted by least squares; FAD-inf is the intercept
(the FAD of an infinite sample), reported with the slope and the fit's R^2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from Evaluation.metrics.audio import frechet_distance, gaussian_stats

FAD_SAMPLE_SIZE = 2 ** 18
SILENCE_DB = -60.0  # aeiou's is_silence threshold (peak in dBFS)
MAX_REDRAWS = 2
CROPS = ("first", "random")


def is_silent(wave: np.ndarray, threshold_db: float = SILENCE_DB) -> bool:
    """aeiou's test: the window's peak, in dB full scale, is below the threshold."""
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    return peak == 0.0 or 20.0 * np.log10(peak) < threshold_db


def window_at(wave: np.ndarray, start: int, size: int = FAD_SAMPLE_SIZE) -> np.ndarray:
    """`size` samples from `start`, zero-padded at the end (aeiou's PadCrop)."""
    out = np.zeros(size, dtype=np.float32)
    part = np.asarray(wave, dtype=np.float32)[start:start + size]
    out[: len(part)] = part
    return out


def random_window(wave: np.ndarray, rng: np.random.Generator,
                  size: int = FAD_SAMPLE_SIZE) -> np.ndarray:
    return window_at(wave, int(rng.integers(0, max(0, len(wave) - size) + 1)), size)


@dataclass
class CropCounts:
    """What the random crop did to one set (reported so its quirks are visible)."""

    files: int = 0
    longer_than_window: int = 0  # files whose window position was drawn
    redrawn_in_file: int = 0  # silent windows drawn again from the same file
    replaced_from_other_file: int = 0  # silent windows replaced by another file's window

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def fad_windows(count: int, load: Callable[[int], np.ndarray], crop: str,
                rng: np.random.Generator, counts: CropCounts,
                size: int = FAD_SAMPLE_SIZE) -> list[np.ndarray]:
    """One window per file 0..count-1 (`load(i)` returns file i at the embedder's rate)."""
    if crop not in CROPS:
        raise ValueError(f"unknown FAD crop {crop!r} (choose from {', '.join(CROPS)})")
    out = []
    for i in range(count):
        wave = load(i)
        counts.files += 1
        counts.longer_than_window += len(wave) > size
        if crop == "first":
            out.append(window_at(wave, 0, size))
            continue
        window = _redrawn(wave, rng, counts, size)
        replaced = 0
        while is_silent(window) and replaced < MAX_REDRAWS:
            window = _redrawn(load(int(rng.integers(count))), rng, counts, size)
            replaced += 1
            counts.replaced_from_other_file += 1
        out.append(window)
    return out


def _redrawn(wave: np.ndarray, rng: np.random.Generator, counts: CropCounts,
             size: int) -> np.ndarray:
    """aeiou's PadCrop: a random window, drawn again (at most twice) while silent."""
    window = random_window(wave, rng, size)
    for _ in range(MAX_REDRAWS):
        if not is_silent(window):
            break
        window = random_window(wave, rng, size)
        counts.redrawn_in_file += 1
    return window


def fad_inf(reference: np.ndarray, generated: np.ndarray, seed: int = 0, steps: int = 25,
            min_n: int = 500) -> dict[str, float]:
    """fadtk's FAD-inf of `generated` against `reference` (both (n, d) embedding sets)."""
    mu_ref, cov_ref = gaussian_stats(reference)
    emb = np.asarray(generated, dtype=np.float64)
    if emb.ndim != 2 or len(emb) < 2:
        raise ValueError(f"FAD-inf needs (n >= 2, d) embeddings, got shape {emb.shape}")
    rng = np.random.default_rng(seed)
    ns = [int(n) for n in np.linspace(min_n, len(emb), steps)]
    fads = []
    for n in ns:
        pick = emb[rng.choice(len(emb), size=n, replace=True)]
        fads.append(frechet_distance(mu_ref, cov_ref, *gaussian_stats(pick)))
    xs, ys = 1.0 / np.asarray(ns, dtype=np.float64), np.asarray(fads)
    slope, intercept = np.polyfit(xs, ys, 1)
    r2 = 1.0 - np.sum((ys - (slope * xs + intercept)) ** 2) / np.sum((ys - ys.mean()) ** 2)
    return {"value": float(intercept), "slope": float(slope), "r2": float(r2),
            "n_min": ns[0], "n_max": ns[-1], "steps": steps, "seed": seed}
