"""Media controls for the `generate` verbs: the same rows answered with the music, image or video
replaced, so `score --control_predictions` can show whether the model's numbers depend on it.

- `none`: the row's own media (the default);
- `silence`: zeros of the decoded item's shape (a silent clip of the same length, a black image,
  black frames);
- `noise`: Gaussian noise as loud as the item: audio at the clip's RMS (zero mean, clipped to
  [-1, 1] like every decoded clip); images and frames per channel at the item's mean and
  standard deviation, rounded and clipped to 0..255. Seeded per row from `--seed` and the row's
  key, so a row gets the same noise whatever the batch size, order or number of processes;
- `shuffled`: another row's media of the same modality: the distinct files of the reference set
  are permuted by a fixed derangement drawn from `--seed` (no file keeps its place), so every row
  is answered with a file that is not its own.

Decoding uses the model's own loaders (`data.features.media_loader_for`, with the run's
--video_sampling), so a control changes only the content, never the preprocessing.
"""

from __future__ import annotations

import argparse
import hashlib
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np

from Evaluation._common import EvalInputError

CONTROLS = ("none", "silence", "noise", "shuffled")
MODALITIES = ("audio", "image", "video")


class MediaControlError(EvalInputError):
    """A control cannot be built for these rows (e.g. shuffling a single file)."""


def add_media_control_argument(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--media_control", default="none", choices=CONTROLS,
        help="replace each row's media to test whether the model listens: silence (zeros of the "
             "same length), noise (at the item's RMS, seeded per row from --seed), shuffled "
             "(another row's file, a fixed derangement from --seed); default none")


def derangement(n: int, seed: int) -> list[int]:
    """A permutation p of range(n) with p[i] != i for every i, fixed by `seed` (Sattolo's
    algorithm: a uniformly drawn single cycle)."""
    if n < 2:
        raise MediaControlError(f"shuffling needs at least 2 distinct media files, got {n}")
    rng = np.random.default_rng(seed)
    p = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(i))  # 0 <= j < i: never the element itself
        p[i], p[j] = p[j], p[i]
    return p


def row_seed(seed: int, key: str, modality: str) -> np.random.Generator:
    """A generator that depends only on (seed, row key, modality)."""
    digest = hashlib.sha256(f"{modality}\0{key}".encode("utf-8")).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


def silence(item: np.ndarray) -> np.ndarray:
    return np.zeros_like(item)


def noise(item: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise with the item's loudness: float audio at its RMS, uint8 pixels at its per-channel
    mean and standard deviation."""
    if item.dtype == np.uint8:
        x = item.astype(np.float64)
        axes = tuple(range(item.ndim - 1))  # channels last
        mean, std = x.mean(axis=axes), x.std(axis=axes)
        out = mean + std * rng.standard_normal(item.shape)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    x = item.astype(np.float64)
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    out = rms * rng.standard_normal(item.shape)
    return np.clip(out, -1.0, 1.0).astype(item.dtype)


class MediaControl:
    """Applies one control to rows' media: {modality: path} -> {modality: path or array}.

    `rows` lists every row's media of the whole reference set (not only the rows still to
    generate), so the shuffle does not depend on which rows a resumed or sharded run has left.
    `decode(modality, path)` returns the decoded array the model would read from `path`.
    """

    def __init__(self, control: str, seed: Optional[int],
                 rows: Iterable[Mapping[str, Any]],
                 decode: Callable[[str, str], np.ndarray]) -> None:
        if control not in CONTROLS:
            raise MediaControlError(f"media_control must be one of {list(CONTROLS)}, "
                                    f"got {control!r}")
        self.control = control
        self.seed = 0 if seed is None else int(seed)
        self.decode = decode
        self.swap: dict[str, dict[str, str]] = {}
        if control == "shuffled":
            for modality in MODALITIES:
                files = sorted({str(m[modality]) for m in rows if m.get(modality) is not None})
                if not files:
                    continue
                p = derangement(len(files), self.seed)
                self.swap[modality] = {f: files[p[i]] for i, f in enumerate(files)}

    def apply(self, key: str, media: Mapping[str, Any]) -> dict[str, Any]:
        """The media the model reads for the row `key` under this control."""
        out: dict[str, Any] = {}
        for modality, path in media.items():
            if path is None or self.control == "none":
                out[modality] = path
            elif self.control == "shuffled":
                out[modality] = self.swap[modality][str(path)]
            elif self.control == "silence":
                out[modality] = silence(self.decode(modality, str(path)))
            else:
                rng = row_seed(self.seed, key, modality)
                out[modality] = noise(self.decode(modality, str(path)), rng)
        return out


def model_decoder(engine: Any) -> Callable[[str, str], np.ndarray]:
    """`decode(modality, path)` with the loaders the engine's feature front end uses (the
    model's sample rate and frame count, the run's --video_sampling)."""
    from data.features import media_loader_for

    loaders: dict[str, Callable[[str], Any]] = {}
    video_sampling = getattr(engine.features, "video_sampling", None)

    def decode(modality: str, path: str) -> np.ndarray:
        if modality not in loaders:
            loaders[modality] = media_loader_for(engine.model.cfg, modality, video_sampling)[0]
        return np.asarray(loaders[modality](path))

    return decode
