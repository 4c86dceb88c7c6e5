"""Training throughput per stage, with and without the feature cache (tiny preset, CPU).

    python benchmarks/bench_train.py --data_root DATA [--steps 8] [--batch_size 8] [--threads 2]

"Without cache" is what the published code did: every step decodes the media files and runs the
frozen encoders (and, for music answers, the decoder's text encoder for the targets). "With cache"
reads features computed once (warm RAM/disk cache). Both columns are measured in the same run on
the same batches, so the ratio is meaningful on a noisy machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from data.collate import Collator  # noqa: E402
from data.dataset import PerModalityLoader, build_stage_dataset  # noqa: E402
from data.features import MediaFeatures, media_loader_for  # noqa: E402
from data.paths import DataPaths  # noqa: E402
from llama.config import TrainSettings, get_preset  # noqa: E402
from llama.m2ugen import M2UGen  # noqa: E402
from training.step import make_step  # noqa: E402

STAGES = {  # (stage, tasks kept, label)
    "1-audio": (1, {"audio_caption"}, "stage 1, audio captioning"),
    "1-image": (1, {"image_caption"}, "stage 1, image captioning"),
    "1-video": (1, {"video_caption"}, "stage 1, video captioning"),
    "2": (2, None, "stage 2, text -> music"),
    "3": (3, None, "stage 3, instructions"),
}


class UncachedTargets:
    """Decoder targets recomputed every step (no cache)."""

    def __init__(self, model: M2UGen) -> None:
        self.model = model

    def __call__(self, captions):
        return self.model.decoder.targets(captions, scale=self.model.cfg.projector.target_scale)


class CachedTargets(UncachedTargets):
    def __init__(self, model: M2UGen) -> None:
        super().__init__(model)
        self.memo: dict = {}

    def get(self, key):
        return self.memo.get(key)

    def put(self, key, value):
        self.memo[key] = value

    def __call__(self, captions):
        return self.model.decoder.targets(captions, cache=self,
                                          scale=self.model.cfg.projector.target_scale)


def uncached_loader(model: M2UGen) -> PerModalityLoader:
    def make(modality: str):
        raw, _ = media_loader_for(model.cfg, modality)
        return lambda path: model.encoder(modality).encode_items([raw(path)])[0]

    return PerModalityLoader({m: make(m) for m in ("audio", "image", "video")})


def cached_loader(model: M2UGen) -> PerModalityLoader:
    media = MediaFeatures(model, memo_bytes=2**40)  # this benchmark measures the in-RAM reuse
    return PerModalityLoader({m: media.loader(m)
                              for m in ("audio", "image", "video")})


def samples_per_second(model, dataset, targets, batches, stage) -> float:
    model.set_stage(stage)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    collate = Collator(pad_id=model.tokenizer.pad_id)
    settings = TrainSettings()  # defaults: CE + MSE weights 1, no augmentation
    step = make_step(model, model, targets, settings, torch.device("cpu"))
    n = 0
    start = time.perf_counter()
    for idx in batches:
        batch = collate([dataset[i] for i in idx])
        out = step(batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        n += len(idx)
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data_root", required=True)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stages", default=",".join(STAGES))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = M2UGen(get_preset("tiny"))
    paths = DataPaths.from_root(args.data_root)
    rows = []
    for key in args.stages.split(","):
        stage, tasks, label = STAGES[key]
        ds_plain = build_stage_dataset(stage, paths, model.tokenizer, split="train",
                                       media_loader=uncached_loader(model), tasks=tasks)
        ds_cache = build_stage_dataset(stage, paths, model.tokenizer, split="train",
                                       media_loader=cached_loader(model), tasks=tasks)
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(len(ds_plain), generator=g).tolist()
        batches = [order[i * args.batch_size:(i + 1) * args.batch_size]
                   for i in range(args.steps)]
        batches = [b for b in batches if b]
        cached_targets = CachedTargets(model)
        for idx in batches:  # warm the caches: features and targets computed once
            for i in idx:
                ds_cache[i]
        samples_per_second(model, ds_cache, cached_targets, batches[:1], stage)
        plain = samples_per_second(model, ds_plain, UncachedTargets(model), batches, stage)
        cached = samples_per_second(model, ds_cache, cached_targets, batches, stage)
        rows.append((label, plain, cached, cached / plain))
    print(f"\nbatch {args.batch_size}, {args.steps} steps per cell, torch threads {args.threads}\n")
    print(f"| {'stage':<28} | {'no cache (samples/s)':>20} | {'cache (samples/s)':>18} "
          f"| {'speed-up':>8} |")
    print(f"|{'-' * 30}|{'-' * 22}|{'-' * 20}|{'-' * 10}|")
    for label, plain, cached, ratio in rows:
        print(f"| {label:<28} | {plain:>20.1f} | {cached:>18.1f} | {ratio:>7.1f}x |")


if __name__ == "__main__":
    main()
