"""The epoch loop (engine_train.Trainer): non-finite stop, exact resume, skipped steps."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from engine_train import NonFiniteLoss, Trainer, TrainHooks
from llama import checkpoint as ckpt
from llama.config import TrainSettings


@dataclass
class Out:
    loss: torch.Tensor
    ce: torch.Tensor
    mse: torch.Tensor


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 1)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def _trainer(tmp_path: Path, model: Toy, nan_at: int | None = None,
             stop_after_steps: int | None = None, **kw) -> Trainer:
    data = [(torch.randn(4, generator=torch.Generator().manual_seed(i)), float(i % 3))
            for i in range(24)]
    calls = {"n": 0}

    def step(batch, weights):
        calls["n"] += 1
        x = torch.stack([b[0] for b in batch])
        y = torch.tensor([b[1] for b in batch])
        loss = weights[0] * ((model.lin(model.frozen(x)).squeeze(-1) - y) ** 2).mean()
        if nan_at is not None and calls["n"] >= nan_at:
            loss = loss * float("nan")
        return Out(loss, loss.detach(), torch.zeros(()))

    kw.setdefault("log_every", 1)
    settings = TrainSettings(epochs=3, batch_size=4, lr=0.05, min_lr=0.0, warmup_epochs=0.5,
                             seed=7, **kw)
    return Trainer(model=model, dataset=data, collate=lambda b: b, step_fn=step,
                   settings=settings, output_dir=tmp_path, checkpoint_config=lambda: {"toy": 1},
                   tuned_names=["lin.weight", "lin.bias"], accelerator=Accelerator(cpu=True),
                   hooks=TrainHooks(stop_after_steps=stop_after_steps))


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    model = Toy()
    trainer = _trainer(tmp_path, model, nan_at=5, save_every=2)
    with pytest.raises(NonFiniteLoss, match="non-finite loss"):
        trainer.train()
    saved = ckpt.read_config(tmp_path / "checkpoint")
    assert saved["step"] == 4 and not saved["complete"]
    assert torch.isfinite(ckpt.read_weights(tmp_path / "checkpoint")["lin.weight"]).all()


def test_interrupted_run_resumes_to_identical_weights(tmp_path):
    full = Toy()
    _trainer(tmp_path / "full", full, accum_iter=2).train()

    first = Toy()
    _trainer(tmp_path / "cut", first, accum_iter=2, stop_after_steps=4).train()
    resumed = Toy()
    trainer = _trainer(tmp_path / "cut", resumed, accum_iter=2)
    trainer.resume(tmp_path / "cut" / "checkpoint")
    assert trainer.step == 4 and trainer.batch_in_epoch > 0  # really stopped mid-epoch
    trainer.train()
    for name in ("lin.weight", "lin.bias"):
        torch.testing.assert_close(dict(resumed.named_parameters())[name],
                                   dict(full.named_parameters())[name], rtol=0, atol=1e-7)
    assert ckpt.read_config(tmp_path / "cut" / "checkpoint")["complete"]


@pytest.mark.parametrize("precision", ["no", "fp16"])
def test_step_with_non_finite_gradients_is_skipped_and_counted(tmp_path, precision):
    model = Toy()
    trainer = _trainer(tmp_path, model, mixed_precision=precision, stop_after_steps=3)
    if trainer.precision.scaler is not None:
        # A scale the toy's fp16 gradients fit under, so only the poisoned step overflows.
        trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**6)
    calls = {"n": 0}

    def poison(grad):
        calls["n"] += 1
        return torch.full_like(grad, float("inf")) if calls["n"] == 2 else grad

    model.lin.weight.register_hook(poison)
    snapshots = []
    original = trainer._optimizer_step

    def spy(fractional_epoch):
        result = original(fractional_epoch)
        snapshots.append((result, model.lin.weight.detach().clone()))
        return result

    trainer._optimizer_step = spy
    trainer.train()
    (norm1, _, ok1), w1 = snapshots[0]
    (norm2, _, ok2), w2 = snapshots[1]
    (norm3, _, ok3), _ = snapshots[2]
    assert ok1 and not ok2 and ok3
    assert torch.equal(w1, w2)  # the poisoned step changed nothing
    assert math.isinf(norm2) and trainer.nonfinite_steps == 1
    assert ckpt.read_config(tmp_path / "checkpoint")["nonfinite_steps"] == 1


def test_fp16_grad_norm_is_unscaled(tmp_path):
    norms = {}
    for precision in ("no", "fp16"):
        model = Toy()
        trainer = _trainer(tmp_path / precision, model, mixed_precision=precision,
                           stop_after_steps=1)
        if trainer.precision.scaler is not None:
            trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**6)
        assert trainer.train()["grad_norm"] > 0
        norms[precision] = json.loads(
            (tmp_path / precision / "train_log.jsonl").read_text().splitlines()[0])["grad_norm"]
    # The loss is scaled by 64 before backward; the logged norm must not be.
    assert norms["fp16"] == pytest.approx(norms["no"], rel=1e-2)
