"""Time and peak RSS of loading a 7B-shaped release `checkpoint.pth`: directly
(`llama.release.load.load_release`) and through `python -m llama.import_published`.

    python benchmarks/bench_import.py [--workdir DIR] [--keep]   # DIR: ~20 GB free

The checkpoint has the published dict layout ({model, optimizer, epoch, scaler, args}) and the
published shapes: LLaMA-2 7B (32008-row embedding and head; wq..wo, w1..w3, output float16 as the
published GPU runs saved them, everything else float32), LoRA rank 16, biases, gates, the 18-row
prefix table, MERT-v1-330M, ViT-B/16 and ViViT-B (with poolers), the three bridges and the
MusicGen projector at full size. Reduced: `generation_model.*` (MusicGen, never read by either
loader) is one 8 MB tensor instead of ~2.3 GB. Values are random (normal, 0.02): each tensor is
a memory-mapped window at a random offset of a 600 MB random pool file, so writing ~19 GB needs
no more RAM than the pool.

Each measurement runs in a fresh subprocess (Linux carries ru_maxrss across fork+exec, so the
writer is a child too); peak RSS is that child's `resource.getrusage(RUSAGE_SELF).ru_maxrss`
after the load, compared with the bound 1.15 x bytes of the tensors kept + 1 GiB. The checkpoint
and the import output are deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import argparse as _ap
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GiB = 2**30
POOL_BYTES = 600 * 2**20
DIM, LAYERS, HEADS, FFN, VOCAB, RANK = 4096, 32, 32, 11008, 32000, 16


def llama_shapes() -> dict[str, tuple[tuple[int, ...], str]]:
    """Published `llama.*` names -> (shape, dtype): frozen matrices float16, the rest float32."""
    out: dict[str, tuple[tuple[int, ...], str]] = {
        "llama.tok_embeddings.weight": ((VOCAB + 8, DIM), "f4"),
        "llama.output.weight": ((VOCAB + 8, DIM), "f2"),
        "llama.norm.weight": ((DIM,), "f4"),
    }
    mats = {"attention.wq": (DIM, DIM), "attention.wk": (DIM, DIM), "attention.wv": (DIM, DIM),
            "attention.wo": (DIM, DIM), "feed_forward.w1": (FFN, DIM),
            "feed_forward.w2": (DIM, FFN), "feed_forward.w3": (FFN, DIM)}
    biased = ("attention.wq", "attention.wo", "feed_forward.w1", "feed_forward.w2",
              "feed_forward.w3")
    for i in range(LAYERS):
        p = f"llama.layers.{i}."
        for name, (o, k) in mats.items():
            out[f"{p}{name}.weight"] = ((o, k), "f2")
            if name in biased:
                out[f"{p}{name}.bias"] = ((o,), "f4")
            mod, short = name.split(".")
            out[f"{p}{mod}.lora_{short}_l1.weight"] = ((RANK, k), "f4")
            out[f"{p}{mod}.lora_{short}_l2.weight"] = ((o, RANK), "f4")
        out[f"{p}attention.gate"] = ((1, HEADS, 1, 1), "f4")
        out[f"{p}attention_norm.weight"] = ((DIM,), "f4")
        out[f"{p}ffn_norm.weight"] = ((DIM,), "f4")
    return out


# The published encoders' sizes: MERT-v1-330M (HuBERT-large shape), ViT-B/16 at 224, ViViT-B 16x2
# with 32 frames. The loader reads these back from the tensors (llama.release.components).
ENCODERS = {
    "audio": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, feat_extract_norm="layer", do_stable_layer_norm=True,
                  conv_bias=True, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16),
    "image": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, image_size=224, patch_size=16),
    "video": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, image_size=224, num_frames=32, tubelet_size=[2, 16, 16]),
}


def module_shapes() -> dict[str, tuple[tuple[int, ...], str]]:
    """Encoders (HF classes on the meta device), bridges and projector at published sizes."""
    import torch
    from transformers import HubertConfig, HubertModel, ViTConfig, ViTModel, VivitConfig, VivitModel

    from llama.config import ProjectorConfig
    from llama.projector import OutputProjector

    out: dict[str, tuple[tuple[int, ...], str]] = {}
    with torch.device("meta"):
        models = {"mert_model.": HubertModel(HubertConfig(**ENCODERS["audio"])),
                  "vit_model.": ViTModel(ViTConfig(**ENCODERS["image"])),
                  "vivit_model.": VivitModel(VivitConfig(**ENCODERS["video"])),
                  "output_projector.": OutputProjector(DIM, ProjectorConfig())}
    for prefix, model in models.items():
        for name, t in model.state_dict().items():
            out[prefix + name] = (tuple(t.shape), "f4")
    for prefix, width, n_in in (("mu_mert", 1024, 25), ("iu_vit", 768, 197),
                                ("iu_vivit", 768, 3137)):
        out[f"{prefix}_agg.weight"] = ((1, n_in, 1), "f4")
        out[f"{prefix}_agg.bias"] = ((1,), "f4")
        out[f"{prefix}_proj.weight"] = ((DIM, width), "f4")
        out[f"{prefix}_proj.bias"] = ((DIM,), "f4")
        for i in (1, 2, 3):
            out[f"{prefix}_norm_{i}.weight"] = ((DIM,), "f4")
            for f in (1, 2, 3):
                out[f"{prefix}_f{f}_{i}.weight"] = ((DIM, DIM), "f4")
    out["prefix_query.weight"] = ((18, DIM), "f4")
    out["generation_model.reduced_stand_in"] = ((2 * 2**20,), "f4")
    return out


def write_release(path: Path) -> int:
    """The release file at `path`; returns its tensor bytes."""
    import numpy as np
    import torch

    from util.atomic import atomic_path

    rng = np.random.default_rng(0)
    pools = {}
    for code in ("f2", "f4"):
        pool = path.parent / f".pool-{code}.bin"
        n = POOL_BYTES // np.dtype(code).itemsize
        (rng.standard_normal(n, dtype=np.float32) * 0.02).astype(code).tofile(pool)
        pools[code] = pool
    state, total = {}, 0
    for name, (shape, code) in {**llama_shapes(), **module_shapes()}.items():
        item = np.dtype(code).itemsize
        count = int(np.prod(shape))
        room = POOL_BYTES // item - count
        offset = int(rng.integers(0, room + 1)) * item
        arr = np.memmap(pools[code], dtype=code, mode="c", offset=offset, shape=shape)
        state[name] = torch.from_numpy(arr)
        total += count * item
    args = _ap.Namespace(music_decoder="musicgen", music_decoder_path="facebook/musicgen-small")
    with atomic_path(path) as tmp:
        torch.save({"model": state, "optimizer": {}, "epoch": 0, "scaler": {}, "args": args}, tmp)
    for pool in pools.values():
        pool.unlink()
    return total


def write_tokenizer(folder: Path) -> None:
    """A SentencePiece model with LLaMA-2's 32000 pieces (the tiny test tokenizer, padded)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString((REPO / "tests/llama/published_reference/components/tokenizer.model"
                           ).read_bytes())
    have = {p.piece for p in proto.pieces}
    i = 0
    while len(proto.pieces) < VOCAB:
        piece = f"\u2581pad{i}"
        i += 1
        if piece not in have:
            proto.pieces.add(piece=piece, score=-1000.0 - i)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(proto.SerializeToString())


def _kept_bytes(model) -> int:
    seen, total = set(), 0
    mods = [model, *getattr(model, "_encoders", {}).values()]
    for m in mods:
        for t in [*m.parameters(), *m.buffers()]:
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    return total


def child(mode: str, src: str, tok: str, dst: str) -> None:
    """One measurement (run in a fresh process); prints a JSON line."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if mode == "write":
        n = write_release(Path(src))
        print(json.dumps({"bytes": n, "seconds": time.perf_counter() - t0}))
        return
    from llama.release.export import import_release
    from llama.release.load import load_release

    if mode == "direct":
        model = load_release(src, llama_dir=tok, dtype=None).model
        kept = _kept_bytes(model)
    else:
        import_release(src, dst, llama_dir=tok)
        kept = sum(f.stat().st_size for f in Path(dst).rglob("*") if f.is_file())
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "rss": rss, "kept": kept}))


def run(mode: str, src: Path, tok: Path, dst: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(src), str(tok), str(dst)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if res.returncode:
        raise SystemExit(f"{mode} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "m2ugen_bench_import"))
    p.add_argument("--keep", action="store_true")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return 0
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    src, tok, dst = work / "checkpoint.pth", work / "LLaMA-2", work / "imported"
    print(f"free disk at {work}: {shutil.disk_usage(work).free / GiB:.1f} GiB", flush=True)
    try:
        write_tokenizer(tok)
        if not src.is_file():
            w = run("write", src, tok, dst)
            print(f"wrote {src}: {w['bytes'] / GiB:.2f} GiB of tensors in {w['seconds']:.0f} s",
                  flush=True)
        size = src.stat().st_size
        rows = [("direct load", run("direct", src, tok, dst)),
                ("import_published", run("import", src, tok, dst))]
    finally:
        if not args.keep:
            shutil.rmtree(dst, ignore_errors=True)
            src.unlink(missing_ok=True)
    print(f"file: {size / GiB:.2f} GiB (peak RSS counts the file's pages a process touched: "
          "memory-mapped, shared with the page cache, not copies)")
    print("| path | seconds | peak RSS GiB | kept GiB | bound 1.15 x kept + 1 GiB | within |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        bound = 1.15 * r["kept"] + GiB
        print(f"| {name} | {r['seconds']:.1f} | {r['rss'] / GiB:.2f} | {r['kept'] / GiB:.2f} | "
              f"{bound / GiB:.2f} | {'yes' if r['rss'] <= bound else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
