"""Convert a released M2UGen / MuMu-LLaMA `checkpoint.pth` into our checkpoint folder.

    python -m llama.import_published ckpts/M2UGen-MusicGen/checkpoint.pth ckpts/m2ugen-imported \\
        --llama_dir ckpts/LLaMA-2

The folder holds the tuned weights (`model.safetensors`, hundreds of MB for 7B), a `config.json`
recording the release and its compatibility values (adapter without LoRA, projector fed from
pre-norm states, the release's music pooling), and what the file supplied that no flag points
at elsewhere: the LLaMA base weights as an HF folder (skipped when --llama_dir holds them), the
MERT / ViT / ViViT weights as HF folders, the tokenizer. Loading it later reads safetensors only,
never pickle. Bad input (truncated file, no `model`, a pickle global outside the allow-list,
unknown layout, shape mismatch) is one line naming the file and key, exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llama.import_published",
                                description="Import a released checkpoint.pth into our format.")
    p.add_argument("src", help="the released checkpoint.pth")
    p.add_argument("dst", help="checkpoint folder to write (replaced atomically if it exists)")
    p.add_argument("--llama_dir", default=None,
                   help="tokenizer.model (and optionally LLaMA-2 weights, then not copied): "
                        "the published <dir>/7B + <dir>/tokenizer.model layout or a folder")
    p.add_argument("--mert_path", default=None, help="MERT folder/hub id instead of the file's")
    p.add_argument("--vit_path", default=None, help="ViT folder/hub id instead of the file's")
    p.add_argument("--vivit_path", default=None, help="ViViT folder/hub id instead of the file's")
    p.add_argument("--allow_partial", action="store_true",
                   help="import with missing/unknown learned tensors (listed as warnings)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from llama.release.export import import_release

    try:
        out = import_release(args.src, args.dst, llama_dir=args.llama_dir,
                             mert_path=args.mert_path, vit_path=args.vit_path,
                             vivit_path=args.vivit_path, allow_partial=args.allow_partial)
    except (ValueError, OSError) as err:  # ReleaseFileError, WeightsError, missing files
        print(f"import_published: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"imported {args.src} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
