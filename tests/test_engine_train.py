"""The epoch loop: shuffling, decay groups, non-finite stop, exact resume."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from engine_train import EpochBatches, NonFiniteLoss, Trainer, TrainSettings, param_groups
from llama import checkpoint as ckpt


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


def _trainer(tmp_path: Path, model: Toy, nan_at: int | None = None, **kw) -> Trainer:
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
                   tuned_names=["lin.weight", "lin.bias"], accelerator=Accelerator(cpu=True))


def test_shuffle_is_seeded_and_differs_per_epoch():
    s = EpochBatches(10, 3, seed=1)
    assert s.batches(0) == EpochBatches(10, 3, seed=1).batches(0)
    assert s.batches(0) != s.batches(1)
    assert sorted(i for b in s.batches(2) for i in b.indices) == list(range(10))


@pytest.mark.parametrize("n,batch,world",
                         [(10, 3, 2), (11, 2, 2), (11, 4, 2), (7, 1, 3), (5, 4, 4)])
def test_ranks_get_equal_step_counts_and_every_sample_once(n, batch, world):
    ranks = [EpochBatches(n, batch, seed=1, rank=r, world=world) for r in range(world)]
    per_rank = [s.batches(3) for s in ranks]
    # Same number of micro-steps everywhere (a rank with an extra one would wait forever).
    assert {len(b) for b in per_rank} == {len(ranks[0])}
    real = [i for b in per_rank for mb in b if mb.real for i in mb.indices]
    assert sorted(real) == list(range(n))  # every sample exactly once
    # Step k of all ranks together is global batch k of a single process with batch x world.
    single = EpochBatches(n, batch * world, seed=1).batches(3)
    for k, mb in enumerate(single):
        together = [i for b in per_rank for i in b[k].indices if b[k].real]
        assert sorted(together) == sorted(mb.indices)
    fillers = [mb for b in per_rank for mb in b if not mb.real]
    assert all(len(mb.indices) == 1 for mb in fillers)


def test_no_weight_decay_on_biases_and_vectors():
    groups = param_groups(Toy(), 0.05)
    decay = [g for g in groups if g["weight_decay"] > 0]
    assert [p.shape for g in decay for p in g["params"]] == [torch.Size([1, 4])]
    assert sum(len(g["params"]) for g in groups if g["weight_decay"] == 0) == 1


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
