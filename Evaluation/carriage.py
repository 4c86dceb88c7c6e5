"""How much of each synthetic attribute do the frozen encoders carry? A linear probe.

    python -m Evaluation.carriage --data_root DATA [--preset tiny] [--sets MUCaps,COCO,MUVideo]

Why: the tiny presets use random-weight encoders, so whether an attribute of `data.synthetic` can be
learned at all depends on whether those random features keep it. This probe answers that before
any training: it pools each item's frozen features (audio: mean and standard deviation over time of
every hidden state; image and video: mean over tokens), z-scores them on the train split, fits a
one-vs-rest ridge regression per attribute on the train split and reports held-out accuracy (the
best of a few ridge strengths; chance is 1 / number of values). Prints one JSON object:
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

SETS = {  # caption set -> (modality, its media folder's `data.datasets.DataPaths` field)
    "MUCaps": ("audio", "mucaps_audio"),
    "COCO": ("image", "coco_images"),
    "MUVideo": ("video", "muvideo_videos"),
}
RIDGE_STRENGTHS = (0.1, 1.0, 10.0, 100.0)


def pooled(features: torch.Tensor, modality: str) -> np.ndarray:
    """One vector per item: audio (S, T, H) -> mean and std over T of each state; else mean."""
    x = features.double()
    if modality == "audio":
        return torch.cat([x.mean(1).flatten(), x.std(1).flatten()]).numpy()
    return x.mean(0).numpy()


def ridge_accuracy(x: np.ndarray, labels: Sequence[str], train: np.ndarray) -> float:
    """Held-out accuracy of one-vs-rest ridge regression (best strength in RIDGE_STRENGTHS)."""
    values = sorted(set(labels))
    y = np.array([[lab == v for v in values] for lab in labels], dtype=np.float64) * 2 - 1
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    z = (x - mu) / sd
    gram = z[train].T @ z[train]
    truth = y[~train].argmax(1)
    best = 0.0
    for lam in RIDGE_STRENGTHS:
        w = np.linalg.solve(gram + lam * np.eye(z.shape[1]), z[train].T @ y[train])
        best = max(best, float(((z[~train] @ w).argmax(1) == truth).mean()))
    return best


def probe(data_root: Path, preset: str, sets: Sequence[str]) -> dict:
    from data.datasets import DataPaths
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
