"""MUEdit instructions from exact edits (speed, pitch) and from matched clip pairs.

    python -m DataSet.muedit instruct --audio_root MUEdit/audios --captions CAPS.json \
        [--edits MUEdit/audios/speed.json MUEdit/audios/pitch.json] \
        [--pairs PAIRS.json --pairs_dir DIR] --out MUEdit/MUEditInstructions.json

`input_file`/`output_file` are written relative to `--audio_root` (the folder the loader joins
them to). Exact edits get exact texts that say the direction, a degree and the amount ("Make
this music slightly slower, at 0.77x its original tempo.", "Lower the pitch of this music by
five semitones (500 cents).") and a target caption that is the input caption plus the change;
with `--writer llm` a chat model rephrases them (the published v2 used Mistral) and a rephrasing
that loses the amount is retried. Pairs get an instruction naming what changes (instrument and
genre from `--attributes`, else the two captions; the LLM gets the same facts) and the target
clip's own caption. The identity edit (factor 1, 0 cents) teaches nothing and is counted under
"identity" in the summary instead of becoming an item.
"""

from __future__ import annotations

import argparse
import json
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
#: |factor - 1| up to this is "slightly" (the published degrees: 0.7 / 1.3 slightly, 0.5 / 1.5
#: significantly).
SLIGHT = 0.3 + 1e-9


def _num(x: float) -> str:
    """2.0 -> "2", 1/0.7 -> "1.43", 1/1.3 -> "0.77"."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


def speed_change(factor: float) -> tuple[str, str, str]:
    """(instruction, answer phrase, caption suffix) for a duration factor (1.5 = 1.5x longer,
    i.e. slower): direction, a degree word and the new tempo as a multiple of the old."""
    if factor <= 0 or factor == 1:
        raise ValueError(f"not a speed change: factor {factor}")
    way = "slower" if factor > 1 else "faster"
    degree = "slightly" if abs(factor - 1) <= SLIGHT else "much"
    amount = f"{degree} {way}, at {_num(1 / factor)}x the original tempo"
    return (f"Make this music {degree} {way}, at {_num(1 / factor)}x its original tempo.",
            amount, f"Played {amount}.")


def pitch_change(cents: float) -> tuple[str, str, str]:
    """(instruction, answer phrase, caption suffix): direction, semitones and the cents."""
    if cents == 0:
        raise ValueError("not a pitch change: 0 cents")
    way = "higher" if cents > 0 else "lower"
    st = abs(cents) / 100.0
    if st.is_integer() and 0 < st <= 12:
        steps = f"{_SEMITONES[int(st)]} semitone{'s' if st != 1 else ''}"
    elif st == 0.5:
        steps = "a quarter tone"
    else:
        steps = f"{st:g} semitones"
    amount = f"{steps} ({abs(cents):g} cents)"
    verb = "Raise" if cents > 0 else "Lower"
    return (f"{verb} the pitch of this music by {amount}.", f"{amount} {way} in pitch",
            f"Transposed {amount} {way}.")


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
            # the template writer keeps the exact texts; an LLM rephrases them (published v2)
            human = Request(f"edit:{dst}:human", "edit_rephrase", {"text": instr})
            gpt = Request(f"edit:{dst}:gpt", "edit_answer", {"instruction": instr,
                                                             "phrase": phrase})
            out.append((dst, Spec(src, dst, "audio", cap, f"{cap.rstrip('.')}. {suffix}",
                                  human, gpt)))
    return out


def _with_attrs(caption: str, attrs: dict[str, Any]) -> str:
    """The caption an LLM sees: the clip's instrument / genre appended when known."""
    known = [f"{k}: {attrs[k]}" for k in ATTRIBUTES if attrs.get(k)]
    return f"{caption.rstrip('.')} ({'; '.join(known)})" if known else caption


def pair_specs(pairs_file: Path, pairs_dir: Path, audio_root: Path, captions: dict[str, str],
               attributes: dict[str, Any]) -> list[tuple[str, Spec | Exception]]:
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
        ain, aout = (lookup_attrs(attributes, n) for n in (src, dst))
        fields = {"input": _with_attrs(cin, ain), "target": _with_attrs(cout, aout),
                  "input_caption": cin, "target_caption": cout, "input_attrs": ain,
                  "target_attrs": aout}
        human = Request(key + ":human", "pair_instruction", fields)
        gpt = Request(key + ":gpt", "pair_answer", fields)
        out.append((key, Spec(src, dst, "audio", cin, cout, human, gpt)))
    return out


ATTRIBUTES = ("instrument", "genre")


def lookup_attrs(attributes: dict[str, Any], name: str) -> dict[str, Any]:
    """A clip's {instrument, genre, ...} by relative name, else base name; {} when unknown."""
    for key in (name, Path(name).name, Path(name).stem):
        found = attributes.get(key)
        if isinstance(found, dict):
            return found
    return {}


def _main(args: argparse.Namespace) -> int:
    audio_root = Path(args.audio_root)
    captions = json.loads(Path(args.captions).read_text(encoding="utf-8"))
    if not isinstance(captions, dict):
        raise StepError(f"{args.captions}: expected a JSON object file -> caption")
    skipped: dict[str, int] = {}
    specs = edit_specs([Path(e) for e in args.edits], audio_root, captions, skipped)
    attributes = {}
    if args.attributes:
        attributes = json.loads(Path(args.attributes).read_text(encoding="utf-8"))
        if not isinstance(attributes, dict):
            raise StepError(f"{args.attributes}: expected a JSON object file -> attributes")
    if args.pairs:
        specs += pair_specs(Path(args.pairs), Path(args.pairs_dir or audio_root), audio_root,
                            captions, attributes)
    if not specs:
        raise StepError("nothing to write: give --edits and/or --pairs")
    writer = writer_from_args(args)
    tasks = ["edit_rephrase", "edit_answer", "pair_instruction", "pair_answer"]
    settings = {**writer_settings(args, writer, tasks), "edits": args.edits,
                "pairs": args.pairs, "attributes": args.attributes}
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
    p.add_argument("--attributes", help="JSON {file: {instrument, genre}} for pair instructions "
                   "that name what changes (e.g. Looperman categories and genres)")
    p.add_argument("--out", required=True)
    add_writer_args(p)
    p.set_defaults(func=_main)
