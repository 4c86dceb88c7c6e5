"""The two collectives the loop needs; no-ops in one process.

Decisions (non-finite loss, skipped step) are taken from all-reduced values, identical on all
ranks, so every rank takes the same branch.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.distributed as dist


def all_sum(values: Sequence[float], device: torch.device, world: int) -> list[float]:
    """Element-wise sum over ranks (float64, so token counts and losses add exactly enough)."""
    if world == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather(obj: Any, world: int) -> list[Any]:
    """Every rank's `obj`, in rank order."""
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out
