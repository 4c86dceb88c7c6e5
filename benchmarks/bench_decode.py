"""Decode speed: our KV-cache `generate` vs transformers' cached `generate` vs full recomputation.

Prints tokens/s (new tokens of all rows / time, prefill included; by wall clock and by process CPU
time, which is robust to other processes sharing the machine) for batch 1 and 8 with a
32-token prompt on a float32 LLaMA of dim 1024, 8 layers, 16 heads, vocab 32000 (random weights;
the transformers model gets the very same weights, wq/wk permuted into its rotate-half layout, and
the greedy tokens are checked to agree). The recompute loop is what the published code did: the
whole sequence through the model for every new token.

It also prints the memory-bandwidth floor for batch-1 decoding: every weight matrix (the LM head
included, the embedding table excluded) is read once per token, so
    floor seconds/token = weight bytes / measured read bandwidth.

    python benchmarks/bench_decode.py --quick --threads 1   # ~10 minutes on a quiet 2-core machine
    python benchmarks/bench_decode.py              # adds 256-token and batch-8 recompute (long)

Precision rows (`--precision-only` runs just these, ~3 minutes): decode steps of a 7B-shaped
layer stack (dim 4096, hidden 11008, 32 heads, vocab 32000; `--precision-layers` layers, default 2,
i.e. 0.9 GB of fp32 weights per layer and 0.5 GB of LM head: far past any cache, so
bandwidth-bound) in float32, bfloat16, float16, int8 (weights int8, rest float32) and
bfloat16 + int8, at batch 1 and 8. Per row: tok/s by wall clock and by process CPU time, bytes of
weights read per token (all decode-time weights / batch) and the percent of the mode's own
bandwidth floor (weights bytes / read bandwidth measured in the same run with the same threads).
Run it on a quiet machine and compare rows of one run. On a shared machine the CPU-time columns
(rates per CPU second against the read bandwidth per CPU second) are steadier with `--threads 1`;
the int8 kernel is compute-bound on one core, so the default (all cores) is the user's number
(docs/MEMORY.md, and `bench_int8_kernel.py` for the per-kernel rates).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from llama.backbone import Transformer  # noqa: E402
from llama.config import LlamaConfig  # noqa: E402
from llama.generation import generate  # noqa: E402
from llama.quantize import prepare_for_inference, weight_nbytes  # noqa: E402


def bench_config(lora_rank: int = 0, adapter_layers_per_modality: int = 0) -> LlamaConfig:
    return LlamaConfig(
        dim=1024,
        n_layers=8,
        n_heads=16,
        vocab_size=32000,
        max_seq_len=1024,
        lora_rank=lora_rank,
        adapter_layers_per_modality=adapter_layers_per_modality,
    )


def hf_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Meta interleaved-pair rows of wq/wk -> HF rotate-half rows (per head)."""
    out_dim, in_dim = w.shape
    hd = out_dim // n_heads
    return w.view(n_heads, hd // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def build_hf(ours: Transformer):
    """transformers LlamaForCausalLM with our base weights (biases/LoRA are zero at init)."""
    from transformers import LlamaConfig as HFConfig
    from transformers import LlamaForCausalLM

    cfg = ours.config
    hf_cfg = HFConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    hf = LlamaForCausalLM(hf_cfg).eval()
    sd = {
        "model.embed_tokens.weight": ours.tok_embeddings.weight,
        "model.norm.weight": ours.norm.weight,
        "lm_head.weight": ours.output.weight,
    }
    for i, layer in enumerate(ours.layers):
        a, f, p = layer.attention, layer.feed_forward, f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = hf_permute(a.wq.weight, cfg.n_heads)
        sd[p + "self_attn.k_proj.weight"] = hf_permute(a.wk.weight, cfg.kv_heads)
        sd[p + "self_attn.v_proj.weight"] = a.wv.weight
        sd[p + "self_attn.o_proj.weight"] = a.wo.weight
        sd[p + "mlp.gate_proj.weight"] = f.w1.weight
        sd[p + "mlp.down_proj.weight"] = f.w2.weight
        sd[p + "mlp.up_proj.weight"] = f.w3.weight
        sd[p + "input_layernorm.weight"] = layer.attention_norm.weight
        sd[p + "post_attention_layernorm.weight"] = layer.ffn_norm.weight
    copied = {k: v.detach().clone() for k, v in sd.items()}
    missing, unexpected = hf.load_state_dict(copied, strict=False)
    missing = [k for k in missing if "rotary" not in k]
    if missing or unexpected:
        raise RuntimeError(
            f"weight copy into transformers failed: missing {missing}, unexpected {unexpected}"
        )
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    return hf


def run_ours(model, prompts, n, **kw):
    return generate(model, prompts, n, **kw)


def run_hf(hf, prompts, n):
    ids = torch.tensor(prompts)
    with torch.inference_mode():
        out = hf.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
            do_sample=False, use_cache=True,
        )
    return out[:, ids.shape[1]:].tolist()


def run_recompute(model, prompts, n):
    """The published loop: no cache, the whole sequence through the model at every step."""
    seq = torch.tensor(prompts)
    with torch.inference_mode():
        for _ in range(n):
            nxt = model(seq, last_only=True)[:, -1].argmax(-1)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
    return seq[:, len(prompts[0]):].tolist()


def timed(fn, *args, **kw) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, time.process_time() - c0, out


def bandwidth(gib: float = 2.0, repeats: int = 5) -> tuple[float, float, float]:
    """(read GB/s via a full-buffer sum, copy GB/s counting read + write, read GB/s per CPU
    second) on buffers >> L3. The per-CPU-second figure is the floor to compare CPU-time rates
    with: on a shared machine wall time includes time the process was not running."""
    n = int(gib * (1 << 30)) // 4
    a = torch.rand(n)
    b = torch.empty_like(a)
    reads = [timed(a.sum)[:2] for _ in range(repeats)]
    copy = min(timed(b.copy_, a)[0] for _ in range(repeats))
    del a, b
    threads = torch.get_num_threads()  # CPU time of a t-thread sum is ~t x its wall time
    read_cpu = min(c for _, c in reads) / threads
    return 4 * n / min(w for w, _ in reads) / 1e9, 2 * 4 * n / copy / 1e9, 4 * n / read_cpu / 1e9


def decode_weight_bytes(model: Transformer) -> int:
    """Bytes of every parameter read per decoded token: all but the embedding table."""
    return sum(
        p.numel() * p.element_size()
        for name, p in model.named_parameters()
        if name not in ("tok_embeddings.weight", "new_tok_embeddings", "prefix_query.weight")
    )


def precision_config(n_layers: int) -> LlamaConfig:
    """LLaMA-2 7B's layer shape (dim 4096, hidden 11008, 32 heads, vocab 32000), few layers."""
    return LlamaConfig(dim=4096, n_layers=n_layers, n_heads=32, vocab_size=32000,
                       max_seq_len=256, lora_rank=0, adapter_layers_per_modality=0)


def decode_steps(model: Transformer, batch: int, prompt_len: int, steps: int
                 ) -> tuple[float, float]:
    """(wall, cpu) seconds per decode step after a prefill, best of two passes."""
    torch.manual_seed(0)
    prompt = torch.randint(3, 32000, (batch, prompt_len))
    best = (float("inf"), float("inf"))
    with torch.inference_mode():
        for _ in range(2):
            cache = model.new_cache(batch, prompt_len + steps + 1)
            tok = model(prompt, cache=cache, last_only=True)[:, -1].argmax(-1)[:, None]
            model(tok, cache=cache, last_only=True)  # warm-up step
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                tok = model(tok, cache=cache, last_only=True)[:, -1].argmax(-1)[:, None]
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best = (min(best[0], wall / steps), min(best[1], cpu / steps))
    return best


def precision_rows(n_layers: int, read_bw: float, batches: list[int], steps: int,
                   read_bw_cpu: float) -> None:
    """The dtype / quantization table on a 7B-shaped stack (see the module docstring)."""
    import copy

    torch.manual_seed(0)
    fp32 = Transformer(precision_config(n_layers)).eval()
    modes = [("float32", "float32", "none"), ("bfloat16", "bfloat16", "none"),
             ("float16", "float16", "none"), ("int8 (rest fp32)", "float32", "int8"),
             ("int8 + bfloat16", "bfloat16", "int8")]
    rows = []
    for label, dtype, quant in modes:
        model = fp32 if label == "float32" else prepare_for_inference(
            copy.deepcopy(fp32), dtype, quant)
        wbytes = weight_nbytes(model, read_per_token=True)
        floor = wbytes / (read_bw * 1e9)
        floor_cpu = wbytes / (read_bw_cpu * 1e9)
        for b in batches:
            wall, cpu = decode_steps(model, b, 16, steps)
            rows.append((label, b, wall, cpu / torch.get_num_threads(), wbytes, floor, floor_cpu))
            print(f"  {label} batch {b}: {b / wall:.1f} tok/s", flush=True)
        if model is not fp32:
            del model
    print()
    print(f"7B-shaped stack, {n_layers} layers + LM head; decode steps only (prompt 16 tokens)")
    print("(cpu columns: per process CPU second / threads, against the read bandwidth per CPU "
          "second; robust to other processes; wall columns: by the clock)")
    print(f"{'mode':18s} {'batch':>5s} {'tok/s':>7s} {'tok/cpu-s':>9s} {'vs fp32':>7s} "
          f"{'vs fp32 cpu':>11s} {'MB read/tok':>11s} {'floor tok/s':>11s} {'% floor':>7s} "
          f"{'floor cpu':>9s} {'% floor cpu':>11s}")
    ref = {b: (wall, cpu) for label, b, wall, cpu, *_ in rows if label == "float32"}
    for label, b, wall, cpu, wbytes, floor, floor_cpu in rows:
        print(f"{label:18s} {b:5d} {b / wall:7.1f} {b / cpu:9.1f} {ref[b][0] / wall:6.2f}x "
              f"{ref[b][1] / cpu:10.2f}x {wbytes / b / 1e6:11.0f} {b / floor:11.1f} "
              f"{floor / wall * 100:6.0f}% {b / floor_cpu:9.1f} {floor_cpu / cpu * 100:10.0f}%")


OURS, M2U, HF, REC = (
    "ours generate (KV cache)",
    "ours + LoRA16/bias/6 adapters",
    "transformers generate (cache)",
    "full recompute (published)",
)
Cells = dict[tuple[str, int, int], tuple[float, float]]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="recompute only at batch 1 and <= 128 tokens"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--lengths", default="64,128,256", help="new-token counts to time")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--recompute-lengths", default="32,64,128,256",
                    help="new-token counts for the recompute loop (--quick: batch 1, <= 128)")
    ap.add_argument("--repeats", type=int, default=2, help="best of N interleaved runs per cell")
    ap.add_argument("--no-hf", action="store_true", help="skip transformers")
    ap.add_argument("--precision-only", action="store_true",
                    help="only the dtype / int8 rows on the 7B-shaped stack")
    ap.add_argument("--precision-layers", type=int, default=2)
    ap.add_argument("--precision-steps", type=int, default=8, help="decode steps timed per row")
    return ap.parse_args()


def time_cells(args, model, m2u, hf, feats, lengths, rec_lengths, batches) -> Cells:
    """(method, batch, new tokens) -> best (wall, cpu) over repeats. Methods are interleaved
    inside each repeat so that load from other processes hits them alike."""
    best: Cells = {}

    def record(key, wall, cpu):
        old = best.get(key, (float("inf"), float("inf")))
        best[key] = (min(old[0], wall), min(old[1], cpu))

    for B in batches:
        prompts = torch.randint(3, 32000, (B, args.prompt_len)).tolist()
        # Warm-up (allocator, kernels, lazy tables).
        run_ours(model, prompts, 4)
        run_ours(m2u, prompts, 4, modality_features=feats[:B])
        if hf is not None:
            run_hf(hf, prompts, 4)
        for n in lengths:
            for _ in range(args.repeats):
                wall, cpu, ours = timed(run_ours, model, prompts, n)
                record((OURS, B, n), wall, cpu)
                wall, cpu, _ = timed(run_ours, m2u, prompts, n, modality_features=feats[:B])
                record((M2U, B, n), wall, cpu)
                if hf is not None:
                    wall, cpu, theirs = timed(run_hf, hf, prompts, n)
                    record((HF, B, n), wall, cpu)
            if hf is not None:
                same = sum(a == b for a, b in zip(ours, theirs))
                print(f"  batch {B}, {n} tokens: greedy tokens identical to transformers for "
                      f"{same}/{B} rows")
            if n in rec_lengths and (not args.quick or B == 1):
                wall, cpu, rec = timed(run_recompute, model, prompts, n)
                record((REC, B, n), wall, cpu)
                if rec != ours:
                    print(f"  note: recompute tokens differ from cached ones "
                          f"(batch {B}, {n} tokens)")
            print(f"  done batch {B}, {n} tokens", flush=True)
    return best


def print_cells(best: Cells, model, read_bw: float) -> None:
    print()
    print(f"{'method':31s} {'batch':>5s} {'new':>4s} {'wall s':>7s} {'tok/s':>7s} {'vs HF':>6s}"
          f" {'cpu s':>7s} {'tok/cpu-s':>9s} {'vs HF':>6s}")
    for (name, b, n), (wall, cpu) in sorted(best.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        ref = best.get((HF, b, n))
        rel_w = f"{ref[0] / wall:.2f}x" if ref else "-"
        rel_c = f"{ref[1] / cpu:.2f}x" if ref else "-"
        print(f"{name:31s} {b:5d} {n:4d} {wall:7.2f} {b * n / wall:7.1f} {rel_w:>6s}"
              f" {cpu:7.2f} {b * n / cpu:9.1f} {rel_c:>6s}")
    wbytes = decode_weight_bytes(model)
    floor_s = wbytes / (read_bw * 1e9)
    best1 = max(b * n / wall for (name, b, n), (wall, _) in best.items() if name == OURS and b == 1)
    print()
    print(f"floor (batch 1): {wbytes / 1e6:.0f} MB of weights per token / {read_bw:.1f} GB/s = "
          f"{floor_s * 1e3:.1f} ms/token = {1 / floor_s:.1f} tok/s; ours reaches {best1:.1f} tok/s "
          f"= {best1 * floor_s * 100:.0f}% of the floor")
    print("(the machine's L3 is large; weights partly cached there can beat a DRAM-only floor)")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lengths = [int(x) for x in args.lengths.split(",")]
    rec_lengths = [int(x) for x in args.recompute_lengths.split(",")]
    if args.quick:
        rec_lengths = [n for n in rec_lengths if n <= 128]
    lengths = sorted(set(lengths) | set(rec_lengths))
    batches = [int(x) for x in args.batches.split(",")]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32")
    read_bw, copy_bw, read_bw_cpu = bandwidth()
    print(f"memory bandwidth: read {read_bw:.1f} GB/s (2 GiB sum), "
          f"copy {copy_bw:.1f} GB/s (read+write); read per CPU second {read_bw_cpu:.1f} GB/s")
    if not args.precision_only:
        model = Transformer(bench_config()).eval()
        m2u = Transformer(bench_config(lora_rank=16, adapter_layers_per_modality=2)).eval()
        base = {k: v for k, v in model.state_dict().items() if k != "prefix_query.weight"}
        m2u.load_state_dict(base, strict=False)
        feats = torch.randn(max(batches), 3, 1024)
        hf = None if args.no_hf else build_hf(model)
        best = time_cells(args, model, m2u, hf, feats, lengths, rec_lengths, batches)
        print_cells(best, model, read_bw)
        del model, m2u, hf
        print()
    precision_rows(args.precision_layers, read_bw, batches, args.precision_steps, read_bw_cpu)


if __name__ == "__main__":
    main()
