"""One training stage: the epoch loop, checkpoints, resume, logging.

Kept apart from `train_m2ugen.py` (argument parsing and assembly) so the loop reads top to bottom:
for each micro-batch -> features -> loss (autocast) -> backward (scaled, accumulated) -> unscale
-> clip -> step (skipped when gradients are non-finite) -> schedule -> log -> maybe checkpoint.
Every error surfaces (no catch-all around a step, unlike the published code) and a non-finite
loss stops the run with the last good checkpoint intact. The pieces it composes live in
`training/` (sampler, optimizer, precision, collectives, decoder targets, the loss step); its
settings are `llama.config.TrainSettings`.

Multi-process (DDP through accelerate) design, so that ranks can never wait for each other in
different places:
- every rank runs the same number of micro-steps (`training.sampler.EpochBatches`);
- the loss terms are weighted by each rank's share of the global batch's denominators (target
  tokens, music rows), so the DDP-averaged gradient equals the single-process gradient of the
  same global batch;
- decisions (non-finite loss, skipped step) are taken from all-reduced values, identical on all
  ranks; checkpoints are written by rank 0 between two barriers, with every rank's RNG state.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from tqdm import tqdm

from llama import checkpoint as ckpt
from llama.config import TrainSettings
from training.collectives import all_gather, all_sum
from training.optim import make_adamw
from training.precision import MixedPrecision
from training.sampler import EpochBatches, MicroBatch
from util.atomic import append_jsonl
from util.lr_sched import lr_at
from util.seed import rng_state, set_rng_state


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss; the run stops so the last good checkpoint survives."""


@dataclass(frozen=True)
class TrainHooks:
    """Switches for tests only (hidden CLI flags), kept out of the production settings."""

    stop_after_steps: Optional[int] = None  # simulate a kill after N optimizer steps
    sample_log: Optional[str] = None  # each rank appends the items it trained on to this prefix


def _rows(batch: Any) -> int:
    """Samples in a collated batch (0 when every item was skipped as unreadable)."""
    if isinstance(batch, dict) and "input_ids" in batch:
        return int(batch["input_ids"].shape[0])
    return len(batch)


class Trainer:
    """Runs one stage on a prepared model and dataset.

    `step_fn(batch, weights) -> LossOutput`: `weights[k]` multiplies loss term k (this rank's
    share of the global batch; 0 for a filler). `count_fn(batch) -> [denominator of term k]`
    (e.g. target tokens, music rows); by default one term counted in samples.
    """

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        dataset: Sequence[Any],
        collate: Callable[[list[Any]], Any],
        step_fn: Callable[[Any, Sequence[float]], Any],
        settings: TrainSettings,
        output_dir: Path,
        checkpoint_config: Callable[[], dict[str, Any]],
        tuned_names: list[str],
        accelerator: Any,
        on_epoch_end: Optional[Callable[[int], None]] = None,
        count_fn: Optional[Callable[[Any], Sequence[float]]] = None,
        last_epoch_completes: bool = True,
        hooks: Optional[TrainHooks] = None,
    ) -> None:
        self.model, self.dataset, self.collate, self.step_fn = model, dataset, collate, step_fn
        self.s, self.out, self.acc = settings, Path(output_dir), accelerator
        self.checkpoint_config, self.tuned_names = checkpoint_config, tuned_names
        self.on_epoch_end, self.count_fn = on_epoch_end, count_fn
        self.hooks = hooks or TrainHooks()
        # False when a later phase (the projector refit) must run before the stage is complete
        self.last_epoch_completes = last_epoch_completes
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.sampler = EpochBatches(len(dataset), settings.batch_size, settings.seed,
                                    self.rank, self.world)
        self.optimizer = make_adamw(model, settings.lr, settings.weight_decay,
                                    settings.bridge_lr_scale)
        self.precision = MixedPrecision(settings.mixed_precision, accelerator.device)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.epoch, self.batch_in_epoch, self.step, self.nonfinite_steps = 0, 0, 0, 0
        self.writer = None
        if accelerator.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"))

    # -- persistence ---------------------------------------------------------------------------

    def state(self, rngs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.precision.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "nonfinite_steps": self.nonfinite_steps,
            "world_size": self.world,
            "rng_per_rank": rngs,
        }

    def save(self, complete: bool = False) -> None:
        """Every rank calls this at the same step; rank 0 writes once all ranks got there, and no
        rank goes on before the folder is complete."""
        self.acc.wait_for_everyone()
        rngs = all_gather(rng_state(), self.world)
        if self.acc.is_main_process:
            model = self.acc.unwrap_model(self.model)
            weights = ckpt.tuned_state_dict(model, self.tuned_names)
            config = self.checkpoint_config()
            config.update(epoch=self.epoch, batch_in_epoch=self.batch_in_epoch, step=self.step,
                          complete=complete, world_size=self.world,
                          nonfinite_steps=self.nonfinite_steps)
            ckpt.write_checkpoint(self.out / "checkpoint", weights=weights, config=config,
                                  training_state=self.state(rngs))
        self.acc.wait_for_everyone()

    def resume(self, folder: Path) -> None:
        """Restore weights, optimizer, scaler, counters and this rank's RNG streams."""
        weights = ckpt.read_weights(folder)
        ckpt.load_tuned_weights(self.acc.unwrap_model(self.model), weights, source=str(folder))
        state = ckpt.read_training_state(folder)
        if state is None:
            raise ckpt.CheckpointError(f"{folder}: no training state to resume from")
        rngs = state.get("rng_per_rank") or [state["rng"]]
        if len(rngs) != self.world:
            raise ckpt.CheckpointError(
                f"{folder}: written by {len(rngs)} process(es), resumed with {self.world}; the "
                f"position in the epoch and the random streams are per process: resume with "
                f"{len(rngs)}"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.precision.load_state_dict(state.get("scaler") or {})
        self.epoch, self.batch_in_epoch, self.step = (
            int(state["epoch"]), int(state["batch_in_epoch"]), int(state["step"]),
        )
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))
        set_rng_state(rngs[self.rank])

    # -- one micro-step ------------------------------------------------------------------------

    def _set_lr(self, fractional_epoch: float) -> float:
        lr = lr_at(fractional_epoch, lr=self.s.lr, min_lr=self.s.min_lr,
                   warmup_epochs=self.s.warmup_epochs, epochs=self.s.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def _describe(self, idx: list[int]) -> list[Any]:
        describe = getattr(self.dataset, "describe", None)
        return [describe(j) if describe else j for j in idx]

    def _micro_batches(self, epoch: int) -> Iterator[tuple[int, MicroBatch]]:
        for i, mb in enumerate(self.sampler.batches(epoch)):
            if epoch == self.epoch and i < self.batch_in_epoch:
                continue  # already consumed before the interruption
            yield i, mb

    def _load(self, mb: MicroBatch, epoch: int) -> tuple[Any, bool]:
        """The collated micro-batch; if every item was skipped as unreadable, a weight-0 filler
        (the rank must still run forward/backward so the gradient all-reduce matches)."""
        batch = self.collate([self.dataset[j] for j in mb.indices])
        if _rows(batch) > 0:
            return batch, mb.real
        for j in self.sampler.order(epoch):
            batch = self.collate([self.dataset[j]])
            if _rows(batch) > 0:
                return batch, False
        raise RuntimeError("every training sample was skipped as unreadable")

    def _weights(self, batch: Any, real: bool) -> list[float]:
        counts = [float(c) for c in (self.count_fn(batch) if self.count_fn else [_rows(batch)])]
        if not real:
            counts = [0.0] * len(counts)
        totals = all_sum(counts, self.acc.device, self.world)
        return [self.world * c / t if t > 0 else 0.0 for c, t in zip(counts, totals)]

    def _forward_backward(
        self, mb: MicroBatch, epoch: int, i: int, sync: bool
    ) -> tuple[Any, float]:
        """Loss and gradients of one micro-batch; returns (output, loss of the global batch)."""
        batch, real = self._load(mb, epoch)
        self._log_samples(epoch, i, mb, real)
        weights = self._weights(batch, real)
        context = contextlib.nullcontext() if sync else self.acc.no_sync(self.model)
        with context:
            with self.precision.autocast():
                out = self.step_fn(batch, weights)
            loss = out.loss.detach().float()
            finite = bool(torch.isfinite(loss))
            bad, total = all_sum([0.0 if finite else 1.0, float(loss) if finite else 0.0],
                                 self.acc.device, self.world)
            if bad:
                where = (f"{out.loss.item()} (items {self._describe(mb.indices)})" if not finite
                         else "on another process")
                raise NonFiniteLoss(
                    f"non-finite loss {where} at epoch {epoch}, batch {i}; "
                    f"the last good checkpoint is in {self.out / 'checkpoint'}"
                )
            self.precision.backward(out.loss / self.s.accum_iter)
        return out, total / self.world

    def _optimizer_step(self, fractional_epoch: float) -> tuple[float, float, bool]:
        """Unscale, clip, step unless gradients are non-finite; (true grad norm, lr, applied)."""
        self.precision.unscale_(self.optimizer)
        max_norm = self.s.clip_grad if self.s.clip_grad > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, max_norm))
        lr = self._set_lr(fractional_epoch)
        applied = self.precision.step(self.optimizer, math.isfinite(grad_norm))
        self.optimizer.zero_grad(set_to_none=True)
        if not applied:
            self.nonfinite_steps += 1
        return grad_norm, lr, applied

    def _log_samples(self, epoch: int, i: int, mb: MicroBatch, real: bool) -> None:
        if self.hooks.sample_log:
            append_jsonl(f"{self.hooks.sample_log}.rank{self.rank}.jsonl",
                         {"rank": self.rank, "epoch": epoch, "batch": i, "items": mb.indices,
                          "real": real})

    def _log(self, metrics: dict[str, float]) -> None:
        if self.writer is None or self.step % self.s.log_every:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f"train/{k}", v, self.step)
        append_jsonl(self.out / "train_log.jsonl", {"step": self.step, **metrics})

    # -- the loop ------------------------------------------------------------------------------

    @property
    def epochs_done(self) -> bool:
        return self.epoch >= self.s.epochs

    def train(self) -> dict[str, float]:
        """Train to the end (or to `stop_after_steps`); returns the last logged metrics."""
        s = self.s
        n_batches = len(self.sampler)
        metrics: dict[str, float] = {}
        while self.epoch < s.epochs:
            epoch = self.epoch
            bar = tqdm(total=n_batches, initial=self.batch_in_epoch, desc=f"epoch {epoch}",
                       disable=not self.acc.is_local_main_process, dynamic_ncols=True, leave=False)
            sums = {"loss": 0.0, "ce": 0.0, "mse": 0.0, "n": 0}
            t0, seen = time.perf_counter(), 0
            for i, mb in self._micro_batches(epoch):
                # Accumulation boundaries are per epoch: a resumed run syncs where the original did.
                sync = (i + 1) % s.accum_iter == 0 or i + 1 == n_batches
                out, loss = self._forward_backward(mb, epoch, i, sync)
                self.batch_in_epoch = i + 1
                seen += len(mb.indices) if mb.real else 0
                for key, value in (("loss", loss), ("ce", out.ce), ("mse", out.mse), ("n", 1)):
                    sums[key] += float(value)
                bar.update(1)
                if not sync:
                    continue
                grad_norm, lr, _ = self._optimizer_step(epoch + (i + 1) / n_batches)
                self.step += 1
                metrics = {
                    "loss": loss, "ce": float(out.ce), "mse": float(out.mse), "lr": lr,
                    "grad_norm": grad_norm, "nonfinite_steps": float(self.nonfinite_steps),
                    "samples_per_s": seen * self.world / max(time.perf_counter() - t0, 1e-9),
                }
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
                self._log(metrics)
                if s.save_every and self.step % s.save_every == 0:
                    self.save()
                stop = self.hooks.stop_after_steps
                if stop is not None and self.step >= stop:
                    bar.close()
                    self.save()
                    return metrics
            bar.close()
            self._end_epoch(epoch, sums)
        if self.writer is not None:
            self.writer.close()
        return metrics

    def _end_epoch(self, epoch: int, sums: dict[str, float]) -> None:
        n = max(sums["n"], 1)
        if self.acc.is_main_process:
            print(f"epoch {epoch}: loss {sums['loss']/n:.4f} ce {sums['ce']/n:.4f} "
                  f"mse {sums['mse']/n:.4f} (ce/mse: process 0); "
                  f"{self.nonfinite_steps} step(s) skipped for non-finite gradients", flush=True)
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch)
        self.epoch, self.batch_in_epoch = epoch + 1, 0
        self.save(complete=self.last_epoch_completes and self.epoch >= self.s.epochs)
