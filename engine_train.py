"""One training stage: the epoch loop, checkpoints, resume, logging.

Kept apart from `train_m2ugen.py` (argument parsing and assembly) so the loop reads top to bottom:
for each batch -> features -> loss -> backward (accumulated) -> clip -> step -> schedule -> log ->
maybe checkpoint. Every error surfaces (no catch-all around a step, unlike the published code) and
a non-finite loss stops the run with the last good checkpoint intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from tqdm import tqdm

from data.augment import random_time_crop
from llama import checkpoint as ckpt
from llama.m2ugen import LossOutput, M2UGen
from util.lr_sched import lr_at
from util.seed import rng_state, set_rng_state


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss; the run stops so the last good checkpoint survives."""


@dataclass
class TrainSettings:
    epochs: int = 5
    batch_size: int = 1
    accum_iter: int = 1
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    clip_grad: float = 1.0
    bridge_lr_scale: float = 1.0
    audio_crop: float = 1.0  # shortest random span of music frames kept (1: no cropping)
    seed: int = 0
    save_every: int = 0  # optimizer steps between checkpoints (0: only at epoch ends)
    log_every: int = 10
    ce_weight: float = 1.0
    mse_weight: float = 1.0
    stop_after_steps: Optional[int] = None  # for tests: simulate a kill after N optimizer steps


class EpochBatches:
    """Seeded per-epoch shuffling (different every epoch), sharded by rank, resumable mid-epoch."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if n == 0:
            raise ValueError("the training set is empty")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world

    def batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        order = order[self.rank :: self.world]
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def __len__(self) -> int:
        per_rank = math.ceil(self.n / self.world)
        return math.ceil(per_rank / self.batch_size)


def param_groups(
    model: torch.nn.Module, weight_decay: float, bridge_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices only (none on biases and 1-D parameters).

    Parameters under `bridges.` get `bridge_lr_scale` x the scheduled rate: the music bridge's
    RNN diverges at rates the LoRA/adapter parameters train well with (measured on tiny).
    """
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.endswith(".bias")
        bridge = name.startswith("bridges.") or ".bridges." in name
        groups.setdefault((no_decay, bridge), []).append(p)
    return [
        {"params": params, "weight_decay": 0.0 if no_decay else weight_decay,
         "lr_scale": bridge_lr_scale if bridge else 1.0}
        for (no_decay, bridge), params in sorted(groups.items())
    ]


class Trainer:
    """Runs one stage on a prepared model and dataset; `step_fn(batch) -> LossOutput`."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        dataset: Sequence[Any],
        collate: Callable[[list[Any]], dict[str, Any]],
        step_fn: Callable[[dict[str, Any]], Any],
        settings: TrainSettings,
        output_dir: Path,
        checkpoint_config: Callable[[], dict[str, Any]],
        tuned_names: list[str],
        accelerator: Any,
        on_epoch_end: Optional[Callable[[int], None]] = None,
    ) -> None:
        self.model, self.dataset, self.collate, self.step_fn = model, dataset, collate, step_fn
        self.s, self.out, self.acc = settings, Path(output_dir), accelerator
        self.checkpoint_config, self.tuned_names = checkpoint_config, tuned_names
        self.on_epoch_end = on_epoch_end
        self.sampler = EpochBatches(
            len(dataset), settings.batch_size, settings.seed,
            accelerator.process_index, accelerator.num_processes,
        )
        self.optimizer = torch.optim.AdamW(
            param_groups(model, settings.weight_decay, settings.bridge_lr_scale),
            lr=settings.lr, betas=(0.9, 0.95)
        )
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.writer = None
        if accelerator.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"))

    # -- persistence ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "rng": rng_state(),
        }

    def save(self, complete: bool = False) -> None:
        self.acc.wait_for_everyone()
        if not self.acc.is_main_process:
            return
        model = self.acc.unwrap_model(self.model)
        weights = ckpt.tuned_state_dict(model, self.tuned_names)
        config = self.checkpoint_config()
        config.update(epoch=self.epoch, batch_in_epoch=self.batch_in_epoch, step=self.step,
                      complete=complete)
        ckpt.write_checkpoint(
            self.out / "checkpoint", weights=weights, config=config, training_state=self.state()
        )

    def resume(self, folder: Path) -> None:
        """Restore weights, optimizer, counters and RNG of an interrupted run of this stage."""
        weights = ckpt.read_weights(folder)
        ckpt.load_tuned_weights(self.acc.unwrap_model(self.model), weights, source=str(folder))
        state = ckpt.read_training_state(folder)
        if state is None:
            raise ckpt.CheckpointError(f"{folder}: no training state to resume from")
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.batch_in_epoch, self.step = (
            int(state["epoch"]), int(state["batch_in_epoch"]), int(state["step"]),
        )
        set_rng_state(state["rng"])

    # -- the loop ------------------------------------------------------------------------------

    def _set_lr(self, fractional_epoch: float) -> float:
        lr = lr_at(fractional_epoch, lr=self.s.lr, min_lr=self.s.min_lr,
                   warmup_epochs=self.s.warmup_epochs, epochs=self.s.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def _describe(self, idx: list[int]) -> list[Any]:
        describe = getattr(self.dataset, "describe", None)
        return [describe(j) if describe else j for j in idx]

    def _micro_batches(self, epoch: int) -> Iterator[tuple[int, list[int]]]:
        for i, idx in enumerate(self.sampler.batches(epoch)):
            if epoch == self.epoch and i < self.batch_in_epoch:
                continue  # already consumed before the interruption
            yield i, idx

    def train(self) -> dict[str, float]:
        """Train to the end (or to `stop_after_steps`); returns the last logged metrics."""
        s, acc = self.s, self.acc
        n_batches = len(self.sampler)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        metrics: dict[str, float] = {}
        while self.epoch < s.epochs:
            epoch = self.epoch
            bar = tqdm(total=n_batches, initial=self.batch_in_epoch, desc=f"epoch {epoch}",
                       disable=not acc.is_local_main_process, dynamic_ncols=True, leave=False)
            sums = {"loss": 0.0, "ce": 0.0, "mse": 0.0, "n": 0}
            t0, seen = time.perf_counter(), 0
            for i, idx in self._micro_batches(epoch):
                batch = self.collate([self.dataset[j] for j in idx])
                # Accumulation boundaries are per epoch, so a resumed run syncs where the original did.
                sync = (i + 1) % s.accum_iter == 0 or i + 1 == n_batches
                context = contextlib.nullcontext() if sync else acc.no_sync(self.model)
                with context:
                    out = self.step_fn(batch)
                    if not torch.isfinite(out.loss.detach()):
                        raise NonFiniteLoss(
                            f"non-finite loss {out.loss.item()} at epoch {epoch}, batch {i} "
                            f"(items {self._describe(idx)}); "
                            f"the last good checkpoint is in {self.out / 'checkpoint'}"
                        )
                    acc.backward(out.loss / s.accum_iter)
                if sync:
                    grad_norm = float(acc.clip_grad_norm_(trainable, s.clip_grad))
                    lr = self._set_lr(epoch + (i + 1) / n_batches)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                self.batch_in_epoch = i + 1
                seen += len(idx)
                sums["loss"] += float(out.loss.detach()); sums["ce"] += float(out.ce)
                sums["mse"] += float(out.mse); sums["n"] += 1
                bar.update(1)
                if sync:
                    self.step += 1
                    metrics = {
                        "loss": float(out.loss.detach()), "ce": float(out.ce), "mse": float(out.mse),
                        "lr": lr, "grad_norm": grad_norm,
                        "samples_per_s": seen / max(time.perf_counter() - t0, 1e-9),
                    }
                    bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{lr:.2e}")
                    if self.writer is not None and self.step % s.log_every == 0:
                        for k, v in metrics.items():
                            self.writer.add_scalar(f"train/{k}", v, self.step)
                    if s.save_every and self.step % s.save_every == 0:
                        self.save()
                    if s.stop_after_steps is not None and self.step >= s.stop_after_steps:
                        bar.close()
                        self.save()
                        return metrics
            bar.close()
            n = max(sums["n"], 1)
            if acc.is_main_process:
                print(f"epoch {epoch}: loss {sums['loss']/n:.4f} ce {sums['ce']/n:.4f} "
                      f"mse {sums['mse']/n:.4f}", flush=True)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch)
            self.epoch, self.batch_in_epoch = epoch + 1, 0
            self.save(complete=self.epoch >= s.epochs)
        if self.writer is not None:
            self.writer.close()
        return metrics


def settings_from_args(args: Any) -> TrainSettings:
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    return TrainSettings(**{k: v for k, v in vars(args).items() if k in names})


# ---------------------------------------------------------------------------------------------
# One batch -> loss (media features batched per modality, decoder targets cached)


class TargetProvider:
    """Decoder targets (x10 conditioning) per caption, memoised and optionally cached on disk."""

    def __init__(self, model: M2UGen, cache_dir: Optional[str]) -> None:
        self.model = model
        self._memo: dict[str, torch.Tensor] = {}
        self._disk = None
        if cache_dir:
            from data.features import TextFeatureStore

            self._disk = TextFeatureStore(cache_dir, model.decoder.identity)

    def get(self, key: str) -> Optional[torch.Tensor]:
        if key in self._memo:
            return self._memo[key]
        return self._disk.lookup(key) if self._disk is not None else None

    def put(self, key: str, tensor: torch.Tensor) -> None:
        self._memo[key] = tensor
        if self._disk is not None:
            self._disk.put(key, tensor)

    def __call__(self, captions: list[str]) -> torch.Tensor:
        return self.model.decoder.targets(
            captions, cache=self, scale=self.model.cfg.projector.target_scale
        )


def make_step(model: M2UGen, forward: Any, targets: TargetProvider, settings: TrainSettings,
              device: torch.device):
    """batch (data.collate) -> LossOutput, with media features batched per modality.

    `forward` is the model as prepared by accelerate (the DDP wrapper when distributed), so the
    loss call goes through it and gradients are synchronised.
    """

    def step(batch: dict[str, Any]) -> LossOutput:
        media = {}
        for modality, group in batch["media"].items():
            rows = group["index"].tolist()
            if not rows:
                continue
            items = group["data"]
            if modality == "audio" and settings.audio_crop < 1.0:
                items = [random_time_crop(x, settings.audio_crop) for x in items]
            media[modality] = (rows, model.encoder(modality).collate(items))
        music_rows = batch["music_mask"].nonzero().flatten()
        music_targets = aud = None
        if music_rows.numel():
            captions = [batch["music_captions"][i] for i in music_rows.tolist()]
            music_targets = targets(captions).to(device)
            aud = batch["aud_positions"][music_rows]
        return forward(
            batch["input_ids"], batch["labels"], media=media,
            music_rows=music_rows if music_rows.numel() else None,
            aud_positions=aud, music_targets=music_targets,
            ce_weight=settings.ce_weight, mse_weight=settings.mse_weight,
        )

    return step
