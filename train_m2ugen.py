"""Train one M2UGen stage.

    python train_m2ugen.py --stage 1 --preset tiny --data_root DATA --output_dir OUT/stage1
    python train_m2ugen.py --stage 2 --init_from OUT/stage1 --data_root DATA --output_dir OUT/stage2

Stage 1 aligns the encoders (captioning), stage 2 the decoder (caption -> [AUD] -> projector),
stage 3 tunes on instructions. `train.sh` chains the three. Multi-GPU: `accelerate launch
train_m2ugen.py ...` (DDP, or FSDP through an accelerate config).

The output folder holds `checkpoint/` (tuned weights + optimizer/RNG/sampler state, rewritten
atomically), `tensorboard/` and `train_log.jsonl`. `--resume` continues an interrupted run exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from data.collate import Collator
from data.features import MediaFeatures
from data.datasets import DataPaths, DatasetError
from engine_train import (
    NonFiniteLoss, TargetProvider, Trainer, make_step, settings_from_args,
)
from llama import checkpoint as ckpt
from llama.config import DecoderConfig, get_preset
from llama.m2ugen import M2UGen, apply_path_overrides, config_from_dict
from util.seed import seed_everything


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=int, choices=(1, 2, 3), required=True)
    p.add_argument("--preset", default="tiny", help="named configuration (llama/config.py)")
    p.add_argument("--data_root", required=True, help="dataset root (layout: docs/INTERFACES.md)")
    p.add_argument("--data", nargs="*", default=[], metavar="FIELD=PATH",
                   help="override one dataset path, e.g. musicqa=/d/MusicQA.json (FIELD= drops it)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--init_from", default=None, help="previous stage's output folder")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue an interrupted run (default: OUTPUT_DIR/checkpoint)")
    # published hyper-parameter names
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--accum_iter", type=int, default=1)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--min_lr", type=float, default=1e-6)
    p.add_argument("--warmup_epochs", type=float, default=1.0)
    p.add_argument("--weight_decay", type=float, default=0.05)
    p.add_argument("--clip_grad", type=float, default=1.0)
    p.add_argument("--bridge_lr_scale", type=float, default=1.0,
                   help="learning-rate multiplier for the modality bridges")
    p.add_argument("--audio_crop", type=float, default=1.0, metavar="MIN_FRACTION",
                   help="train on a random span of at least this fraction of each clip's music "
                        "frames (augmentation; 1 = whole clips)")
    p.add_argument("--max_words", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_workers", type=int, default=0,
                   help="kept for the published interface; features come from the cache in-process")
    # weights (published names)
    p.add_argument("--llama_path", default=None, help="LLaMA-2 folder (Meta or HF layout)")
    p.add_argument("--tokenizer_path", default=None)
    p.add_argument("--mert_path", default=None)
    p.add_argument("--vit_path", default=None)
    p.add_argument("--vivit_path", default=None)
    p.add_argument("--music_decoder", choices=("musicgen", "audioldm2"), default=None)
    p.add_argument("--music_decoder_path", default=None)
    # ours
    p.add_argument("--feature_cache", default=None,
                   help="folder for frozen-encoder features and decoder targets (reused across runs)")
    p.add_argument("--feature_memo_mb", type=int, default=1024,
                   help="RAM (MB) for frozen-encoder features reused across epochs")
    p.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default="no")
    p.add_argument("--on_error", choices=("raise", "skip"), default="raise",
                   help="unreadable files: fail naming the file, or skip and report counts")
    p.add_argument("--save_every", type=int, default=0, help="optimizer steps between checkpoints")
    p.add_argument("--log_every", type=int, default=10)
    p.add_argument("--ce_weight", type=float, default=1.0)
    p.add_argument("--mse_weight", type=float, default=1.0)
    p.add_argument("--replay", type=float, default=0.0,
                   help="stages 2-3: add this fraction (of the stage's size) of samples of the "
                        "earlier stages, so later stages do not erase what those taught")
    p.add_argument("--stop_after_steps", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.stage > 1 and args.init_from is None and args.resume is None:
        p.error(f"--stage {args.stage} needs --init_from (the previous stage's output folder)")
    for name in ("batch_size", "accum_iter", "epochs", "max_words"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if not 0.0 < args.audio_crop <= 1.0:
        p.error(f"--audio_crop must be in (0, 1], got {args.audio_crop}")
    return args


def build_config(args: argparse.Namespace):
    """The stage's configuration: the previous stage's, or the preset with the given weights."""
    if args.init_from:
        cfg = config_from_dict(ckpt.read_config(ckpt.resolve_checkpoint(args.init_from))["m2ugen"])
    else:
        cfg = get_preset(args.preset)
    if args.music_decoder and args.music_decoder != cfg.decoder.kind:
        default_path = {"musicgen": "facebook/musicgen-small", "audioldm2": "cvssp/audioldm2-music"}
        cfg.decoder = DecoderConfig(kind=args.music_decoder,
                                    path=args.music_decoder_path or default_path[args.music_decoder])
    return apply_path_overrides(cfg, {
        "llama_path": args.llama_path, "tokenizer_path": args.tokenizer_path,
        "mert_path": args.mert_path, "vit_path": args.vit_path, "vivit_path": args.vivit_path,
        "music_decoder_path": args.music_decoder_path,
    })


def build_dataset(args: argparse.Namespace, model: M2UGen, media: MediaFeatures):
    from data.datasets import (
        ErrorPolicy, M2UGenDataset, PerModalityLoader, filter_split, stage_samples,
    )

    paths = DataPaths.from_root(args.data_root).parse_overrides(args.data)
    split = "train" if Path(paths.split).is_file() else "all"
    loader = PerModalityLoader(
        {m: media.loader(m) for m in ("audio", "image", "video")}
    )
    policy = ErrorPolicy(args.on_error)
    samples = filter_split(stage_samples(args.stage, paths, policy=policy), split, paths)
    if args.stage > 1 and args.replay > 0:
        # Earlier stages' formats, so LoRA keeps what they taught: captioning (stage 1) and, in
        # stage 3, caption -> [AUD] (stage 2, the format the projector was aligned on).
        g = torch.Generator().manual_seed(args.seed)
        for earlier in range(1, args.stage):
            pool = filter_split(stage_samples(earlier, paths, policy=policy), split, paths)
            k = min(len(pool), int(round(args.replay * len(samples) / (args.stage - 1))))
            picks = torch.randperm(len(pool), generator=g)[:k].tolist()
            samples = samples + [pool[i] for i in sorted(picks)]
    return M2UGenDataset(samples, model.tokenizer, max_words=args.max_words, media_loader=loader,
                         policy=policy, stage=args.stage)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    seed_everything(args.seed)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resume_dir = None
    if args.resume:
        resume_dir = ckpt.resolve_checkpoint(out if args.resume == "auto" else args.resume)
        cfg = config_from_dict(ckpt.read_config(resume_dir)["m2ugen"])
    else:
        cfg = build_config(args)
    model = M2UGen(cfg, device=accelerator.device)
    if args.init_from and not resume_dir:
        src = ckpt.resolve_checkpoint(args.init_from)
        ckpt.load_tuned_weights(model, ckpt.read_weights(src), source=str(src))
    trainable = model.set_stage(args.stage)
    tuned = model.tuned_parameter_names()
    media = MediaFeatures(model, args.feature_cache, memo_bytes=args.feature_memo_mb * 2**20)
    targets = TargetProvider(model, args.feature_cache)
    try:
        dataset = build_dataset(args, model, media)
    except DatasetError as err:
        print(f"train_m2ugen: {err}", file=sys.stderr)
        return 2
    if accelerator.is_main_process:
        n_train = sum(dict(model.named_parameters())[n].numel() for n in trainable)
        print(f"stage {args.stage}: {len(dataset)} samples {dataset.task_counts()}; "
              f"{n_train:,} trainable parameters in {len(trainable)} tensors", flush=True)
    settings = settings_from_args(args)
    prepared = accelerator.prepare(model) if accelerator.num_processes > 1 else model
    log_file = out / "train_log.jsonl"

    def checkpoint_config() -> dict[str, Any]:
        return {"m2ugen": dataclasses.asdict(model.cfg), "stage": args.stage,
                "args": {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}}

    def on_epoch_end(epoch: int) -> None:
        if accelerator.is_main_process:
            print(dataset.report(), flush=True)
            with open(log_file, "a") as fh:
                fh.write(json.dumps({"epoch": epoch, "time": time.time(),
                                     "skipped": len(dataset.skipped)}) + "\n")

    trainer = Trainer(
        model=prepared, dataset=dataset, collate=Collator(pad_id=model.tokenizer.pad_id),
        step_fn=make_step(model, prepared, targets, settings, accelerator.device),
        settings=settings, output_dir=out, checkpoint_config=checkpoint_config,
        tuned_names=tuned, accelerator=accelerator, on_epoch_end=on_epoch_end,
    )
    if resume_dir is not None:
        trainer.resume(resume_dir)
    try:
        metrics = trainer.train()
    except NonFiniteLoss as err:
        print(f"train_m2ugen: stopped: {err}", file=sys.stderr)
        return 3
    if accelerator.is_main_process:
        print(f"stage {args.stage} done: {json.dumps(metrics)}; checkpoint: {out / 'checkpoint'}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
