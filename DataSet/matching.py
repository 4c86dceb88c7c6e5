"""MUEdit pair matching: pairs of DIFFERENT clips close in tempo and loudness.

The published step paired random AudioSet clips whose tempo (and, meant to be, overall level)
were close, so that "turn this into that" instructions stay plausible. Ours measures every clip
once (resumable: `<out>.features.progress.jsonl`), then pairs deterministically:

    score(a, b) = |log2(tempo_a / tempo_b)| / log2(1 + tempo_tol)
                + |loudness_a - loudness_b| / loudness_tol

and a pair is kept when both terms are <= 1; each clip gets up to `--pairs_per_file` partners,
best score first. Output: a JSON list of {"input_file", "output_file", "score", "tempo_in",
"tempo_out", "loudness_in", "loudness_out"} with file names relative to `--audio_dir`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from data.media import load_audio
from DataSet import quality
from DataSet.common import (
    ItemError,
    Manifest,
    StepReport,
    add_common_args,
    finish,
    list_media,
    open_step,
    run_items,
)
from util.atomic import write_json

MATCH_RATE = 22050


def measure(path: Path) -> dict[str, Any]:
    wave = load_audio(path, MATCH_RATE)
    loud = quality.loudness_lufs(wave, MATCH_RATE)
    if not math.isfinite(loud):
        raise ItemError("silent clip: no loudness to match")
    return {"tempo": quality.tempo_bpm(wave, MATCH_RATE), "loudness": loud}


def pair_score(a: dict, b: dict, tempo_tol: float, loudness_tol: float) -> tuple[float, float]:
    """(tempo term, loudness term), each <= 1 when within tolerance."""
    if a["tempo"] <= 0 or b["tempo"] <= 0:
        return math.inf, math.inf
    t = abs(math.log2(a["tempo"] / b["tempo"])) / math.log2(1.0 + tempo_tol)
    return t, abs(a["loudness"] - b["loudness"]) / loudness_tol


def make_pairs(features: dict[str, dict], *, tempo_tol: float = 0.05, loudness_tol: float = 3.0,
               pairs_per_file: int = 1) -> list[dict[str, Any]]:
    names = sorted(features)
    pairs = []
    for a in names:
        cands = []
        for b in names:
            if a == b:
                continue
            t, lo = pair_score(features[a], features[b], tempo_tol, loudness_tol)
            if t <= 1.0 and lo <= 1.0:
                cands.append((t + lo, b))
        for score, b in sorted(cands)[:pairs_per_file]:
            pairs.append({
                "input_file": a, "output_file": b, "score": round(score, 4),
                "tempo_in": features[a]["tempo"], "tempo_out": features[b]["tempo"],
                "loudness_in": features[a]["loudness"], "loudness_out": features[b]["loudness"],
            })
    return pairs


def run_match(audio_dir: Path, out: Path, *, tempo_tol: float, loudness_tol: float,
              pairs_per_file: int, restart: bool = False, retry_failed: bool = False,
              show_progress: bool = True) -> tuple[StepReport, list[dict]]:
    files = list_media(audio_dir, "audio")
    manifest = Manifest(step=f"{out.stem}.features",
                        settings={"audio_dir": str(audio_dir.resolve()), "rate": MATCH_RATE})
    progress = open_step(manifest, out.parent, restart=restart)
    items = [(f.name, f) for f in files]
    report = run_items("match", items, lambda b: [measure(b[0])], progress,
                       retry_failed=retry_failed, show_progress=show_progress)
    feats = {k: progress.done[k] for k, _ in items if k in progress.done}
    pairs = make_pairs(feats, tempo_tol=tempo_tol, loudness_tol=loudness_tol,
                       pairs_per_file=pairs_per_file)
    write_json(out, pairs)
    return report, pairs


def _main(args: argparse.Namespace) -> int:
    report, pairs = run_match(Path(args.audio_dir), Path(args.out), tempo_tol=args.tempo_tol,
                              loudness_tol=args.loudness_tol, pairs_per_file=args.pairs_per_file,
                              restart=args.restart, retry_failed=args.retry_failed,
                              show_progress=not args.no_progress)
    print(f"{len(pairs)} pairs -> {args.out}")
    return finish(report)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("match", help="pair clips of similar tempo and loudness")
    p.add_argument("--audio_dir", required=True)
    p.add_argument("--out", required=True, help="pairs JSON")
    p.add_argument("--tempo_tol", type=float, default=0.05, help="relative tempo difference")
    p.add_argument("--loudness_tol", type=float, default=3.0, help="LU")
    p.add_argument("--pairs_per_file", type=int, default=1)
    add_common_args(p)
    p.set_defaults(func=_main)
