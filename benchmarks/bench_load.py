"""Peak memory of `load_backbone` on a 7B-shaped Meta checkpoint (random bf16 weights).

    python benchmarks/bench_load.py /work/bench_tmp/llama7b [--shards N] [--dtype float32]
                                    [--preset 7B|1B] [--quantize int8]

Writes the checkpoint once at PATH if it is missing (13.5 GB for one shard; keep it outside the
repository), then loads it in a fresh subprocess per measurement and prints a table: weight bytes,
peak RSS right after `load_backbone`, peak RSS after every weight byte has been read (the pages a
memory-mapped load brings in on first use), the ratio to the weight bytes, and the bound
1.15 x weights + 1 GiB. With `--quantize int8` (projections quantized while they stream in,
llama.quantize.StreamingQuantizer) the bound is the target "int8 model + one layer": the loaded
model's bytes plus one float layer of the checkpoint plus 0.5 GiB (the loader's mapped group and
the interpreter). PATH may also be an existing HF folder (e.g. made by
`python -m llama.convert --to hf`); the 7B/1B shape is then only used for the byte count.
Peak RSS is the child's `ru_maxrss` (the checkpoint is written by another child, since Linux
carries ru_maxrss across fork+exec).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llama.config import LlamaConfig, llama_7b  # noqa: E402
from llama.weights import base_weight_shapes, save_meta  # noqa: E402

GiB = 2**30
SHAPES = {
    "7B": llama_7b,
    # a ~2 GB model for checking the multi-shard merge path quickly
    "1B": lambda: LlamaConfig(dim=2048, n_layers=18, n_heads=16, vocab_size=32000),
}


def write_checkpoint(path: Path, shards: int, cfg: LlamaConfig) -> None:
    """Random bf16 7B weights in Meta layout, generated tensor by tensor to keep memory low.

    Each tensor goes to its own temporary file first; the final dict is built from memory-mapped
    tensors so torch.save never needs all 13.5 GB in anonymous memory.
    """
    shapes = base_weight_shapes(cfg)
    path.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix=".parts-", dir=path) as tmp:
        parts = {}
        for i, (name, shape) in enumerate(shapes.items()):
            t = torch.empty(shape, dtype=torch.bfloat16)
            if name.endswith("norm.weight"):
                t.fill_(1.0)
            else:
                t.normal_(0.0, 0.02, generator=gen)
            f = Path(tmp) / f"{i}.pt"
            torch.save(t, f)
            del t
            parts[name] = torch.load(f, mmap=True, weights_only=True)
        save_meta(parts, cfg, path, n_shards=shards)
        del parts


MEASURE = r"""
import json, resource, sys, time, torch
sys.path.insert(0, {repo!r})
from llama.weights import load_backbone
dtype = getattr(torch, {dtype!r}) if {dtype!r} else None
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
model = load_backbone({path!r}, dtype=dtype, quantize={quantize!r})
t_load = time.perf_counter() - t0
peak_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
tensors = [*model.parameters(), *model.buffers()]
t0 = time.perf_counter()
with torch.no_grad():
    acc = 0.0
    for p in tensors:
        acc += float(p.max())  # reads every byte without a temporary copy
t_touch = time.perf_counter() - t0
peak_touch = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
n_bytes = sum(p.numel() * p.element_size() for p in tensors)
print(json.dumps(dict(t_load=t_load, t_touch=t_touch, peak_load=peak_load,
                      peak_touch=peak_touch, model_bytes=n_bytes, base_rss=base_rss)))
"""


def measure(path: Path, dtype: str, quantize: str | None = None) -> dict:
    repo = str(Path(__file__).resolve().parents[1])
    code = MEASURE.format(repo=repo, path=str(path), dtype=dtype, quantize=quantize)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"measurement failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("path", type=Path, help="checkpoint folder (written once if missing)")
    ap.add_argument("--shards", type=int, default=1, help="consolidated.NN.pth files to write")
    ap.add_argument("--dtype", default="", help="load dtype (default: keep bf16)")
    ap.add_argument("--preset", default="7B", choices=sorted(SHAPES), help="checkpoint shape")
    ap.add_argument("--quantize", default=None, choices=("int8",),
                    help="quantize the projections while loading (llama.quantize)")
    ap.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    cfg = SHAPES[args.preset]()
    if args.write_only:
        write_checkpoint(args.path, args.shards, cfg)
        return
    weights = sum(torch.Size(s).numel() * 2 for s in base_weight_shapes(cfg).values())
    if not ((args.path / "params.json").is_file() or (args.path / "config.json").is_file()):
        free = os.statvfs(args.path.parent if args.path.parent.exists() else "/").f_bavail
        free_bytes = free * os.statvfs("/").f_frsize
        if free_bytes < 2.2 * weights:
            raise SystemExit(f"{args.path}: need ~{2.2 * weights / GiB:.0f} GiB free, have "
                             f"{free_bytes / GiB:.0f} GiB")
        # A separate process: Linux carries ru_maxrss across fork+exec, so a parent that held
        # the written pages would inflate the measuring child's peak.
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, str(args.path), "--write-only",
               "--shards", str(args.shards), "--preset", args.preset]
        subprocess.run(cmd, check=True)
        print(f"wrote {args.path} ({args.shards} shard(s)) in {time.perf_counter() - t0:.0f} s")
    files = sorted(args.path.glob("consolidated.*.pth")) or sorted(args.path.glob("*.safetensors"))
    r = measure(args.path, args.dtype, args.quantize)
    if args.quantize:
        layer = sum(torch.Size(s).numel() * 2 for k, s in base_weight_shapes(cfg).items()
                    if k.startswith("layers.0."))
        bound, bound_name = r["model_bytes"] + layer + GiB / 2, "int8 model + 1 layer + 0.5 GiB"
    else:
        bound, bound_name = 1.15 * weights + GiB, "bound 1.15 x weights + 1 GiB"
    print(f"\nload_backbone({args.path}, dtype={args.dtype or None}, quantize={args.quantize}); "
          f"{args.preset}-shaped, {len(files)} weight file(s)")
    print(f"| {'quantity':<38} | {'value':>12} |")
    print(f"|{'-' * 40}|{'-' * 14}|")
    rows = [
        ("checkpoint weight bytes", f"{weights / GiB:.2f} GiB"),
        ("model bytes (incl. LoRA etc.)", f"{r['model_bytes'] / GiB:.2f} GiB"),
        ("RSS before loading (interpreter, torch)", f"{r['base_rss'] / GiB:.2f} GiB"),
        ("load time", f"{r['t_load']:.1f} s"),
        ("peak RSS after load_backbone", f"{r['peak_load'] / GiB:.2f} GiB"),
        ("  ratio to weight bytes", f"{r['peak_load'] / weights:.3f}"),
        ("peak RSS after reading every weight", f"{r['peak_touch'] / GiB:.2f} GiB"),
        ("  ratio to weight bytes", f"{r['peak_touch'] / weights:.3f}"),
        ("  time to read every weight", f"{r['t_touch']:.1f} s"),
        (bound_name, f"{bound / GiB:.2f} GiB"),
        ("within bound", str(max(r["peak_load"], r["peak_touch"]) <= bound)),
    ]
    for k, v in rows:
        print(f"| {k:<38} | {v:>12} |")


if __name__ == "__main__":
    main()
