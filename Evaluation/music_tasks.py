"""What the four music-generation evaluations share: reference rows, the prediction manifest, the
`generate` loop and the two-verb CLI (the scoring lives in `Evaluation.music_scoring`).

A task (`TaskSpec`) says which published reference file it reads and which input modality its
rows carry:
- text2music: MUCaps eval captions {file: caption}; the caption is the prompt and the CLAP text,
  the file is the reference music;
- image2music / video2music / editing: published any-to-music instruction lists ({"input_file",
  "output_file", "conversation": [{"from": "human", "value": instruction, ...}, ..., {"from":
  "gpt", "caption": target caption, ...}]}); the first human turn is the prompt (as published),
  the last gpt turn's caption the CLAP text, output_file the reference music.

Predictions: one WAV per row, named after the reference music (the published results/<model>/
layout), written at the decoder's own sample rate, plus a manifest JSON (--out) listing them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from Evaluation._common import EvalInputError, conversation, fail, read_json

SHOW = 5  # how many offending names an error lists


@dataclass(frozen=True)
class MusicRow:
    """One generation request and its reference: `key` names the output WAV (unique per file)."""

    key: str
    prompt: str
    caption: str
    media: Optional[str]  # input file, relative to --media_dir (None for text-to-music)
    target: str  # reference music file, relative to the reference-music folder


@dataclass(frozen=True)
class TaskSpec:
    name: str
    modality: Optional[str]  # input modality fed to the model ("image", "video", "audio")
    load: Callable[[str | Path], list[MusicRow]]
    media_help: str
    targets_in_media_dir: bool  # reference music lives in --media_dir unless --target_dir
    published: tuple[str, ...]  # the metrics the published evaluate.py computed for this table


def unique_keys(names: list[str]) -> list[str]:
    """Output names from reference file names: the stem, "-2", "-3" ... on repeats."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        stem = Path(name).stem
        n = seen.get(stem.casefold(), 0) + 1
        seen[stem.casefold()] = n
        keys.append(stem if n == 1 else f"{stem}-{n}")
    return keys


def load_caption_rows(path: str | Path) -> list[MusicRow]:
    """MUCaps eval captions {file: caption}: prompt = caption, reference = file."""
    data = read_json(path, "references")
    if not isinstance(data, dict) or not data:
        raise EvalInputError(f"references {path}: expected a non-empty JSON object "
                             "{music file: caption} (MUCaps eval captions)")
    bad = [k for k, v in data.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise EvalInputError(f"references {path}: {len(bad)} captions are empty or not strings "
                             f"(first: {bad[:SHOW]})")
    names = list(data)
    return [MusicRow(k, data[n].strip(), data[n].strip(), None, n)
            for k, n in zip(unique_keys(names), names)]


def instruction_rows(modality: str) -> Callable[[str | Path], list[MusicRow]]:
    """Loader of a published any-to-music instruction list whose inputs are `modality`."""

    def load(path: str | Path) -> list[MusicRow]:
        data = read_json(path, "references")
        if not isinstance(data, list) or not data:
            raise EvalInputError(f"references {path}: expected a non-empty JSON list of "
                                 "instructions")
        parsed = [_instruction(item, f"references {path} item {i}", modality)
                  for i, item in enumerate(data)]
        keys = unique_keys([p[3] for p in parsed])
        return [MusicRow(k, *p) for k, p in zip(keys, parsed)]

    return load


def _instruction(item: Any, where: str, modality: str) -> tuple[str, str, str, str]:
    """(prompt, target caption, input file, output file) of one instruction item."""
    if not isinstance(item, dict):
        raise EvalInputError(f"{where}: not a JSON object")
    for field in ("input_file", "output_file"):
        if not isinstance(item.get(field), str) or not item[field]:
            raise EvalInputError(f"{where}: needs a string {field!r}")
    turns = conversation(item, where)
    given = turns[0].get("input_modality")
    if given is not None and given != modality:
        raise EvalInputError(f"{where}: input_modality is {given!r}, this task reads {modality}")
    prompt = turns[0]["value"].strip()
    caption = turns[-1].get("caption")
    if not prompt:
        raise EvalInputError(f"{where}: the first turn's 'value' (the instruction) is empty")
    if not isinstance(caption, str) or not caption.strip():
        raise EvalInputError(f"{where}: the last turn has no 'caption' (the target music text)")
    return prompt, caption.strip(), item["input_file"], item["output_file"]


# ---------------------------------------------------------------------------------------------
# Prediction manifest


def audio_dir_for(out: Path, given: Optional[str]) -> Path:
    return Path(given) if given else out.with_name(out.stem + "_audio")


def load_predictions(path: str | Path) -> dict[str, Optional[Path]]:
    """{row key: WAV path or None} from a manifest written by `generate`, or from a folder of
    audio files named after the reference music (other systems' published results folders)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir()
                       if f.suffix.lower() in (".wav", ".flac", ".mp3", ".ogg"))
        if not files:
            raise EvalInputError(f"predictions folder {p} holds no audio files")
        return dict(zip(unique_keys([f.name for f in files]), files))
    data = read_json(p, "predictions")
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, dict):
        raise EvalInputError(f"predictions {p}: expected a manifest with an 'items' object "
                             "(written by the generate verb) or a folder of audio files")
    out: dict[str, Optional[Path]] = {}
    for key, item in items.items():
        audio = item.get("audio") if isinstance(item, dict) else None
        out[key] = None if audio is None else (p.parent / audio)
    return out


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
    mismatch = [k for k in ("task", "system", "flags") if old.get(k) != header[k]]
    if mismatch:
        raise EvalInputError(f"{out} was written with another {', '.join(mismatch)} "
                             f"({[old.get(k) for k in mismatch]}); use another --out")
    return old


def run_music_generation(spec: TaskSpec, args: argparse.Namespace) -> int:
    """Generate every row's music, resuming rows already in --out; one manifest save per row."""
    from app.args import settings_values
    from app.errors import bad_input_errors, one_line
    from Evaluation._generation import load_engine

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
    except (EvalInputError, *bad_input_errors()) as exc:
        return fail(one_line(exc))
    flags = settings_values(args)
    header = {"task": spec.name, "references": str(args.references),
              "system": engine.description, "flags": flags, "music": args.music}
    try:
        manifest = _previous_manifest(out, header)
    except EvalInputError as exc:
        return fail(str(exc))
    return _generate_rows(spec, args, engine, rows, manifest, target_dir, flags)


def _generate_rows(spec: TaskSpec, args: argparse.Namespace, engine: Any, rows: list[MusicRow],
                   manifest: dict, target_dir: Optional[Path], flags: dict) -> int:
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
        if spec.modality is not None:
            media = {spec.modality: str(Path(args.media_dir) / r.media)}
        try:
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
    add_generate_parser(sub, lambda a: run_music_generation(spec, a), spec.media_help, music=True)
    add_score_parser(sub, spec)
    return ap


def main(spec: TaskSpec, doc: str, argv: Optional[list[str]] = None) -> int:
    args = build_parser(spec, doc).parse_args(argv)
    return args.run(args)


def entry(spec: TaskSpec, doc: str) -> None:
    sys.exit(main(spec, doc))
