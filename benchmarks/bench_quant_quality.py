"""How much do bf16 / fp16 / int8 change the backbone's predictions? Measured against float32.

For each mode: top-1 agreement of the greedy next token with float32 (teacher-forced on the
float32 greedy continuation, so one early disagreement does not cascade) and the max absolute
logit error over those positions, relative to the largest |logit|.

- Tiny trained model (`--model OUT/stageN --data_root DATA`): the fixed prompt set is the held-out
  (test split) prompts of `data.synthetic` for stages 1 and 3 with their media, first
  `--n-prompts` of them, 24 new tokens each.
- 7B-shaped random model (`--big-layers`, default 2 layers of dim 4096 / hidden 11008 / vocab
  32000): 8 random prompts of 32 tokens, next-token predictions at every position.

    python benchmarks/bench_quant_quality.py --model OUT/stage3 --data_root DATA
    python benchmarks/bench_quant_quality.py --big-only
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from llama.quantize import prepare_for_inference  # noqa: E402

MODES = (("bfloat16", "none"), ("float16", "none"), ("float32", "int8"), ("bfloat16", "int8"))


def compare(ref: torch.Tensor, out: torch.Tensor) -> tuple[int, int, float, float, float]:
    """(agreeing positions, positions, max |logit error|, max |ref logit|, largest float32
    top-1 - top-2 margin among the disagreeing positions: 0 when all agree) over (N, vocab).

    The margin says whether a disagreement is a near-tie that any rounding can flip."""
    same = ref.argmax(-1) == out.argmax(-1)
    top2 = ref.float().topk(2, dim=-1).values
    margins = (top2[:, 0] - top2[:, 1])[~same]
    worst = float(margins.max()) if margins.numel() else 0.0
    return (int(same.sum()), ref.shape[0], float((ref - out.float()).abs().max()),
            float(ref.abs().max()), worst)


def report(title: str, rows: dict[str, list[tuple[int, int, float, float]]]) -> None:
    print(f"\n{title}")
    print(f"{'mode':36s} {'top-1 agree':>12s} {'positions':>9s} {'max |dlogit|':>12s} "
          f"{'relative':>8s} {'max fp32 margin where they differ':>34s}")
    for mode, parts in rows.items():
        agree = sum(p[0] for p in parts)
        n = sum(p[1] for p in parts)
        err = max(p[2] for p in parts)
        scale = max(p[3] for p in parts)
        margin = max(p[4] for p in parts)
        print(f"{mode:36s} {100 * agree / n:11.2f}% {n:9d} {err:12.4f} {err / scale:8.4f} "
              f"{margin:34.4f}")


def as_served(fp32, dtype: str, quant: str):
    """What `M2UGen(dtype=..., quantize=...)` (the CLI path) runs: frozen weights in `dtype`,
    tuned parts (LoRA, biases, norms, gates, new rows) kept float32, then int8."""
    from llama.lora import keep_peft_float32
    from llama.quantize import quantize_backbone_
    from util.dtypes import resolve_dtype

    model = copy.deepcopy(fp32).to(resolve_dtype(dtype))
    keep_peft_float32(model)
    with torch.no_grad():  # the float32 values of the tuned parts, not their rounded copies
        for p, ref in zip(model.parameters(), fp32.parameters()):
            if p.dtype == torch.float32:
                p.copy_(ref)
    quantize_backbone_(model, quant)
    return model


@torch.no_grad()
def big_model(n_layers: int) -> None:
    from llama.backbone import Transformer
    from llama.config import LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(dim=4096, n_layers=n_layers, n_heads=32, vocab_size=32000, max_seq_len=64,
                      lora_rank=0, adapter_layers_per_modality=0)
    fp32 = Transformer(cfg).eval()
    toks = torch.randint(3, 32000, (8, 32))
    ref = fp32(toks).flatten(0, 1)
    rows = {}
    for dtype, quant in MODES:
        model = prepare_for_inference(copy.deepcopy(fp32), dtype, quant)
        rows[f"{dtype}+{quant}"] = [compare(ref, model(toks).flatten(0, 1))]
        del model
    report(f"7B-shaped random model, {n_layers} layers, 8 x 32 positions", rows)


def held_out_prompts(engine, data_root: Path, n: int) -> list[tuple[list[int], dict]]:
    """(prompt ids, {modality: path}) of the first n held-out stage-1 and stage-3 samples."""
    from data.mixes import filter_split, stage_samples
    from data.paths import DataPaths
    from llama.prompt import encode_prompt

    paths = DataPaths.from_root(data_root)
    tok = engine.model.tokenizer
    out = []
    for stage in (1, 3):
        samples = filter_split(stage_samples(stage, paths), "test", paths)
        for s in samples[: n // 2]:
            out.append((encode_prompt(tok, s.turns[-1][0], s.turns[:-1]), dict(s.media)))
    return out


@torch.no_grad()
def tiny_model(checkpoint: str, data_root: Path, n_prompts: int, new_tokens: int) -> None:
    from app.loading import ModelChoice, load_model
    from llama.generation import generate

    engine = load_model(ModelChoice(checkpoint, preset="tiny", device="cpu", dtype="float32"))
    model = engine.model
    fp32 = model.backbone
    variants = {f"{d}+{q}": prepare_for_inference(copy.deepcopy(fp32), d, q) for d, q in MODES}
    variants.update({f"{d}+{q} (served: tuned fp32)": as_served(fp32, d, q)
                     for d, q in MODES if d != "float32"})
    rows: dict[str, list] = {k: [] for k in variants}
    for ids, media in held_out_prompts(engine, data_root, n_prompts):
        groups = {m: ([0], model.encode_media(m, [engine.features.item_features(m, p)]))
                  for m, p in media.items()}
        feats = model.modality_features(groups, 1)
        new = generate(fp32, [ids], new_tokens, modality_features=feats,
                       pad_id=model.tokenizer.pad_id)[0]
        full = torch.tensor([ids + new])
        span = slice(len(ids) - 1, full.shape[1] - 1)  # positions predicting the answer tokens
        ref = fp32(full, modality_features=feats)[0, span]
        for name, backbone in variants.items():
            rows[name].append(compare(ref, backbone(full, modality_features=feats)[0, span]))
    report(f"tiny model {checkpoint}: {len(rows[next(iter(rows))])} held-out prompts, "
           f"{new_tokens} new tokens each", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="trained tiny output folder (e.g. OUT/stage3)")
    ap.add_argument("--data_root", help="the data.synthetic folder it was trained on")
    ap.add_argument("--n-prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--big-layers", type=int, default=2)
    ap.add_argument("--big-only", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.big_only:
        if not (args.model and args.data_root):
            ap.error("--model and --data_root are required unless --big-only")
        tiny_model(args.model, Path(args.data_root), args.n_prompts, args.new_tokens)
    big_model(args.big_layers)


if __name__ == "__main__":
    main()
