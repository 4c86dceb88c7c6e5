"""What the four music-generation evaluations share on the generating side: the `generate` loop
(one WAV per row plus a resumable manifest) and the two-verb CLI. The rows and the manifest
format live in `Evaluation.music_rows`, the scoring in `Evaluation.music_scoring`.

Predictions: one WAV per row, named after the reference music (the published results/<model>/
layout), written at the decoder's own sample rate, plus a manifest JSON (--out) listing them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from Evaluation._common import EvalInputError, fail
from Evaluation.music_rows import SHOW, MusicRow, TaskSpec, audio_dir_for

if TYPE_CHECKING:
    from Evaluation.media_control import MediaControl


# ---------------------------------------------------------------------------------------------
# generate


def _check_files(rows: list[MusicRow], folder: Path, attr: str, what: str, refs: str) -> None:
    absent = sorted({getattr(r, attr) for r in rows if not (folder / getattr(r, attr)).is_file()})
    if absent:
        raise EvalInputError(f"{len(absent)} {what} named in {refs} are missing from {folder} "
                             f"(first: {', '.join(absent[:SHOW])})")


def _duration(path: Path) -> float:
    import soundfile as sf

    try:
        return float(sf.info(str(path)).duration)
    except (RuntimeError, sf.LibsndfileError):  # not a libsndfile format: decode it
        from data.media import load_audio

        return len(load_audio(path, 16000, max_seconds=None)) / 16000


def _previous_manifest(out: Path, header: dict) -> dict:
    from Evaluation._generation import read_previous

    old = read_previous(out, "predictions")
    if old is None:
        return {**header, "items": {}}
    # manifests written before media controls existed were made with the real media
    old.setdefault("media_control", "none")
    mismatch = [k for k in ("task", "system", "flags", "media_control")
                if old.get(k) != header[k]]
    if mismatch:
        raise EvalInputError(f"{out} was written with another {', '.join(mismatch)} "
                             f"({[old.get(k) for k in mismatch]}); use another --out")
    return old


def run_music_generation(spec: TaskSpec, args: argparse.Namespace) -> int:
    """Generate every row's music, resuming rows already in --out; one manifest save per row."""
    from app.args import settings_values
    from app.errors import bad_input_errors, one_line
    from Evaluation._generation import load_engine, media_control_for

    out = Path(args.out)
    media_dir = Path(args.media_dir)
    target_dir = Path(args.target_dir) if args.target_dir else (
        media_dir if spec.targets_in_media_dir else None)
    try:
        rows = spec.load(args.references)
        if spec.modality is not None:
            _check_files(rows, media_dir, "media", f"{spec.modality} inputs", args.references)
        if target_dir is not None and args.audio_seconds is None:
            _check_files(rows, target_dir, "target", "reference music files", args.references)
        engine = load_engine(args)
        rows_media = [{} if spec.modality is None else
                      {spec.modality: str(media_dir / r.media)} for r in rows]
        control = media_control_for(args, engine, rows_media)
    except (EvalInputError, *bad_input_errors()) as exc:
        return fail(one_line(exc))
    flags = settings_values(args)
    header = {"task": spec.name, "references": str(args.references),
              "system": engine.description, "flags": flags, "music": args.music,
              "media_control": control.control}
    try:
        manifest = _previous_manifest(out, header)
    except EvalInputError as exc:
        return fail(str(exc))
    return _generate_rows(spec, args, engine, rows, manifest, target_dir, flags, control)


def _generate_rows(spec: TaskSpec, args: argparse.Namespace, engine: Any, rows: list[MusicRow],
                   manifest: dict, target_dir: Optional[Path], flags: dict,
                   control: "MediaControl") -> int:
    from tqdm.auto import tqdm

    from app.errors import bad_input_errors, one_line
    from app.engine import write_music
    from Evaluation._generation import save_json

    out = Path(args.out)
    audio_dir = audio_dir_for(out, args.audio_dir)
    items = manifest["items"]

    def done(r: MusicRow) -> bool:
        item = items.get(r.key)
        if not isinstance(item, dict):
            return False
        return item.get("audio") is None or (out.parent / item["audio"]).is_file()

    todo = [r for r in rows if not done(r)]
    max_seconds = float(engine.model.cfg.decoder.max_seconds)
    capped = new = silent = 0
    for r in tqdm(todo, desc=spec.name, unit="clip", initial=len(rows) - len(todo),
                  total=len(rows)):
        media = None
        try:
            if spec.modality is not None:
                media = control.apply(r.key, {spec.modality: str(Path(args.media_dir) / r.media)})
            seconds = flags["audio_seconds"]
            if seconds is None and target_dir is not None:
                seconds = _duration(target_dir / r.target)
                capped += seconds > max_seconds
                seconds = min(seconds, max_seconds)
            settings = engine.settings({**flags, "audio_seconds": seconds})
            reply = engine.run_turn(r.prompt, media=media, settings=settings, music=args.music)
        except bad_input_errors() as exc:
            save_json(out, manifest)
            return fail(f"row {r.key} of {args.references}: {one_line(exc)}")
        wav = None
        if reply.music is not None:
            wav = write_music(audio_dir / f"{r.key}.wav", reply)
        silent += wav is None
        items[r.key] = {
            "audio": None if wav is None else _relative(wav, out.parent),
            "sample_rate": reply.sample_rate if wav else None,
            "seconds": None if wav is None else round(len(reply.music) / reply.sample_rate, 3),
            "text": reply.text, "prompt": r.prompt, "reference": r.target,
        }
        new += 1
        save_json(out, manifest)
    save_json(out, manifest)
    print(f"wrote {out}: {new} new clips ({silent} without music), {len(rows) - len(todo)} "
          f"already present, audio in {audio_dir}"
          + (f"; {capped} clips capped at the decoder's {max_seconds:g} s" if capped else ""))
    return 0


def _relative(path: Path, base: Path) -> str:
    import os

    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser(spec: TaskSpec, doc: str) -> argparse.ArgumentParser:
    from app.args import OneLineParser
    from Evaluation._generation import add_generate_parser
    from Evaluation.music_scoring import add_score_parser

    ap = OneLineParser(prog=f"python -m Evaluation.{spec.name}", description=doc,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)
    add_generate_parser(sub, lambda a: run_music_generation(spec, a), spec.media_help, music=True,
                        media_control=spec.modality is not None)
    add_score_parser(sub, spec)
    return ap


def main(spec: TaskSpec, doc: str, argv: Optional[list[str]] = None) -> int:
    args = build_parser(spec, doc).parse_args(argv)
    return args.run(args)


def entry(spec: TaskSpec, doc: str) -> None:
    sys.exit(main(spec, doc))
