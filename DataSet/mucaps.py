"""MUCaps: music clips -> music filter -> music captions (`MUCapsCaptions.json`).

    python -m DataSet.mucaps filter --audio_dir D --out filter.json [thresholds]
        -> {"file": {"keep": bool, "reasons": [...], "measures": {...}}}
    python -m DataSet.mucaps caption --audio_dir D [--filter filter.json] --out CAPS.json
        --model MU_LLAMA_CKPT --llama_dir DIR --mert_path DIR --knn_dir DIR
        -> {"file": "caption"}  (the published schema)

The filter keeps instrumental music: Silero VAD speech share, integrated loudness (LUFS),
silence ratio and clipping ratio against thresholds given as flags; every decision is recorded
with its measures (`DataSet.quality`). Captions come from MU-LLaMA as published (or another
model) through the serving layer `app` (`DataSet.music_captioner`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soxr

from DataSet import quality
from DataSet.audio import load_native
from DataSet.common import (
    Manifest,
    ModelInfo,
    StepError,
    StepReport,
    add_common_args,
    finish,
    list_media,
    open_step,
    run_cli,
    run_items,
)
from DataSet.music_captioner import CAPTION_QUESTION
from util.atomic import write_json


def measure_clip(path: Path, vad: quality.SpeechDetector,
                 silence_db: float = -60.0) -> dict[str, Any]:
    wave, sr = load_native(path)
    seconds = wave.shape[0] / sr
    speech = vad.speech_seconds(soxr.resample(wave, sr, quality.VAD_RATE, quality="HQ")
                                if sr != quality.VAD_RATE else wave)
    return {
        "seconds": round(seconds, 3),
        "sample_rate": sr,
        "speech_seconds": round(speech, 3),
        "speech_ratio": round(speech / seconds, 4) if seconds > 0 else 0.0,
        "loudness_lufs": quality.finite_or_none(round(quality.loudness_lufs(wave, sr), 2)),
        "silence_ratio": round(quality.silence_ratio(wave, sr, silence_db), 4),
        "clipping_ratio": round(quality.clipping_ratio(wave), 6),
        "peak": round(float(np.max(np.abs(wave))), 4),
    }


def run_filter(audio_dir: Path, out: Path, thresholds: quality.Thresholds, *,
               vad_threshold: float = 0.5, recursive: bool = False, restart: bool = False,
               retry_failed: bool = False, show_progress: bool = True
               ) -> tuple[StepReport, dict[str, Any]]:
    files = list_media(audio_dir, "audio", recursive=recursive)
    if not files:
        raise StepError(f"{audio_dir}: no audio files")
    vad = quality.SpeechDetector(threshold=vad_threshold)
    manifest = Manifest(
        step=out.stem,
        settings={"thresholds": vars(thresholds), "vad_threshold": vad_threshold,
                  "audio_dir": str(audio_dir.resolve())},
        models=[ModelInfo("silero-vad", vad.identity, "speech detector")],
    )
    progress = open_step(manifest, out.parent, restart=restart)
    items = [(str(f.relative_to(audio_dir)), f) for f in files]

    def work(batch: Sequence[Path]) -> list[dict]:
        m = measure_clip(batch[0], vad, thresholds.silence_db)
        reasons = quality.decide(m, thresholds)
        return [{"keep": not reasons, "reasons": reasons, "measures": m}]

    report = run_items("filter", items, work, progress, retry_failed=retry_failed,
                       show_progress=show_progress)
    result = {k: progress.done[k] for k, _ in items if k in progress.done}
    write_json(out, result)
    return report, result


def _filter_main(args: argparse.Namespace) -> int:
    t = quality.Thresholds(max_speech_ratio=args.max_speech_ratio, min_loudness=args.min_loudness,
                           max_silence_ratio=args.max_silence_ratio,
                           max_clipping_ratio=args.max_clipping_ratio,
                           min_seconds=args.min_seconds, silence_db=args.silence_db)
    report, result = run_filter(Path(args.audio_dir), Path(args.out), t,
                                vad_threshold=args.vad_threshold, recursive=args.recursive,
                                restart=args.restart, retry_failed=args.retry_failed,
                                show_progress=not args.no_progress)
    kept = sum(r["keep"] for r in result.values())
    print(f"kept {kept} of {len(result)} measured clips -> {args.out}", file=sys.stderr)
    return finish(report)


def kept_files(filter_json: Path | None, audio_dir: Path) -> list[tuple[str, Path]]:
    """(name, path) of the clips to caption: the filter's kept ones, else every audio file."""
    if filter_json is None:
        return [(str(f.relative_to(audio_dir)), f) for f in list_media(audio_dir, "audio")]
    import json

    decisions = json.loads(filter_json.read_text(encoding="utf-8"))
    return [(k, audio_dir / k) for k, v in sorted(decisions.items()) if v.get("keep")]


def _caption_main(args: argparse.Namespace) -> int:
    from DataSet.captioners import run_captions
    from DataSet.music_captioner import MusicCaptioner

    audio_dir = Path(args.audio_dir)
    items = kept_files(Path(args.filter) if args.filter else None, audio_dir)
    captioner = MusicCaptioner.from_args(args)
    report, _ = run_captions("music", items, captioner, Path(args.out),
                             settings=captioner.settings,
                             batch_size=args.batch_size, seed=args.seed, restart=args.restart,
                             retry_failed=args.retry_failed, show_progress=not args.no_progress)
    return finish(report)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m DataSet.mucaps", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("filter", help="keep instrumental music (VAD + quality measures)")
    f.add_argument("--audio_dir", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--max_speech_ratio", type=float, default=0.1)
    f.add_argument("--vad_threshold", type=float, default=0.5, help="Silero speech probability")
    f.add_argument("--min_loudness", type=float, default=-45.0, help="LUFS")
    f.add_argument("--max_silence_ratio", type=float, default=0.5)
    f.add_argument("--silence_db", type=float, default=-60.0,
                   help="50 ms frames below this RMS (dBFS) count as silent")
    f.add_argument("--max_clipping_ratio", type=float, default=0.01)
    f.add_argument("--min_seconds", type=float, default=1.0)
    f.add_argument("--recursive", action="store_true")
    add_common_args(f)
    f.set_defaults(func=_filter_main)
    c = sub.add_parser("caption", help="caption music clips with MU-LLaMA (or an M2UGen model)")
    c.add_argument("--audio_dir", required=True)
    c.add_argument("--filter", help="filter JSON: caption only the kept clips")
    c.add_argument("--out", required=True, help="caption JSON {file: caption}")
    c.add_argument("--question", default=CAPTION_QUESTION)
    from DataSet.music_captioner import add_music_captioner_args

    add_music_captioner_args(c)
    c.set_defaults(func=_caption_main)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
