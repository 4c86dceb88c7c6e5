"""MUEdit instructions from exact edits (speed, pitch) and from matched clip pairs.

    python -m DataSet.muedit instruct --audio_root MUEdit/audios --captions CAPS.json \
        [--edits MUEdit/audios/speed.json MUEdit/audios/pitch.json] \
        [--pairs PAIRS.json --pairs_dir DIR] --out MUEdit/MUEditInstructions.json

`input_file`/`output_file` are written relative to `--audio_root` (the folder the loader joins
them to). Exact edits get exact texts (the edit is known: "Make this music much slower.") and a
target caption that is the input caption plus the change; pairs get texts from the writer and
the target clip's own caption. The identity edit (factor 1, 0 cents) teaches nothing and is
counted under "identity" in the summary instead of becoming an item.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from DataSet.common import ItemError, StepError, finish
from DataSet.instructions import Request
from DataSet.writing import (
    Spec,
    add_writer_args,
    lookup_caption,
    write_conversations,
    writer_from_args,
    writer_settings,
)

_SEMITONES = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
              "eleven", "twelve")


def _degree(x: float) -> str:
    return "slightly " if x < 0.3 else ("much " if x >= 0.75 else "")


def speed_change(factor: float) -> tuple[str, str, str]:
    """(instruction, answer phrase, caption suffix) for a duration factor (1.5 = longer)."""
    way = "slower" if factor > 1 else "faster"
    d = _degree(abs(math.log2(factor)))
    return (f"Make this music {d}{way}.", f"{d}{way} than before",
            f"Played {d}{way}, at a {'lower' if factor > 1 else 'higher'} tempo.")


def pitch_change(cents: float) -> tuple[str, str, str]:
    way = "higher" if cents > 0 else "lower"
    st = abs(cents) / 100.0
    if st.is_integer() and 0 < st <= 12:
        amount = f"{_SEMITONES[int(st)]} semitone{'s' if st != 1 else ''}"
    else:
        amount = "a little" if st < 1 else "a few semitones"
    return (f"Transpose this music {amount} {way}.", f"transposed {amount} {way}",
            f"Transposed {amount} {way} in pitch.")


def edit_specs(edit_files: list[Path], audio_root: Path, captions: dict[str, str],
               skipped: dict[str, int]) -> list[tuple[str, Spec | Exception]]:
    out: list[tuple[str, Any]] = []
    for ef in edit_files:
        records = json.loads(ef.read_text(encoding="utf-8"))
        for r in records:
            src = os.path.relpath(ef.parent / r["input_file"], audio_root)
            dst = os.path.relpath(ef.parent / r["output_file"], audio_root)
            amount = float(r["amount"])
            if (r["kind"] == "speed" and amount == 1.0) or (r["kind"] == "pitch" and amount == 0):
                skipped["identity"] = skipped.get("identity", 0) + 1
                continue
            instr, phrase, suffix = (speed_change if r["kind"] == "speed" else pitch_change)(amount)
            try:
                cap = lookup_caption(captions, src)
            except ItemError as e:
                out.append((dst, e))
                continue
            out.append((dst, Spec(src, dst, "audio", cap, f"{cap.rstrip('.')}. {suffix}",
                                  instr, f"Here is the music, {phrase}.")))
    return out


def pair_specs(pairs_file: Path, pairs_dir: Path, audio_root: Path,
               captions: dict[str, str]) -> list[tuple[str, Spec | Exception]]:
    out: list[tuple[str, Any]] = []
    for p in json.loads(pairs_file.read_text(encoding="utf-8")):
        src = os.path.relpath(pairs_dir / p["input_file"], audio_root)
        dst = os.path.relpath(pairs_dir / p["output_file"], audio_root)
        key = f"pair:{src}->{dst}"
        try:
            cin, cout = lookup_caption(captions, src), lookup_caption(captions, dst)
        except ItemError as e:
            out.append((key, e))
            continue
        human = Request(key + ":human", "muedit_human", f"Input: {cin}\nTarget: {cout}")
        gpt = Request(key + ":gpt", "muedit_gpt", f"Music: {cout}")
        out.append((key, Spec(src, dst, "audio", cin, cout, human, gpt)))
    return out


def _main(args: argparse.Namespace) -> int:
    audio_root = Path(args.audio_root)
    captions = json.loads(Path(args.captions).read_text(encoding="utf-8"))
    if not isinstance(captions, dict):
        raise StepError(f"{args.captions}: expected a JSON object file -> caption")
    skipped: dict[str, int] = {}
    specs = edit_specs([Path(e) for e in args.edits], audio_root, captions, skipped)
    if args.pairs:
        specs += pair_specs(Path(args.pairs), Path(args.pairs_dir or audio_root), audio_root,
                            captions)
    if not specs:
        raise StepError("nothing to write: give --edits and/or --pairs")
    writer = writer_from_args(args)
    settings = {**writer_settings(args), "edits": args.edits, "pairs": args.pairs}
    report, written = write_conversations(
        "muedit-instruct", [(k, s) for k, s in specs if isinstance(s, Spec)], Path(args.out),
        writer, settings=settings, batch_size=args.batch_size, seed=args.seed,
        restart=args.restart, retry_failed=args.retry_failed, show_progress=not args.no_progress)
    for k, s in specs:  # no caption: failed before any writing, listed with the others
        if isinstance(s, Exception):
            report.failures[k] = f"{type(s).__name__}: {s}"
            report.total += 1
    if skipped:
        print(f"not turned into instructions: {skipped}", file=sys.stderr)
    print(f"{len(written)} instructions -> {args.out}", file=sys.stderr)
    return finish(report)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("instruct", help="write MUEditInstructions.json")
    p.add_argument("--audio_root", required=True, help="the MUEdit audio folder of the dataset")
    p.add_argument("--captions", required=True, help="caption JSON {file: caption}")
    p.add_argument("--edits", nargs="*", default=[], help="speed.json / pitch.json of the edits")
    p.add_argument("--pairs", help="pairs JSON from `match`")
    p.add_argument("--pairs_dir", help="folder the pair file names are relative to")
    p.add_argument("--out", required=True)
    add_writer_args(p)
    p.set_defaults(func=_main)
