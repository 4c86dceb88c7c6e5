"""Convert LLaMA weights between Meta's and Hugging Face's layouts.

    python -m llama.convert --to hf   SRC_META_DIR DST_HF_DIR
    python -m llama.convert --to meta SRC_HF_DIR   DST_META_DIR [--shards N]

The source layout is detected; tensors are memory-mapped and written with their dtype unchanged, so
Meta -> HF -> Meta reproduces every tensor bit for bit. Tokenizer files found in SRC (or, for Meta's
upstream layout `<llama_dir>/7B/`, `tokenizer.model` one level up) are copied to DST. Bad input
exits non-zero with one line naming the file and the problem.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

from llama.weights import WeightsError, load_base_state_dict, save_hf, save_meta
from util.atomic import atomic_path

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")


def tokenizer_files(src: Path) -> list[Path]:
    """Tokenizer files that belong to the weights in `src`."""
    found = [src / n for n in TOKENIZER_FILES if (src / n).is_file()]
    if not found and (src / "params.json").is_file() and (src.parent / "tokenizer.model").is_file():
        found = [src.parent / "tokenizer.model"]  # Meta's upstream layout: <llama_dir>/7B/
    return found


def convert(src: str | Path, dst: str | Path, to: str, shards: int = 1) -> list[str]:
    """Convert SRC into layout `to` at DST; returns notes for the user (e.g. no tokenizer found)."""
    src, dst = Path(src), Path(dst)
    if to not in ("hf", "meta"):
        raise WeightsError(f"unknown target layout {to!r} (use 'hf' or 'meta')")
    if dst.exists() and src.resolve() == dst.resolve():
        raise WeightsError(f"{dst}: destination is the source folder")
    if dst.is_dir() and any(dst.iterdir()):
        raise WeightsError(f"{dst}: destination folder is not empty")
    if shards != 1 and to != "meta":
        raise WeightsError("--shards applies to --to meta only")
    cfg, sd, _ = load_base_state_dict(src)
    if to == "hf":
        save_hf(sd, cfg, dst)
    else:
        save_meta(sd, cfg, dst, n_shards=shards)
    del sd
    notes = []
    files = tokenizer_files(src)
    if to == "meta":
        files = [f for f in files if f.name == "tokenizer.model"]
    for f in files:
        with atomic_path(dst / f.name) as tmp:
            shutil.copyfile(f, tmp)
    if not files:
        notes.append(f"note: no tokenizer.model in {src}; tokenizer not copied")
    return notes


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llama.convert", description="Convert LLaMA weights between layouts."
    )
    parser.add_argument("--to", required=True, choices=("hf", "meta"), help="target layout")
    parser.add_argument("--shards", type=int, default=1,
                        help="number of consolidated.NN.pth files (--to meta only)")
    parser.add_argument("src", help="Meta folder (params.json) or HF folder (config.json)")
    parser.add_argument("dst", help="new or empty destination folder")
    args = parser.parse_args(argv)
    try:
        notes = convert(args.src, args.dst, args.to, args.shards)
    except (WeightsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for note in notes:
        print(note, file=sys.stderr)
    print(f"wrote {args.to} layout to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
