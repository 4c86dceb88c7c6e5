"""Frozen encoders per dtype on CPU: time of one encode and the feature error against float32.

Random weights at the real widths (MERT-330M: 1024 wide with its 512-channel convolution front
end; ViT-B: 768 wide, 224 x 224 input) but `--layers` layers (default 4), plus the tiny presets.
Per encoder and dtype: best process CPU time of one encode (1 thread) and the relative error
max |feature - float32 feature| / max |float32 feature|. The table in docs/MEMORY.md comes from it.

    python benchmarks/bench_encoders.py [--layers 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from llama import config as C  # noqa: E402
from llama import encoders as E  # noqa: E402
from util.timing import best_seconds  # noqa: E402

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def cases(layers: int) -> list[tuple[str, C.EncoderConfig, Callable, Any]]:
    rng = np.random.default_rng(0)
    mert = dataclasses.replace(C.mert_tiny(), hidden_size=1024, tiny_config=dict(
        hidden_size=1024, num_hidden_layers=layers, num_attention_heads=16,
        intermediate_size=4096, conv_dim=(512,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2), num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16))
    vit = dataclasses.replace(C.vit_tiny(), hidden_size=768, num_tokens=197, image_size=224,
                              tiny_config=dict(hidden_size=768, num_hidden_layers=layers,
                                               num_attention_heads=12, intermediate_size=3072,
                                               image_size=224, patch_size=16))
    audio = (rng.standard_normal(120000) * 0.1).astype(np.float32)  # 5 s at 24 kHz
    image = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
    return [
        (f"MERT-330M width, {layers} layers, 5 s", mert, E.load_music_encoder, audio),
        (f"ViT-B width, {layers} layers, 224x224", vit, E.load_image_encoder, image),
        ("tiny MERT preset, 10 s", C.mert_tiny(), E.load_music_encoder,
         (rng.standard_normal(240000) * 0.1).astype(np.float32)),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{'encoder':40s} " + " ".join(f"{str(d).split('.')[-1]:>22s}" for d in DTYPES))
    for name, cfg, loader, item in cases(args.layers):
        cells, ref = [], None
        for dtype in DTYPES:
            enc = loader(cfg, device="cpu", dtype=dtype)
            with torch.no_grad():
                seconds = best_seconds(partial(enc.encode_items, [item]), args.repeats,
                                       clock=time.process_time, warmup=True)
                feat = torch.as_tensor(enc.encode_items([item])[0]).float()
            ref = feat if ref is None else ref
            err = float((feat - ref).abs().max() / ref.abs().max())
            cells.append(f"{seconds * 1000:8.0f} ms ({err:.1e})")
        print(f"{name:40s} " + " ".join(f"{c:>22s}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
