"""`score --control_predictions NAME=FILE,...`: how much a task's numbers move when the media is
replaced (silence, noise, another row's file), with a paired bootstrap over rows.

For each control: `identical_answers` is the share of rows whose answer text is unchanged, and
each metric gets `{"delta": main minus control, "ci95": [lo, hi]}`. The delta is the task's own
aggregate of the per-row scores (main minus control); the interval is the 2.5th and 97.5th
percentile of the mean per-row difference over `BOOTSTRAP_RESAMPLES` resamples of the rows,
drawn from the seed (the same row indices for main and control: paired). A model that does not
read its media answers every row identically under every control: all deltas and intervals are
exactly 0 and `identical_answers` is 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from Evaluation._common import EvalInputError

BOOTSTRAP_RESAMPLES = 1000
_CHUNK = 100  # resamples drawn per step (bounds memory on large sets)


def parse_control_predictions(text: str) -> dict[str, Path]:
    """"silence=a.json,noise=b.json" -> {"silence": Path("a.json"), ...}, names unique."""
    out: dict[str, Path] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, path = part.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise EvalInputError(f"--control_predictions: {part!r} is not NAME=FILE")
        if name in out:
            raise EvalInputError(f"--control_predictions: the name {name!r} is given twice")
        out[name] = Path(path)
    if not out:
        raise EvalInputError("--control_predictions: no NAME=FILE given")
    return out


def paired_bootstrap(main: np.ndarray, control: np.ndarray, seed: int,
                     resamples: int = BOOTSTRAP_RESAMPLES) -> list[float]:
    """95% interval of mean(main - control) over resampled rows (the same rows for both)."""
    diff = np.asarray(main, dtype=np.float64) - np.asarray(control, dtype=np.float64)
    if diff.ndim != 1 or diff.size == 0:
        raise ValueError("paired_bootstrap needs two equally long, non-empty score vectors")
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, _CHUNK):
        idx = rng.integers(0, diff.size, size=(min(_CHUNK, resamples - start), diff.size))
        means.append(diff[idx].mean(axis=1))
    lo, hi = np.percentile(np.concatenate(means), [2.5, 97.5])
    return [float(lo), float(hi)]


def metric_effect(main_rows: Sequence[float], control_rows: Sequence[float], seed: int,
                  aggregate: Callable[[Sequence[float]], float]) -> dict:
    """{"delta", "ci95"} of one metric from its per-row scores."""
    delta = aggregate(main_rows) - aggregate(control_rows)
    return {"delta": float(delta), "ci95": paired_bootstrap(np.asarray(main_rows),
                                                            np.asarray(control_rows), seed)}


def control_effect(main_answers: Sequence[str], control_answers: Sequence[str],
                   main_scores: Mapping[str, Sequence[float]],
                   control_scores: Mapping[str, Sequence[float]], seed: int,
                   aggregate: Callable[[Sequence[float]], float]) -> dict:
    """One control's block: identical_answers and one {"delta", "ci95"} per metric."""
    if len(main_answers) != len(control_answers):
        raise ValueError("main and control answers must cover the same rows")
    same = sum(a == b for a, b in zip(main_answers, control_answers))
    out: dict = {"identical_answers": same / len(main_answers)}
    for metric, rows in main_scores.items():
        out[metric] = metric_effect(rows, control_scores[metric], seed, aggregate)
    return out


DEFINITION = ("media_effect.<control>: the same rows generated with the media replaced "
              "(generate --media_control); identical_answers = share of rows whose answer text "
              "is unchanged; <metric>.delta = main minus control; <metric>.ci95 = paired "
              f"bootstrap over rows ({BOOTSTRAP_RESAMPLES} resamples, seeded by --seed) of the "
              "mean per-row difference. All 0 and identical_answers 1: the model does not use "
              "its media")
