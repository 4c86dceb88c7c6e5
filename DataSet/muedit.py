"""MUEdit: music-editing pairs (speed, pitch, matched pairs) and their instruction JSON.

    python -m DataSet.muedit speed --audio_dir IN --out_dir OUT --factors 0.5,0.7,1.0,1.3,1.5
        -> OUT/0_5/<stem>.wav ... OUT/1_5/<stem>.wav   (factor = output / input duration)
    python -m DataSet.muedit pitch --audio_dir IN --out_dir OUT --cents -500,500
        -> OUT/down_500/<stem>.wav, OUT/up_500/<stem>.wav
    python -m DataSet.muedit match --audio_dir IN --out PAIRS.json
        -> pairs of different clips with similar tempo and loudness (instruction-driven edits)
    python -m DataSet.muedit instruct --edits OUT [--pairs PAIRS.json] --captions CAPS.json
        --out MUEditInstructions.json   (the any-to-music schema `data` reads)

Edits keep the input's sample rate, run in float and never clip (see `DataSet.edits`); each
output WAV is written atomically and recorded in `OUT/<step>.progress.jsonl`, so reruns resume.
`OUT/<step>.json` lists every edit made (input, output, factor or cents, gain applied).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from DataSet import edits
from DataSet.audio import load_native, write_wav
from DataSet.common import (
    Manifest,
    ModelInfo,
    StepError,
    StepReport,
    add_common_args,
    finish,
    list_media,
    open_step,
    run_items,
)
from util.atomic import write_json

DEFAULT_FACTORS = (0.5, 0.7, 1.0, 1.3, 1.5)
DEFAULT_CENTS = (-500.0, 500.0)


def parse_floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--{what}: expected comma-separated numbers: {e}") from e
    if not values:
        raise argparse.ArgumentTypeError(f"--{what}: no values given")
    return values


class _LastFile:
    """Decodes each input once although several edits of it run one after the other."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.value: tuple[Any, int] | None = None

    def __call__(self, path: Path) -> tuple[Any, int]:
        if path != self.path:
            self.path, self.value = path, load_native(path)
        assert self.value is not None
        return self.value


def _stem_table(files: Sequence[Path]) -> tuple[dict[str, Path], dict[str, str]]:
    """stem -> file, and the files whose stem collides with an earlier one (they would
    overwrite its outputs) with the reason."""
    seen: dict[str, Path] = {}
    clashes: dict[str, str] = {}
    for f in files:
        if f.stem in seen:
            clashes[f.name] = f"output name {f.stem}.wav already used by {seen[f.stem].name}"
        else:
            seen[f.stem] = f
    return seen, clashes


def run_edits(
    kind: str,
    audio_dir: Path,
    out_dir: Path,
    amounts: Sequence[float],
    *,
    engine: str,
    fine: bool = True,
    subtype: str = "PCM_16",
    recursive: bool = False,
    restart: bool = False,
    retry_failed: bool = False,
    show_progress: bool = True,
) -> StepReport:
    """Make every (file, amount) edit; `kind` is "speed" (factors) or "pitch" (cents)."""
    if kind not in ("speed", "pitch"):
        raise ValueError(f"kind must be 'speed' or 'pitch', got {kind!r}")
    folder: Callable[[float], str] = edits.speed_folder if kind == "speed" else edits.pitch_folder
    names = [folder(a) for a in amounts]
    if len(set(names)) != len(names):
        raise StepError(f"--{'factors' if kind == 'speed' else 'cents'} repeats a value: {amounts}")
    if kind == "speed" and any(a <= 0 for a in amounts):
        raise StepError(f"stretch factors must be positive, got {amounts}")
    files = list_media(audio_dir, "audio", recursive=recursive)
    if not files:
        raise StepError(f"{audio_dir}: no audio files")
    try:
        version = edits.engine_version(engine)
    except edits.EditError as e:  # a missing engine stops the step before any item
        raise StepError(str(e)) from e
    manifest = Manifest(
        step=kind,
        settings={"amounts": list(amounts), "engine": engine, "fine": fine, "subtype": subtype,
                  "audio_dir": str(audio_dir.resolve())},
        models=[ModelInfo(name=engine, revision=version, role="editor")],
    )
    progress = open_step(manifest, out_dir, restart=restart)
    stems, clashes = _stem_table(files)
    items = [(f"{name}/{stem}.wav", (src, amount, name))
             for stem, src in stems.items() for amount, name in zip(amounts, names)]
    for bad, reason in clashes.items():
        if bad not in progress.failed:
            progress.fail(bad, reason)
    loader = _LastFile()

    def work(batch: Sequence[tuple[Path, float, str]]) -> list[dict]:
        src, amount, name = batch[0]
        wave, sr = loader(src)
        if kind == "speed":
            res = edits.time_stretch(wave, sr, amount, engine=engine, fine=fine)
        else:
            res = edits.pitch_shift(wave, sr, amount, engine=engine, fine=fine)
        rel = f"{name}/{src.stem}.wav"
        write_wav(out_dir / rel, res.wave, sr, subtype=subtype)
        return [{
            "input_file": os.path.relpath(src, out_dir), "output_file": rel, "kind": kind,
            "amount": amount, "sample_rate": sr, "input_samples": int(wave.shape[0]),
            "output_samples": int(res.wave.shape[0]), "gain": res.gain,
            "peak_before_gain": res.peak_before_gain,
        }]

    report = run_items(kind, items, work, progress, batch_size=1, retry_failed=retry_failed,
                       show_progress=show_progress)
    for bad, reason in clashes.items():
        report.failures[bad] = reason
    write_json(out_dir / f"{kind}.json",
               [progress.done[k] for k, _ in items if k in progress.done])
    return report


# ---------------------------------------------------------------------------------------------
# Command line


def _edit_main(args: argparse.Namespace, kind: str) -> int:
    engine = args.engine if args.engine != "auto" else edits.default_engine()
    amounts = args.factors if kind == "speed" else args.cents
    report = run_edits(kind, Path(args.audio_dir), Path(args.out_dir), amounts, engine=engine,
                       fine=not args.r2, subtype=args.subtype, recursive=args.recursive,
                       restart=args.restart, retry_failed=args.retry_failed,
                       show_progress=not args.no_progress)
    return finish(report, Path(args.out_dir) / f"{kind}.report.json")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m DataSet.muedit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for kind in ("speed", "pitch"):
        p = sub.add_parser(kind, help=f"{kind} edits of every audio file in a folder")
        p.add_argument("--audio_dir", required=True)
        p.add_argument("--out_dir", required=True)
        if kind == "speed":
            p.add_argument("--factors", type=lambda s: parse_floats(s, "factors"),
                           default=list(DEFAULT_FACTORS),
                           help="output duration / input duration (1.5 = 1.5x longer)")
        else:
            p.add_argument("--cents", type=lambda s: parse_floats(s, "cents"),
                           default=list(DEFAULT_CENTS), help="pitch shifts in cents")
        p.add_argument("--engine", default="auto", choices=["auto", *edits.ENGINES],
                       help="auto: rubberband when installed, else librosa")
        p.add_argument("--r2", action="store_true", help="Rubber Band's faster R2 engine")
        p.add_argument("--subtype", default="PCM_16", choices=["PCM_16", "FLOAT"],
                       help="WAV sample format of the outputs (peaks are kept <= full scale)")
        p.add_argument("--recursive", action="store_true")
        add_common_args(p)
    from DataSet import matching, muedit_instruct

    matching.add_parser(sub)
    muedit_instruct.add_parser(sub)
    return ap


def _join_negative_lists(argv: Sequence[str]) -> list[str]:
    """`--cents -500,500` -> `--cents=-500,500`: argparse would take "-500,500" for a flag."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        if a in ("--cents", "--factors"):
            nxt = next(it, None)
            out.append(a if nxt is None else f"{a}={nxt}")
        else:
            out.append(a)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(_join_negative_lists(argv))
    try:
        if args.cmd in ("speed", "pitch"):
            return _edit_main(args, args.cmd)
        return args.func(args)
    except StepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
