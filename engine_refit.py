"""Projector refit: the last phase of stage 3 fits the output projector to the final model's
[AUD] states.

Why: stage 2 aligns the projector on the hidden states the stage-2 model gives caption -> [AUD]
answers. Stage 3 then tunes LoRA on instructions with the projector frozen, so the states the
projector reads at inference (an instruction, the model's answer, then [AUD0..7]) are no longer
the ones it was fitted on. Measured on the tiny recipe (docs/SYNTHETIC.md): refitting it on the
stage-3 model's states of the training music requests lifts the held-out projector metric by
0.04-0.06. Only the projector changes, so text generation is untouched.

The phase runs the model once over the stage's own music samples (teacher-forced, whole clips,
eval mode) and caches what the projector reads, (n, 8, dim) float32, beside the decoder targets;
then it trains a fresh optimizer on the projector alone for a fixed number of steps (random
batches, cosine schedule). Every process computes the same fit from the same data; only process 0
writes the checkpoint, so no communication is needed.

Two options the tiny recipe uses (docs/SYNTHETIC.md, "The projector refit"):
- `start="fresh"`: the fit starts from a new initialisation (the projector's constructor, seeded)
  instead of the weights stages 2-3 left. The result is then a function of the final model's
  states alone: refitting a finished stage 3 again (docs/TRAINING.md) gives what a new run
  gives. On the tiny model, where the held-out requests' combinations never occur in training,
  plain MSE fits from different starting points and batch orders scored those unseen
  combinations very differently (one seed: margin over the shuffled baseline 0.030-0.051,
  retrieval 0.05-0.77).
- `mixup=alpha`: each batch row is replaced by a convex mix of itself and another row, inputs and
  targets alike, with weight ~ Beta(alpha, alpha). The targets are the decoder's conditioning of
  caption text, close to linear in the words, so mixing rows asks the projector to be smooth
  between the combinations it saw. On the seed above, fits from three seeds all reached margin
  0.048 and retrieval 0.769, which is what a projector that exactly follows the answer's words
  would reach in retrieval (margin 0.058).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from data.collate import Collator
from engine_train import NonFiniteLoss
from llama.config import REFIT_STARTS
from llama.m2ugen import M2UGen
from llama.projector import OutputProjector
from training.optim import make_adamw
from training.step import batch_media
from training.targets import TargetProvider
from util.lr_sched import lr_at


@dataclass(frozen=True)
class RefitSettings:
    steps: int
    lr: float = 1e-3
    min_lr: float = 3e-5
    batch_size: int = 16
    weight_decay: float = 0.05
    clip_grad: float = 1.0
    seed: int = 0
    mixup: float = 0.0  # Beta(mixup, mixup) row mixing; 0 = off
    start: str = "trained"  # or "fresh": a new seeded initialisation

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("projector refit: steps and batch_size must be >= 1")
        if self.mixup < 0:
            raise ValueError(f"projector refit: mixup must be >= 0, got {self.mixup}")
        if self.start not in REFIT_STARTS:
            raise ValueError(f"projector refit: start must be one of {REFIT_STARTS}, "
                             f"got {self.start!r}")


@torch.no_grad()
def collect_projector_data(
    model: M2UGen,
    dataset: Sequence[dict[str, Any]],
    targets: TargetProvider,
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (n, 8, dim), targets (n, N, D)) for every music sample of `dataset`, float32 on
    the CPU. Skipped (unreadable) items are left out; the dataset's report counts them."""
    collate = Collator(pad_id=model.tokenizer.pad_id)
    was_training = model.training
    model.eval()
    inputs, goals = [], []
    try:
        for start in range(0, len(dataset), batch_size):
            stop = min(start + batch_size, len(dataset))
            batch = collate([dataset[j] for j in range(start, stop)])
            rows = batch["music_mask"].nonzero().flatten()
            if not rows.numel():
                continue
            feats = model.modality_features(batch_media(model, batch),
                                            batch["input_ids"].shape[0])
            hidden = model.projector_hidden(batch["input_ids"], feats)
            inputs.append(model.projector_inputs(hidden[rows.to(hidden.device)],
                                                 batch["aud_positions"][rows]).float().cpu())
            captions = [batch["music_captions"][i] for i in rows.tolist()]
            goals.append(targets(captions).float().cpu())
    finally:
        model.train(was_training)
    if not inputs:
        raise ValueError("projector refit: the stage has no readable music samples")
    return torch.cat(inputs), torch.cat(goals)


def projector_mse(projector: torch.nn.Module, inputs: torch.Tensor, goals: torch.Tensor,
                  batch_size: int = 64) -> float:
    """Mean squared error of the projector (eval mode) over all rows."""
    was_training = projector.training
    projector.eval()
    device = next(projector.parameters()).device
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            x = inputs[start:start + batch_size].to(device)
            y = goals[start:start + batch_size].to(device)
            total += float(((projector(x).float() - y) ** 2).sum())
    projector.train(was_training)
    return total / goals.numel()


def fit_projector(
    projector: torch.nn.Module,
    inputs: torch.Tensor,
    goals: torch.Tensor,
    settings: RefitSettings,
    log: Optional[Callable[[int, float, float], None]] = None,
) -> dict[str, float]:
    """Train `projector` in place on (inputs, goals); returns the MSE before and after.

    All randomness (a fresh start, batches, mixing weights, dropout) comes from `settings.seed`
    and leaves the global generators as they were. A non-finite loss stops the fit
    (NonFiniteLoss) before the projector is stepped with it."""
    device = next(projector.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        if settings.start == "fresh":
            reinitialize(projector)
        return _fit(projector, inputs, goals, settings, log)


def reinitialize(projector: OutputProjector) -> None:
    """Overwrite `projector`'s weights with a new instance's (its constructor's initialisation,
    from the current generator), keeping its dtype and device."""
    fresh = type(projector)(projector.llm_dim, projector.cfg)
    projector.load_state_dict(fresh.state_dict())


def mix_rows(x: torch.Tensor, y: torch.Tensor, alpha: float,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup: row i becomes w_i * row i + (1 - w_i) * row p(i) (p a random permutation of the
    batch), w_i ~ Beta(alpha, alpha), the same w_i for input and target. The weights come from the
    global generator (`fit_projector` seeds it), the partners from `generator`."""
    n = x.shape[0]
    w = torch.distributions.Beta(float(alpha), float(alpha)).sample((n,))  # global generator
    partner = torch.randperm(n, generator=generator)
    wx = w.view(-1, *([1] * (x.dim() - 1))).to(x)
    wy = w.view(-1, *([1] * (y.dim() - 1))).to(y)
    return wx * x + (1 - wx) * x[partner], wy * y + (1 - wy) * y[partner]


def _fit(projector: torch.nn.Module, inputs: torch.Tensor, goals: torch.Tensor,
         settings: RefitSettings,
         log: Optional[Callable[[int, float, float], None]]) -> dict[str, float]:
    device = next(projector.parameters()).device
    params = list(projector.parameters())
    saved_flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    optimizer = make_adamw(projector, settings.lr, settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed)
    before = projector_mse(projector, inputs, goals)
    start = time.perf_counter()
    was_training = projector.training
    projector.train()
    try:
        for step in range(settings.steps):
            lr = lr_at(step, lr=settings.lr, min_lr=settings.min_lr, warmup_epochs=0.0,
                       epochs=settings.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            pick = torch.randint(0, len(inputs), (settings.batch_size,), generator=generator)
            x, y = inputs[pick], goals[pick]
            if settings.mixup > 0:
                x, y = mix_rows(x, y, settings.mixup, generator)
            loss = torch.nn.functional.mse_loss(projector(x.to(device)).float(), y.to(device))
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"projector refit: non-finite loss {loss.item()} at step "
                                    f"{step}; the checkpoint before the refit is kept")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.clip_grad)
            optimizer.step()
            if log is not None:
                log(step, float(loss.detach()), lr)
    finally:
        projector.train(was_training)
        for p, flag in zip(params, saved_flags):
            p.requires_grad_(flag)
    after = projector_mse(projector, inputs, goals)
    if not math.isfinite(after):
        raise NonFiniteLoss("projector refit: non-finite MSE after the fit")
    return {"rows": float(len(inputs)), "steps": float(settings.steps), "mse_before": before,
            "mse_after": after, "seconds": time.perf_counter() - start}
