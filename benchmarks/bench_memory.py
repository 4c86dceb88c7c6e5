"""Peak memory of one real training step of the 7B configuration (CPU, random weights).

    python benchmarks/bench_memory.py [--stages 1 3] [--seq 128] [--frozen_dtype bfloat16]
                                      [--audio_frames 750] [--json OUT.json]

Each measurement runs in a fresh subprocess: the LLaMA-2 7B backbone is built on the meta device,
cast to the frozen dtype, its PEFT parameters returned to float32, then materialised on the CPU
with random weights; the three bridges and the output projector of `m2ugen-musicgen-small` are
built in float32. One AdamW step of the stage's trainable set runs on one sample (batch 1,
`--seq` tokens, one music clip of `--audio_frames` MERT frames) under bf16 autocast, as
`--dtype bfloat16 --mixed_precision bf16` trains. The frozen encoders and decoder are not loaded
(training reads their outputs from the feature cache).

Printed per stage: peak RSS (the child's ru_maxrss) split into frozen weights, tuned weights
(float32; all of them are resident, the stage trains a subset), gradients, AdamW state and the
rest (activations, temporaries, the Python/torch runtime). A float32-frozen row is measured when
the machine has the memory for it, otherwise derived by arithmetic (peak + 2 bytes per frozen
bf16 backbone weight) and marked so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llama.backbone import Transformer  # noqa: E402
from llama.lora import keep_peft_float32, parameter_group, set_trainable  # noqa: E402
from llama.bridges import build_bridges  # noqa: E402
from llama.config import AUD_TOKENS, MODALITIES, get_preset  # noqa: E402
from llama.projector import OutputProjector  # noqa: E402
from training.optim import param_groups  # noqa: E402
from training.precision import MixedPrecision  # noqa: E402
from util.atomic import write_text  # noqa: E402

GiB = 2**30
DEFAULT_PRESET = "m2ugen-musicgen-small"


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@torch.no_grad()
def materialise(model: torch.nn.Module) -> None:
    """Random values in place of the uninitialised storage `to_empty` gave (every page touched)."""
    gen = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        elif name.endswith((".bias", ".gate")) or "_l2." in name:
            p.zero_()
        else:
            for chunk in p.view(-1).split(1 << 24):
                chunk.normal_(0.0, 0.02, generator=gen)


def build(preset: str, frozen_dtype: torch.dtype):
    cfg = get_preset(preset)
    with torch.device("meta"):
        backbone = Transformer(cfg.llama)
    backbone.to(frozen_dtype)
    keep_peft_float32(backbone)
    backbone.to_empty(device="cpu")
    materialise(backbone)
    backbone.add_tokens(len(AUD_TOKENS))
    keep_peft_float32(backbone)
    torch.manual_seed(0)
    bridges = build_bridges(cfg)
    projector = OutputProjector(cfg.llama.dim, cfg.projector)
    return cfg, torch.nn.ModuleDict({"backbone": backbone, "bridges": bridges,
                                     "projector": projector})


def step(preset: str, stage: int, frozen_dtype: torch.dtype, seq: int, frames: int) -> dict:
    """Build, run one forward/backward/AdamW step, and account for the memory."""
    cfg, model = build(preset, frozen_dtype)
    backbone, bridges = model["backbone"], model["bridges"]
    for p in model.parameters():
        p.requires_grad_(False)
    set_trainable(backbone)
    if stage == 1:
        bridges.requires_grad_(True)
    elif stage == 2:
        model["projector"].requires_grad_(True)
    optimizer = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    precision = MixedPrecision("bf16", torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, cfg.llama.vocab_size, (1, seq), generator=g)
    states = torch.randn(1, cfg.mert.num_hidden_states, frames, cfg.mert.hidden_size, generator=g)
    mask = torch.ones(1, frames, dtype=torch.bool)
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with precision.autocast():
        feats = torch.zeros(1, len(MODALITIES), cfg.llama.dim)
        feats[:, 0] = bridges["audio"](states, mask).float()
        logits = backbone(tokens, modality_features=feats)
        loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), tokens[0, 1:])
    precision.backward(loss)
    trained = [p for p in model.parameters() if p.requires_grad]
    grads = nbytes(p.grad for p in trained if p.grad is not None)
    optimizer.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    optim = nbytes(t for s in optimizer.state.values() for t in s.values()
                   if isinstance(t, torch.Tensor) and t.dim() > 0)
    # Frozen = the base LLaMA weights (no encoder/decoder is resident); tuned = the rest.
    frozen = frozen_backbone = nbytes(p for n, p in backbone.named_parameters()
                                      if parameter_group(n) is None)
    tuned = nbytes(model.parameters()) - frozen
    return {
        "stage": stage, "frozen_dtype": str(frozen_dtype).replace("torch.", ""), "seq": seq,
        "loss": float(loss), "peak": peak, "built": rss_built, "frozen": frozen,
        "frozen_backbone": frozen_backbone, "tuned": tuned,
        "trained": nbytes(trained), "grads": grads, "optimizer": optim,
        "rest": peak - frozen - tuned - grads - optim, "measured": True,
    }


def run_child(preset: str, stage: int, dtype: str, seq: int, frames: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(stage), "--frozen_dtype", dtype,
           "--preset", preset,
           "--seq", str(seq), "--audio_frames", str(frames)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench_memory: stage {stage} {dtype} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def float32_row(bf16: dict) -> dict:
    """The same step with float32 frozen weights: 2 more bytes per frozen backbone weight."""
    extra = bf16["frozen_backbone"]
    return {**bf16, "frozen_dtype": "float32", "frozen": bf16["frozen"] + extra,
            "frozen_backbone": 2 * extra, "peak": bf16["peak"] + extra, "measured": False}


def table(rows: list[dict]) -> str:
    head = ("| stage | frozen dtype | peak RSS | frozen | tuned (fp32) | grads | AdamW state "
            "| rest | how |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        gb = {k: f"{r[k] / GiB:.2f}" for k in ("peak", "frozen", "tuned", "grads", "optimizer",
                                                 "rest")}
        how = "measured" if r["measured"] else "arithmetic (does not fit this machine)"
        lines.append(f"| {r['stage']} | {r['frozen_dtype']} | {gb['peak']} | {gb['frozen']} | "
                     f"{gb['tuned']} | {gb['grads']} | {gb['optimizer']} | {gb['rest']} | "
                     f"{how} |")
    return "\n".join(lines) + "\n(GiB; tuned = every parameter a checkpoint stores, resident in " \
        "float32; rest = activations, temporaries and the runtime)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", type=int, nargs="+", default=[1, 3])
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--audio_frames", type=int, default=750, help="MERT frames (75/s: 10 s)")
    p.add_argument("--frozen_dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--json", default=None)
    p.add_argument("--preset", default=DEFAULT_PRESET, help="shapes (tiny: a quick smoke run)")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    if args.child is not None:
        print(json.dumps(step(args.preset, args.child, getattr(torch, args.frozen_dtype),
                              args.seq, args.audio_frames)))
        return
    rows = []
    for stage in args.stages:
        bf16 = run_child(args.preset, stage, "bfloat16", args.seq, args.audio_frames)
        rows.append(bf16)
        need = bf16["peak"] + bf16["frozen_backbone"] + 2 * GiB
        if available_bytes() > need:
            rows.append(run_child(args.preset, stage, "float32", args.seq, args.audio_frames))
        else:
            rows.append(float32_row(bf16))
    print(table(rows))
    if args.json:
        write_text(args.json, json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
