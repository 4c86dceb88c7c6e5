"""Mixed precision: autocast on the device type and, for fp16, a gradient scaler.

Ours, not accelerate's: accelerate neither autocasts nor scales fp16 on CPU, and patches `forward`
only through `prepare`. `torch.autocast` plus `torch.amp.GradScaler` (the class accelerate itself
uses on GPUs) make the path tested on CPU the path that runs on GPUs.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from llama.config import MIXED_PRECISIONS

# the dtype each `TrainSettings.mixed_precision` choice autocasts to (None: no autocast)
PRECISIONS = dict(zip(MIXED_PRECISIONS, (None, torch.bfloat16, torch.float16)))


class MixedPrecision:
    """Autocast on the device type; for fp16 a gradient scaler (unscale before clipping)."""

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {sorted(PRECISIONS)}, got {mode!r}")
        self.mode, self.device_type, self.dtype = mode, torch.device(device).type, PRECISIONS[mode]
        self.scaler = torch.amp.GradScaler(self.device_type) if mode == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, finite: bool) -> bool:
        """Apply the update unless gradients are non-finite; True when it was applied."""
        if self.scaler is not None:
            self.scaler.step(optimizer)  # skips by itself when unscale_ found inf/NaN
            self.scaler.update()  # lowers the scale after a skipped step
        elif finite:
            optimizer.step()
        return finite

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
