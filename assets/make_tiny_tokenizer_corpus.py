"""Regenerate the templated caption lines of `assets/tiny_tokenizer_corpus.txt`.

    .venv/bin/python assets/make_tiny_tokenizer_corpus.py [--check]

The tiny tokenizer must hold every attribute word of the synthetic datasets as one piece. Those
vocabularies have one source, `data.synthetic`; the model package may not import `data/`, so the
words reach the tokenizer through this committed text file instead. The script keeps the file's
header and hand-written lines and rewrites everything after the `GENERATED_MARKER` line; with
`--check` it only reports whether the file is up to date (exit status 1 if not).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.synthetic import (  # noqa: E402
    BRIGHTNESS,
    COLOURS,
    INSTRUMENTS,
    REGISTERS,
    SIZES,
    TEMPOS,
)
from util.atomic import write_text  # noqa: E402

CORPUS = ROOT / "assets" / "tiny_tokenizer_corpus.txt"
GENERATED_MARKER = "# generated: captions x data.synthetic vocabularies (do not edit below)"


def caption_lines() -> list[str]:
    """Captions and descriptions that use every attribute word in context."""
    lines = []
    for inst, reg, tempo in itertools.product(INSTRUMENTS, REGISTERS, TEMPOS):
        lines += [
            f"A {tempo} {inst} melody in a {reg} register.",
            f"The music is a {tempo} song played on a {inst} in the {reg} register.",
            f"This sound is a {inst} instrument playing a {reg} melody at a {tempo} tempo.",
            f"Please generate music and compose a {tempo} {inst} melody; play a {reg} sound.",
        ]
    for colour, size in itertools.product(COLOURS, SIZES):
        lines += [
            f"An image of a {size} {colour} shape. The picture has a {colour} colour.",
            f"A {size} {colour} square in a bright image; its color is {colour}.",
        ]
    for colour, change in itertools.product(COLOURS, BRIGHTNESS):
        lines += [
            f"A video clip of a {colour} screen {change} over time.",
            f"The {colour} video is {change}: it turns from dark to bright or bright to dark.",
        ]
    return lines


def render(current: str) -> str:
    """`current` with its generated section (after the marker) replaced by fresh lines."""
    lines = current.splitlines()
    if GENERATED_MARKER not in lines:
        raise SystemExit(f"{CORPUS}: no line {GENERATED_MARKER!r} to regenerate after")
    kept = lines[: lines.index(GENERATED_MARKER) + 1]
    return "\n".join(kept + caption_lines()) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args()
    current = CORPUS.read_text(encoding="utf-8")
    fresh = render(current)
    if args.check:
        print("up to date" if fresh == current else f"{CORPUS} is stale: run without --check")
        return 0 if fresh == current else 1
    write_text(CORPUS, fresh)
    print(f"wrote {CORPUS} ({len(fresh.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
