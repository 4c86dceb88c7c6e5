"""The trained tiny checkpoint the repository ships (`assets/tiny_m2ugen`) and its export.

Why: a newcomer's `make demo` should serve a trained model within a minute instead of training
the tiny model for about 14 minutes first. The folder holds what serving needs and no more
(`config.json` with the chat style, `model.safetensors` with the tuned weights only: the frozen
tiny parts are rebuilt from the preset's fixed seed), plus `metrics.json` (Evaluation.synthetic on
its data seed when it was built) and `build.json` (how it was made, and a fingerprint of the tiny
tokenizer it was trained with). `make tiny-checkpoint` rebuilds all of it;
`tests/app/test_shipped.py` loads it with the current code and re-measures its metrics, so a
change that breaks it fails the suite instead of shipping a stale file.

    python -m app.shipped --stage OUT/stage3 --data_seed 0 --out assets/tiny_m2ugen
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import transformers

from app.errors import InputError, fail
from llama.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, resolve_checkpoint
from llama.tokenizer import Tokenizer, load_tokenizer, tiny_corpus
from util.atomic import write_bytes, write_json
from util.hashing import sha256_json

SHIPPED_TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny_m2ugen"
BUILD_FILE = "build.json"
METRICS_FILE = "metrics.json"
REBUILD_COMMAND = "make tiny-checkpoint"


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """sha256 of the ids the tokenizer gives the tiny corpus: a retrained or changed tokenizer
    gives other ids, and a model trained on the old ones would read garbage."""
    return sha256_json(tokenizer.encode(tiny_corpus()))


def build_record(tokenizer: Tokenizer, data_seed: int) -> dict[str, Any]:
    """What build.json holds: enough to rebuild the checkpoint and to notice it went stale."""
    return {
        "rebuild": REBUILD_COMMAND,
        "data_seed": data_seed,
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def export(stage: str | Path, out: str | Path, data_seed: int) -> Path:
    """Copy a trained stage's config and tuned weights (not its optimizer state) into `out`."""
    source = resolve_checkpoint(stage)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        write_bytes(out / name, (source / name).read_bytes())
    write_json(out / BUILD_FILE, build_record(load_tokenizer("tiny"), data_seed))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", required=True, help="a trained stage folder (e.g. OUT/stage3)")
    p.add_argument("--data_seed", type=int, required=True,
                   help="the data.synthetic seed it was trained on (recorded in build.json)")
    p.add_argument("--out", default=str(SHIPPED_TINY))
    args = p.parse_args(argv)
    try:
        folder = export(args.stage, args.out, args.data_seed)
    except (CheckpointError, InputError) as err:
        return fail("app.shipped", err)
    print(f"wrote {folder}/{{{CONFIG_FILE},{WEIGHTS_FILE},{BUILD_FILE}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
