"""Per-iteration learning-rate schedule: linear warm-up, then half-cycle cosine to `min_lr`.

Matches the published recipe (lr 1e-4 -> 1e-6 after warm-up) but is evaluated per optimiser step
with fractional epochs, so the rate moves smoothly within an epoch.
"""

from __future__ import annotations

import math


def lr_at(epoch: float, *, lr: float, min_lr: float, warmup_epochs: float, epochs: float) -> float:
    """Learning rate at a (fractional) epoch."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    span = max(epochs - warmup_epochs, 1e-8)
    progress = min(max((epoch - warmup_epochs) / span, 0.0), 1.0)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
