"""Train one M2UGen stage.

    python train_m2ugen.py --stage 1 --preset tiny --data_root DATA --output_dir OUT/stage1
    python train_m2ugen.py --stage 2 --init_from OUT/stage1 --data_root DATA --output_dir OUT/stage2

Stage 1 aligns the encoders (captioning), stage 2 the decoder (caption -> [AUD] -> projector),
stage 3 tunes on instructions. `train.sh` chains the three. Several processes (DDP):
`torchrun --nproc_per_node N train_m2ugen.py ...` (GPUs: NCCL; without CUDA: CPU processes in a
gloo group); `--batch_size` is per process. Commands and what was tested: docs/TRAINING.md.

The output folder holds `checkpoint/` (tuned weights + optimizer/RNG/sampler state, rewritten
atomically), `tensorboard/` and `train_log.jsonl`. `--resume` continues an interrupted run exactly.
With `--projector_refit_steps N` (the tiny recipe's stage 3), the stage ends by refitting the output
projector on the final model's [AUD] states (engine_refit.py); the checkpoint is marked complete
only after that, and `--resume` on a finished stage 3 that was never refitted runs just the refit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from data.collate import Collator
from data.features import MediaFeatures
from data.paths import DataPaths
from data.schemas import DatasetError
from engine_train import (
    NonFiniteLoss, TargetProvider, Trainer, loss_counts, make_step, settings_from_args,
)
from llama import checkpoint as ckpt
from llama.config import RECIPES, TRAIN_DEFAULTS, DecoderConfig, TrainRecipe, get_preset, get_recipe
from llama.m2ugen import M2UGen, apply_path_overrides, config_from_dict
from util.seed import seed_everything


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=int, choices=(1, 2, 3), required=True)
    p.add_argument("--preset", default=None,
                   help="named configuration and training recipe (llama/config.py; default: the "
                        "--init_from/--resume checkpoint's, else tiny)")
    p.add_argument("--data_root", required=True, help="dataset root (layout: docs/DATA.md)")
    p.add_argument("--data", nargs="*", default=[], metavar="FIELD=PATH",
                   help="override one dataset path, e.g. musicqa=/d/MusicQA.json (FIELD= drops it)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--init_from", default=None, help="previous stage's output folder")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue an interrupted run (default: OUTPUT_DIR/checkpoint)")
    # published hyper-parameter names; unset ones come from the preset's recipe for this stage
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--accum_iter", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--min_lr", type=float, default=None)
    p.add_argument("--warmup_epochs", type=float, default=None)
    p.add_argument("--weight_decay", type=float, default=None)
    p.add_argument("--clip_grad", type=float, default=None)
    p.add_argument("--bridge_lr_scale", type=float, default=None,
                   help="learning-rate multiplier for the modality bridges")
    p.add_argument("--audio_crop", type=float, default=None, metavar="MIN_FRACTION",
                   help="train on a random span of at least this fraction of each clip's music "
                        "frames (augmentation; 1 = whole clips)")
    p.add_argument("--max_words", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_workers", type=int, default=0,
                   help="kept for the published interface; features come from the cache in-process")
    # weights (published names)
    p.add_argument("--llama_path", default=None, help="LLaMA-2 folder (Meta or HF layout)")
    p.add_argument("--tokenizer_path", default=None)
    p.add_argument("--mert_path", default=None)
    p.add_argument("--trust_remote_code", action="store_true",
                   help="run the MERT folder's own code (default: HuBERT classes, no folder code)")
    p.add_argument("--vit_path", default=None)
    p.add_argument("--vivit_path", default=None)
    p.add_argument("--music_decoder", choices=("musicgen", "audioldm2"), default=None)
    p.add_argument("--music_decoder_path", default=None)
    # ours
    p.add_argument("--feature_cache", default=None,
                   help="folder for frozen-encoder features and decoder targets "
                        "(reused across runs)")
    p.add_argument("--feature_memo_mb", type=int, default=1024,
                   help="RAM (MB) for frozen-encoder features reused across epochs")
    p.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default="no",
                   help="autocast the forward in bf16/fp16 (fp16 adds a gradient scaler; steps "
                        "with non-finite gradients are skipped and counted)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                   help="dtype of the frozen weights (backbone, encoders, decoder); trained "
                        "parameters and optimizer state stay float32")
    p.add_argument("--on_error", choices=("raise", "skip"), default="raise",
                   help="unreadable files: fail naming the file, or skip and report counts")
    p.add_argument("--save_every", type=int, default=0, help="optimizer steps between checkpoints")
    p.add_argument("--log_every", type=int, default=10)
    p.add_argument("--ce_weight", type=float, default=None)
    p.add_argument("--mse_weight", type=float, default=None)
    p.add_argument("--replay", type=float, default=None,
                   help="stages 2-3: add this fraction (of the stage's size) of samples of the "
                        "earlier stages, so later stages do not erase what those taught")
    p.add_argument("--projector_refit_steps", type=int, default=None,
                   help="stage 3: after the last epoch, fit the output projector alone for this "
                        "many steps on the final model's [AUD] states of the stage's music "
                        "samples (engine_refit.py; 0 = off)")
    p.add_argument("--projector_refit_lr", type=float, default=None,
                   help="peak learning rate of the projector refit (cosine to 3e-5)")
    p.add_argument("--projector_refit_batch_size", type=int, default=None,
                   help="samples per projector refit step")
    p.add_argument("--stop_after_steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--sample_log", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    validate_args(p, args)
    return args


def validate_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Import a release given as --init_from, resolve the recipe, then check the values (p.error:
    one line, exit 2)."""
    if args.init_from and Path(args.init_from).is_file() and not args.resume:
        try:
            args.init_from = str(import_release_once(args))
        except ValueError as err:
            p.error(str(err))
    if args.stage > 1 and args.init_from is None and args.resume is None:
        p.error(f"--stage {args.stage} needs --init_from (the previous stage's output folder)")
    try:
        resolve_recipe(args)
    except ValueError as err:
        p.error(str(err))
    for name in ("batch_size", "accum_iter", "epochs", "max_words", "projector_refit_batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if not 0.0 < args.audio_crop <= 1.0:
        p.error(f"--audio_crop must be in (0, 1], got {args.audio_crop}")
    if args.projector_refit_steps < 0:
        p.error(f"--projector_refit_steps must be >= 0, got {args.projector_refit_steps}")
    if args.projector_refit_steps and args.stage != 3:
        p.error("--projector_refit_steps is a stage-3 phase (stage 2 trains the projector itself)")
    if not args.projector_refit_lr > 0:
        p.error(f"--projector_refit_lr must be > 0, got {args.projector_refit_lr}")


def import_release_once(args: argparse.Namespace) -> Path:
    """`--init_from RELEASE.pth`: import the released checkpoint into OUTPUT_DIR/imported_release
    (once; a complete import is reused) so training starts from our checkpoint format. The
    tokenizer comes from --llama_path or the folder of --tokenizer_path."""
    from llama.published import PublishedCheckpointError, import_release

    dst = Path(args.output_dir) / "imported_release"
    try:
        return ckpt.resolve_checkpoint(dst)
    except ckpt.CheckpointError:
        pass
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            f"--init_from {args.init_from}: import the release once before a multi-process run: "
            f"python -m llama.import_published {args.init_from} DST, then --init_from DST")
    llama_dir = args.llama_path or (
        str(Path(args.tokenizer_path).parent) if args.tokenizer_path else None)
    try:
        return import_release(args.init_from, dst, llama_dir=llama_dir, mert_path=args.mert_path,
                              vit_path=args.vit_path, vivit_path=args.vivit_path)
    except PublishedCheckpointError as err:
        raise ValueError(str(err)) from None


def _checkpoint_preset(args: argparse.Namespace) -> Optional[str]:
    """The preset name stored in the --resume / --init_from checkpoint, if there is one."""
    src = args.output_dir if args.resume == "auto" else (args.resume or args.init_from)
    if not src:
        return None
    try:
        return ckpt.read_config(ckpt.resolve_checkpoint(src))["m2ugen"].get("name")
    except (OSError, KeyError, ValueError):
        return None  # no readable checkpoint yet: main() reports that with the real reason


def resolve_recipe(args: argparse.Namespace) -> None:
    """Fill every training flag the user did not give from the preset's recipe for this stage
    (llama.config.get_recipe); sets `args.preset` and `args.recipe_given` (flags given)."""
    if args.preset is None:
        args.preset = _checkpoint_preset(args) or "tiny"
    name = args.preset if args.preset in RECIPES else None
    recipe = get_recipe(name) if name else TrainRecipe()
    given = []
    for flag, value in recipe.for_stage(args.stage).items():
        if getattr(args, flag) is None:
            setattr(args, flag, value)
        else:
            given.append(flag)
    args.recipe_given = ",".join(given)


def describe_settings(args: argparse.Namespace) -> str:
    """One line: the resolved training flags, those given on the command line marked with *."""
    given = set(filter(None, args.recipe_given.split(",")))
    flags = " ".join(f"{k}{'*' if k in given else ''}={getattr(args, k)}" for k in TRAIN_DEFAULTS)
    return f"stage {args.stage} settings (recipe of preset {args.preset}; * = given): {flags}"


def launcher_world_size() -> int:
    """How many processes the launcher (torchrun, accelerate launch) says it started."""
    return max(int(os.environ.get(v, "1") or 1) for v in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"))


def make_accelerator():
    """One process group for every process a launcher started.

    Without CUDA, plain `Accelerator()` under torchrun reports one process of one in each process
    (independent runs, silently); `cpu=True` forms the real gloo group. Mixed precision is ours
    (engine_train.MixedPrecision), so accelerate gets "no" and never patches `forward`.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType

    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision="no",
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    launched = launcher_world_size()
    if launched > 1 and accelerator.num_processes != launched:
        raise SystemExit(
            f"train_m2ugen: the launcher started {launched} processes (WORLD_SIZE/LOCAL_WORLD_SIZE)"
            f" but this one joined a group of {accelerator.num_processes}; refusing to train "
            f"alone (check the accelerate config / torchrun arguments)"
        )
    kind = accelerator.distributed_type
    if kind in (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM,
                DistributedType.XLA):
        raise SystemExit(
            f"train_m2ugen: {kind.value} is not supported (the loop, its saving and loading of "
            f"the tuned weights assume unsharded parameters and plain DDP); use DDP with "
            f"--dtype bfloat16 (docs/TRAINING.md)"
        )
    return accelerator


def build_config(args: argparse.Namespace):
    """The stage's configuration: the previous stage's, or the preset with the given weights."""
    if args.init_from:
        cfg = config_from_dict(ckpt.read_config(ckpt.resolve_checkpoint(args.init_from))["m2ugen"])
    else:
        cfg = get_preset(args.preset)
    if args.music_decoder and args.music_decoder != cfg.decoder.kind:
        default_path = {"musicgen": "facebook/musicgen-small",
                        "audioldm2": "cvssp/audioldm2-music"}
        cfg.decoder = DecoderConfig(
            kind=args.music_decoder,
            path=args.music_decoder_path or default_path[args.music_decoder])
    return apply_path_overrides(cfg, {
        "llama_path": args.llama_path, "tokenizer_path": args.tokenizer_path,
        "mert_path": args.mert_path, "vit_path": args.vit_path, "vivit_path": args.vivit_path,
        "music_decoder_path": args.music_decoder_path,
        "trust_remote_code": "true" if args.trust_remote_code else None,
    })


def build_dataset(args: argparse.Namespace, model: M2UGen, media: MediaFeatures,
                  music_only: bool = False):
    """The stage's training samples (+ replay of earlier stages); `music_only`: only those whose
    answer produces music (what the projector refit fits on: the stage's requests and the
    replayed stage-2 captions, whose several caption templates keep the projector from learning
    only the few targets the requests' answers name; docs/SYNTHETIC.md)."""
    from data.dataset import M2UGenDataset, PerModalityLoader
    from data.mixes import filter_split, stage_samples
    from data.schemas import ErrorPolicy

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
    if music_only:
        samples = [s for s in samples if s.music_caption is not None]
    return M2UGenDataset(samples, model.tokenizer, max_words=args.max_words, media_loader=loader,
                         policy=policy, stage=args.stage)


def refit_projector(args: argparse.Namespace, model: M2UGen, media: MediaFeatures,
                    targets: TargetProvider, verbose: bool) -> dict[str, float]:
    """The stage-3 projector refit (engine_refit.py) on this stage's music samples."""
    from engine_refit import RefitSettings, collect_projector_data, fit_projector

    dataset = build_dataset(args, model, media, music_only=True)
    start = time.perf_counter()
    inputs, goals = collect_projector_data(model, dataset, targets)
    if verbose:
        print(f"projector refit: {len(inputs)} music samples {dataset.task_counts()}, inputs "
              f"{inputs.numel() * 4 / 2**20:.1f} MB, collected in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    every = max(args.projector_refit_steps // 8, 1)

    def log(step: int, loss: float, lr: float) -> None:
        if verbose and (step % every == 0 or step + 1 == args.projector_refit_steps):
            print(f"projector refit step {step}: mse {loss:.4f} lr {lr:.2e}", flush=True)

    result = fit_projector(
        model.projector, inputs, goals,
        RefitSettings(steps=args.projector_refit_steps, lr=args.projector_refit_lr,
                      batch_size=args.projector_refit_batch_size, seed=args.seed),
        log=log,
    )
    if verbose:
        print(f"projector refit done: mse {result['mse_before']:.4f} -> "
              f"{result['mse_after']:.4f} in {result['seconds']:.0f} s", flush=True)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    accelerator = make_accelerator()
    try:
        return train(args, accelerator)
    finally:
        # Leave the process group before the interpreter exits: a gloo group torn down at
        # interpreter shutdown can abort the process ("terminate called without an active
        # exception") after training has finished.
        accelerator.end_training()


def train(args: argparse.Namespace, accelerator: Any) -> int:
    """One stage in this process, under `accelerator`'s process group; returns the exit code."""
    seed_everything(args.seed)  # the same model initialisation in every process
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resume_dir = None
    if args.resume:
        resume_dir = ckpt.resolve_checkpoint(out if args.resume == "auto" else args.resume)
        cfg = config_from_dict(ckpt.read_config(resume_dir)["m2ugen"])
    else:
        cfg = build_config(args)
    model = M2UGen(cfg, device=accelerator.device, dtype=DTYPES[args.dtype])
    if args.init_from and not resume_dir:
        src = ckpt.resolve_checkpoint(args.init_from)
        ckpt.load_tuned_weights(model, ckpt.read_weights(src), source=str(src))
        saved = ckpt.read_config(src)
        if "published" in saved:  # an imported release: its compatibility values
            from llama.published import restore_compat

            restore_compat(model, saved)
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
        print(describe_settings(args), flush=True)
        n_train = sum(dict(model.named_parameters())[n].numel() for n in trainable)
        print(f"stage {args.stage}: {len(dataset)} samples {dataset.task_counts()}; "
              f"{n_train:,} trainable parameters in {len(trainable)} tensors", flush=True)
    settings = settings_from_args(args)
    # Augmentation streams differ per process (and are checkpointed per process).
    seed_everything(args.seed + accelerator.process_index)
    prepared = accelerator.prepare(model) if accelerator.num_processes > 1 else model
    log_file = out / "train_log.jsonl"

    refit: dict[str, float] = {}
    if resume_dir is not None:
        refit.update(ckpt.read_config(resume_dir).get("projector_refit") or {})

    def checkpoint_config() -> dict[str, Any]:
        config = {"m2ugen": dataclasses.asdict(model.cfg), "stage": args.stage,
                  "args": {k: v for k, v in vars(args).items()
                           if isinstance(v, (str, int, float, bool, list, type(None)))}}
        if refit:
            config["projector_refit"] = dict(refit)
        return config

    def on_epoch_end(epoch: int) -> None:
        if accelerator.is_main_process:
            print(dataset.report(), flush=True)
            with open(log_file, "a") as fh:
                fh.write(json.dumps({"epoch": epoch, "time": time.time(),
                                     "skipped": len(dataset.skipped)}) + "\n")

    trainer = Trainer(
        model=prepared, dataset=dataset, collate=Collator(pad_id=model.tokenizer.pad_id),
        step_fn=make_step(model, prepared, targets, settings, accelerator.device),
        count_fn=loss_counts,
        settings=settings, output_dir=out, checkpoint_config=checkpoint_config,
        tuned_names=tuned, accelerator=accelerator, on_epoch_end=on_epoch_end,
        last_epoch_completes=args.projector_refit_steps == 0,
    )
    if resume_dir is not None:
        trainer.resume(resume_dir)
    try:
        metrics = trainer.train()
        if args.projector_refit_steps and trainer.epochs_done and not refit:
            refit.update(refit_projector(args, model, media, targets, accelerator.is_main_process))
            with open(log_file, "a") as fh:
                fh.write(json.dumps({"projector_refit": refit, "time": time.time()}) + "\n")
            trainer.save(complete=True)
    except NonFiniteLoss as err:
        print(f"train_m2ugen: stopped: {err}", file=sys.stderr)
        return 3
    except DatasetError as err:
        print(f"train_m2ugen: {err}", file=sys.stderr)
        return 2
    if accelerator.is_main_process:
        print(f"stage {args.stage} done: {json.dumps(metrics)}; checkpoint: {out / 'checkpoint'}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
