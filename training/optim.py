"""The optimizer of every training phase: AdamW with decay on weight matrices only."""

from __future__ import annotations

from typing import Any

import torch


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


def make_adamw(model: torch.nn.Module, lr: float, weight_decay: float,
               bridge_lr_scale: float = 1.0) -> torch.optim.AdamW:
    """The optimizer of every training phase (stages and the projector refit): LLaMA's betas,
    the multi-tensor update (torch loops over tensors one by one on the CPU by default)."""
    return torch.optim.AdamW(param_groups(model, weight_decay, bridge_lr_scale), lr=lr,
                             betas=(0.9, 0.95), foreach=True)
