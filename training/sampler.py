"""Which samples each process trains on, epoch by epoch (seeded, resumable mid-epoch).

Every process runs the same number of micro-steps, so ranks can never wait for each other in
different places: the epoch's global order is cut into global batches of `batch_size x world`
samples, dealt round-robin to the ranks; the last, shorter global batch leaves some ranks fewer
(possibly zero) samples. A rank with zero runs one filler sample with loss weight 0 (it
contributes nothing), so every sample is used exactly once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class MicroBatch:
    """One rank's share of one global batch; `real=False` marks a weight-0 filler."""

    indices: list[int]
    real: bool = True


class EpochBatches:
    """Seeded per-epoch shuffling (different every epoch), dealt to ranks, resumable mid-epoch.

    The global order does not depend on the number of processes: global batch k holds
    order[k*B*W : (k+1)*B*W] and rank r takes its entries r, r+W, r+2W, ... Every rank gets
    ceil(n / (B*W)) micro-batches; where the last global batch has fewer than W samples, the
    ranks left without one get a filler (the global batch's first sample, weight 0).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if n == 0:
            raise ValueError("the training set is empty")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def global_batches(self, epoch: int) -> list[list[int]]:
        order, size = self.order(epoch), self.batch_size * self.world
        return [order[i : i + size] for i in range(0, self.n, size)]

    def batches(self, epoch: int) -> list[MicroBatch]:
        out = []
        for g in self.global_batches(epoch):
            mine = g[self.rank :: self.world]
            out.append(MicroBatch(mine) if mine else MicroBatch([g[0]], real=False))
        return out

    def __len__(self) -> int:
        return math.ceil(self.n / (self.batch_size * self.world))
