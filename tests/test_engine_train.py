"""The epoch loop: shuffling, decay groups, non-finite stop, exact resume."""

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

    def step(batch):
        calls["n"] += 1
        x = torch.stack([b[0] for b in batch])
        y = torch.tensor([b[1] for b in batch])
        loss = ((model.lin(model.frozen(x)).squeeze(-1) - y) ** 2).mean()
        if nan_at is not None and calls["n"] >= nan_at:
            loss = loss * float("nan")
        return Out(loss, loss.detach(), torch.zeros(()))

    settings = TrainSettings(epochs=3, batch_size=4, lr=0.05, min_lr=0.0, warmup_epochs=0.5,
                             seed=7, **kw)
    return Trainer(model=model, dataset=data, collate=lambda b: b, step_fn=step,
                   settings=settings, output_dir=tmp_path, checkpoint_config=lambda: {"toy": 1},
                   tuned_names=["lin.weight", "lin.bias"], accelerator=Accelerator(cpu=True))


def test_shuffle_is_seeded_and_differs_per_epoch():
    s = EpochBatches(10, 3, seed=1)
    assert s.batches(0) == EpochBatches(10, 3, seed=1).batches(0)
    assert s.batches(0) != s.batches(1)
    assert sorted(i for b in s.batches(2) for i in b) == list(range(10))
    ranks = [EpochBatches(10, 3, seed=1, rank=r, world=2).batches(0) for r in range(2)]
    assert not set(i for b in ranks[0] for i in b) & set(i for b in ranks[1] for i in b)


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
