"""How fast each candidate batch-1 matmul streams weights, against the machine's read bandwidth.

Explains the int8 rows of `bench_decode.py --precision-only`: one 11008 x 4096 matrix (a LLaMA-2
7B FFN projection; several copies so they cannot stay in cache), one activation row, per thread
count: GB of weights consumed per second by
- a plain sum of 1 GiB (the read bandwidth: the floor every kernel is measured against),
- the float32 GEMV (`x @ w.T`),
- torch's int8 weight-only kernel `torch._weight_int8pack_mm` (bf16 activations, the path
  `llama.quantize.Int8Linear` takes),
- with `--compile`: the same dequantize-then-matmul written in torch and compiled by inductor
  (what torchao's int8 weight-only layout relies on; measured slower here, see docs/MEMORY.md).

    python benchmarks/bench_int8_kernel.py [--threads 1 2] [--compile]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from util.timing import best_seconds  # noqa: E402

N, K = 11008, 4096


def rates(threads: int, copies: int, repeats: int, compile_: bool) -> dict[str, float]:
    """GB/s per candidate at `threads` threads (bytes of weights consumed / best wall time)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    q = [torch.randint(-127, 128, (N, K), dtype=torch.int8) for _ in range(copies)]
    f = [torch.randn(N, K) for _ in range(max(1, copies // 4))]
    scales = torch.rand(N, dtype=torch.bfloat16)
    x = torch.randn(1, K, dtype=torch.bfloat16)
    xf = x.float()
    big = torch.rand(2**28)
    out = {
        "read (sum)": big.numel() * 4 / best_seconds(big.sum, repeats) / 1e9,
        "float32 GEMV": len(f) * N * K * 4 / best_seconds(
            lambda: [xf @ w.T for w in f], repeats) / 1e9,
        "int8 _weight_int8pack_mm": len(q) * N * K / best_seconds(
            lambda: [torch._weight_int8pack_mm(x, w, scales) for w in q], repeats) / 1e9,
    }
    if compile_:
        def dequant_mm(a, w, s):
            return torch.nn.functional.linear(a, w.to(a.dtype)) * s

        compiled = torch.compile(dequant_mm, dynamic=False)
        compiled(x, q[0], scales)  # compile once, outside the timing
        out["int8 dequant+mm (inductor)"] = len(q) * N * K / best_seconds(
            lambda: [compiled(x, w, scales) for w in q], repeats) / 1e9
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--copies", type=int, default=8, help="int8 matrices (45 MB each)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--compile", action="store_true", help="also time the inductor version")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}; one {N} x {K} matrix per call, batch 1; best of "
          f"{args.repeats}")
    print(f"{'threads':>7s} {'kernel':28s} {'GB/s':>6s} {'% of read':>9s}")
    for t in args.threads:
        r = rates(t, args.copies, args.repeats, args.compile)
        for name, gbs in r.items():
            print(f"{t:7d} {name:28s} {gbs:6.1f} {gbs / r['read (sum)'] * 100:8.0f}%")


if __name__ == "__main__":
    main()
