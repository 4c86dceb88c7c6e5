"""How much of each synthetic attribute do the frozen encoders carry? A linear probe.

    python -m Evaluation.carriage --data_root DATA [--preset tiny] [--sets MUCaps,COCO,MUVideo]

Why: the tiny presets use random-weight encoders, so whether an attribute of `data.synthetic` can be
learned at all depends on whether those random features keep it. This probe answers that before
any training: it pools each item's frozen features (audio: mean and standard deviation over time of
every hidden state; image and video: mean over tokens), z-scores them on the train split, fits a
one-vs-rest ridge regression per attribute on the train split and reports held-out accuracy
(chance is 1 / number of values). The ridge strength is chosen on a validation fifth carved from the
train split, then the probe is refit on the whole train split: the test split is scored once.
Prints one JSON object:
{set: {attribute: accuracy}, ..., "n_test": {set: n}}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from Evaluation.ground_truth import missing_ground_truth

SETS = {  # caption set -> (modality, its media folder's `data.paths.DataPaths` field)
    "MUCaps": ("audio", "mucaps_audio"),
    "COCO": ("image", "coco_images"),
    "MUVideo": ("video", "muvideo_videos"),
}
RIDGE_STRENGTHS = (0.1, 1.0, 10.0, 100.0, 1000.0)
VAL_FRACTION = 0.2


def pooled(features: torch.Tensor, modality: str) -> np.ndarray:
    """One vector per item: audio (S, T, H) -> mean and std over T of each state; else mean."""
    x = features.double()
    if modality == "audio":
        return torch.cat([x.mean(1).flatten(), x.std(1).flatten()]).numpy()
    return x.mean(0).numpy()


def _ridge_fit(z: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    return np.linalg.solve(z.T @ z + lam * np.eye(z.shape[1]), z.T @ y)


def _accuracy(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return float(((z @ w).argmax(1) == y.argmax(1)).mean())


def ridge_accuracy(x: np.ndarray, labels: Sequence[str], train: np.ndarray,
                   val_fraction: float = VAL_FRACTION, seed: int = 0) -> float:
    """Held-out accuracy of one-vs-rest ridge regression whose strength (from RIDGE_STRENGTHS)
    is picked on a validation part of the train split, never on the test split."""
    values = sorted(set(labels))
    y = np.array([[lab == v for v in values] for lab in labels], dtype=np.float64) * 2 - 1
    train_idx = np.flatnonzero(train)
    perm = np.random.default_rng(seed).permutation(train_idx)
    n_val = max(1, int(round(len(perm) * val_fraction)))
    val, fit = perm[:n_val], perm[n_val:]
    if len(fit) == 0:
        raise ValueError(f"{len(train_idx)} training items leave none to fit after validation")

    def zscore(rows: np.ndarray) -> np.ndarray:
        mu, sd = x[rows].mean(0), x[rows].std(0) + 1e-6
        return (x - mu) / sd

    z = zscore(fit)
    lam = max(RIDGE_STRENGTHS,
              key=lambda s: _accuracy(z[val], y[val], _ridge_fit(z[fit], y[fit], s)))
    z = zscore(train_idx)
    w = _ridge_fit(z[train_idx], y[train_idx], lam)
    return _accuracy(z[~train], y[~train], w)


def probe(data_root: Path, preset: str, sets: Sequence[str]) -> dict:
    from data.paths import DataPaths
    from data.features import load_encoder, media_loader_for
    from llama.config import get_preset

    cfg = get_preset(preset)
    paths = DataPaths.from_root(data_root)
    attributes = json.loads((data_root / "attributes.json").read_text())
    test = set(json.loads((data_root / "split.json").read_text())["test"])
    result: dict = {"n_test": {}}
    for name in sets:
        modality, field = SETS[name]
        folder = getattr(paths, field).relative_to(data_root).as_posix()
        files = sorted(k for k in attributes if k.startswith(folder + "/"))
        if not files:
            raise ValueError(f"{data_root}: no {name} items in attributes.json")
        encoder = load_encoder(cfg, modality, "cpu")
        load, _ = media_loader_for(cfg, modality)
        rows = []
        for start in range(0, len(files), 16):
            items = [load(str(data_root / f)) for f in files[start: start + 16]]
            rows += [pooled(f, modality) for f in encoder.encode_items(items)]
        x = np.stack(rows)
        train = np.array([f not in test for f in files])
        if train.all() or not train.any():
            raise ValueError(f"{data_root}: {name} needs items in both splits of split.json")
        result[name] = {
            attr: round(ridge_accuracy(x, [attributes[f][attr] for f in files], train), 3)
            for attr in attributes[files[0]]
        }
        result["n_test"][name] = int((~train).sum())
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", required=True,
                   help="a folder written by python -m data.synthetic")
    p.add_argument("--preset", default="tiny", help="configuration preset naming the encoders")
    p.add_argument("--sets", default=",".join(SETS),
                   help=f"comma-separated, from {', '.join(SETS)}")
    args = p.parse_args(argv)
    root = Path(args.data_root)
    problem = missing_ground_truth(root)
    if problem:
        print(f"Evaluation.carriage: {problem}", file=sys.stderr)
        return 2
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in SETS]
    if unknown or not sets:
        p.error(f"--sets: unknown {unknown}; choose from {', '.join(SETS)}")
    try:
        with torch.no_grad():
            result = probe(root, args.preset, sets)
    except ValueError as e:
        print(f"Evaluation.carriage: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
