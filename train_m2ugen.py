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
from engine_train import NonFiniteLoss, Trainer, TrainHooks
from llama import checkpoint as ckpt
from llama.config import (
    RECIPES, TRAIN_SETTING_FIELDS, DecoderConfig, SettingError, TrainRecipe,
    get_preset, get_recipe,
)
from llama.m2ugen import M2UGen, apply_path_overrides, config_from_dict
from training.step import loss_counts, make_step
from training.targets import TargetProvider
from util.atomic import append_jsonl
from util.dtypes import DTYPE_NAMES, resolve_dtype
from util.seed import seed_everything


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
    add_setting_flags(p)
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
    p.add_argument("--dtype", choices=(*DTYPE_NAMES, "int8"), default="float32",
                   help="dtype of the frozen weights (backbone, encoders, decoder); int8: the "
                        "backbone's projections and LM head int8, the other frozen weights "
                        "bfloat16 (docs/TRAINING.md); trained parameters and optimizer state "
                        "stay float32")
    p.add_argument("--on_error", choices=("raise", "skip"), default="raise",
                   help="unreadable files: fail naming the file, or skip and report counts")
    # LoRA shape and scaling: part of the model configuration (saved in config.json)
    p.add_argument("--lora_rank", type=int, default=None,
                   help="LoRA rank of every backbone projection (default: the preset's: 16 for the "
                        "published presets, 8 for tiny; later stages keep the checkpoint's)")
    p.add_argument("--lora_alpha", type=float, default=None,
                   help="LoRA scaling: the LoRA branch is multiplied by alpha / rank (default: "
                        "alpha = rank, i.e. no scaling, as the published model)")
    # test hooks (engine_train.TrainHooks), not training settings
    p.add_argument("--stop_after_steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--sample_log", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    validate_args(p, args)
    return args


def add_setting_flags(p: argparse.ArgumentParser) -> None:
    """One flag per `llama.config.TrainSettings` field (published names); None = not given, so
    the preset's recipe for the stage, else the field's default, fills it in."""
    g = p.add_argument_group(
        "training settings", "unset flags come from the preset's recipe for this stage "
        "(llama/config.py: get_recipe), else from llama.config.TrainSettings")
    for f in TRAIN_SETTING_FIELDS.values():
        g.add_argument(f"--{f.name}", type=type(f.default), default=None,
                       choices=f.metadata.get("choices"), metavar=f.metadata.get("metavar"),
                       help=f"{f.metadata['help']} (default: {f.default})")


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
        args.settings.check_stage(args.stage)
        check_lora_flags(args)
    except SettingError as err:
        p.error(f"--{err.name} {err.reason}")
    except ValueError as err:
        p.error(str(err))


def import_release_once(args: argparse.Namespace) -> Path:
    """`--init_from RELEASE.pth`: import the released checkpoint into OUTPUT_DIR/imported_release
    (once; a complete import is reused) so training starts from our checkpoint format. The
    tokenizer comes from --llama_path or the folder of --tokenizer_path."""
    from llama.release.export import import_release
    from llama.release.read import ReleaseFileError

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
    except ReleaseFileError as err:
        raise ValueError(str(err)) from None


def _checkpoint_model_config(args: argparse.Namespace) -> Optional[dict[str, Any]]:
    """The model configuration stored in the --resume / --init_from checkpoint, if there is one."""
    src = args.output_dir if args.resume == "auto" else (args.resume or args.init_from)
    if not src:
        return None
    try:
        return ckpt.read_config(ckpt.resolve_checkpoint(src))["m2ugen"]
    except (OSError, KeyError, ValueError):
        return None  # no readable checkpoint yet: main() reports that with the real reason


def check_lora_flags(args: argparse.Namespace) -> None:
    """--lora_rank/--lora_alpha shape a new model (stage 1 from a preset); a checkpoint's LoRA is
    fixed, so a flag that disagrees with it is refused rather than ignored."""
    if args.lora_rank is not None and args.lora_rank < 0:
        raise SettingError("lora_rank", f"must be >= 0, got {args.lora_rank}")
    if args.lora_alpha is not None and not args.lora_alpha > 0:
        raise SettingError("lora_alpha", f"must be > 0, got {args.lora_alpha}")
    saved = _checkpoint_model_config(args)
    if saved is None or not lora_flags(args):
        return
    llama = config_from_dict(saved).llama
    wanted = dataclasses.replace(llama, **lora_flags(args))
    for name, mine, theirs in (("lora_rank", wanted.lora_rank, llama.lora_rank),
                               ("lora_alpha", wanted.lora_scale, llama.lora_scale)):
        if mine != theirs:
            raise SettingError(name, f"{getattr(args, name)} disagrees with the checkpoint's "
                               f"(rank {llama.lora_rank}, alpha {llama.lora_alpha}: scale "
                               f"{llama.lora_scale}); a trained LoRA keeps its shape and scaling")


def lora_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The LoRA flags given on the command line (LlamaConfig field -> value)."""
    names = ("lora_rank", "lora_alpha")
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def resolve_recipe(args: argparse.Namespace) -> None:
    """Resolve the stage's `TrainSettings` (defaults < the preset's recipe < flags given) into
    `args.settings`; sets `args.preset` and `args.recipe_given` (flags given)."""
    if args.preset is None:
        args.preset = (_checkpoint_model_config(args) or {}).get("name") or "tiny"
    name = args.preset if args.preset in RECIPES else None
    recipe = get_recipe(name) if name else TrainRecipe()
    given = {k: getattr(args, k) for k in TRAIN_SETTING_FIELDS if getattr(args, k) is not None}
    args.settings = recipe.for_stage(args.stage, **given)
    for flag in TRAIN_SETTING_FIELDS:  # the resolved values, as config.json's "args" records them
        setattr(args, flag, getattr(args.settings, flag))
    args.recipe_given = ",".join(given)


def describe_settings(args: argparse.Namespace) -> str:
    """One line: the resolved training flags, those given on the command line marked with *."""
    given = set(filter(None, args.recipe_given.split(",")))
    flags = " ".join(f"{k}{'*' if k in given else ''}={getattr(args.settings, k)}"
                     for k in TRAIN_SETTING_FIELDS)
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
    if args.init_from:  # its LoRA stays (check_lora_flags refused flags that disagree)
        cfg = config_from_dict(ckpt.read_config(ckpt.resolve_checkpoint(args.init_from))["m2ugen"])
    else:
        cfg = get_preset(args.preset)
        cfg = cfg.replace(llama=dataclasses.replace(cfg.llama, **lora_flags(args)))
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
    samples = filter_split(stage_samples(args.stage, paths, policy=policy,
                                         stage2_instruction=args.stage2_instruction), split, paths)
    if args.stage > 1 and args.replay > 0:
        # Earlier stages' formats, so LoRA keeps what they taught: captioning (stage 1) and, in
        # stage 3, caption -> [AUD] (stage 2, the format the projector was aligned on).
        g = torch.Generator().manual_seed(args.seed)
        for earlier in range(1, args.stage):
            pool = filter_split(stage_samples(earlier, paths, policy=policy,
                                              stage2_instruction=args.stage2_instruction),
                                split, paths)
            k = min(len(pool), int(round(args.replay * len(samples) / (args.stage - 1))))
            picks = torch.randperm(len(pool), generator=g)[:k].tolist()
            samples = samples + [pool[i] for i in sorted(picks)]
    if music_only:
        samples = [s for s in samples if s.music_caption is not None]
    return M2UGenDataset(samples, model.tokenizer, max_words=args.max_words, media_loader=loader,
                         policy=policy, stage=args.stage, style=model.cfg.chat_style)


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
                      batch_size=args.projector_refit_batch_size, seed=args.seed,
                      mixup=args.projector_refit_mixup, start=args.projector_refit_start),
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
    model = M2UGen(cfg, device=accelerator.device,
                   dtype=resolve_dtype("bfloat16" if args.dtype == "int8" else args.dtype),
                   quantize="int8" if args.dtype == "int8" else "none")
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
        print(describe_settings(args), flush=True)
        n_train = sum(dict(model.named_parameters())[n].numel() for n in trainable)
        print(f"stage {args.stage}: {len(dataset)} samples {dataset.task_counts()}; "
              f"{n_train:,} trainable parameters in {len(trainable)} tensors", flush=True)
    settings = args.settings
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
            append_jsonl(log_file, {"epoch": epoch, "time": time.time(),
                                    "skipped": len(dataset.skipped)})

    trainer = Trainer(
        model=prepared, dataset=dataset, collate=Collator(pad_id=model.tokenizer.pad_id),
        step_fn=make_step(model, prepared, targets, settings, accelerator.device),
        count_fn=loss_counts,
        settings=settings, output_dir=out, checkpoint_config=checkpoint_config,
        tuned_names=tuned, accelerator=accelerator, on_epoch_end=on_epoch_end,
        last_epoch_completes=args.projector_refit_steps == 0,
        hooks=TrainHooks(stop_after_steps=args.stop_after_steps, sample_log=args.sample_log),
    )
    if resume_dir is not None:
        trainer.resume(resume_dir)
    try:
        metrics = trainer.train()
        if args.projector_refit_steps and trainer.epochs_done and not refit:
            refit.update(refit_projector(args, model, media, targets, accelerator.is_main_process))
            append_jsonl(log_file, {"projector_refit": refit, "time": time.time()})
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
