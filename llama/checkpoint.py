"""Checkpoints holding only what training changed, written so the last good state survives a crash.

A checkpoint is a folder:

    config.json            the M2UGenConfig, the stage, progress counters
    model.safetensors      the tuned parameters only (LoRA, biases, norms, gates, prefix, new-token
                           rows, bridges, projector): megabytes, not the 23-31 GB the published code
                           wrote with the whole frozen model inside
    training_state.pt      optimizer, scheduler, RNG and sampler position (tensors, lists and
                           numbers only: it loads with `weights_only=True`)

The folder is built under a temporary name and swapped in with renames (`util.atomic.atomic_dir`),
so at every instant the previous or the new checkpoint is complete on disk, even after two crashes
in a row during the swap; readers go through `resolve_checkpoint`, which finds that copy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from safetensors.torch import load_file, save_file

from util.atomic import atomic_dir, complete_or_old, old_copy

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete or does not fit the model."""


def tuned_state_dict(model: torch.nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """The named parameters as contiguous CPU tensors (safetensors wants no shared storage)."""
    params = dict(model.named_parameters())
    return {n: params[n].detach().to("cpu").contiguous().clone() for n in names}


def is_complete(folder: Path) -> bool:
    """A checkpoint folder is usable when its config and weights are both present."""
    return (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def write_checkpoint(
    folder: str | os.PathLike,
    *,
    weights: dict[str, torch.Tensor],
    config: dict[str, Any],
    training_state: Optional[dict[str, Any]] = None,
) -> Path:
    """Write a complete checkpoint folder atomically (built aside, then swapped in by
    `util.atomic.atomic_dir`, which keeps the last complete copy until the new one is in place)."""
    folder = Path(folder)
    with atomic_dir(folder, is_complete) as tmp:
        save_file(weights, str(tmp / WEIGHTS_FILE))
        if training_state is not None:
            torch.save(training_state, tmp / STATE_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def resolve_checkpoint(folder: str | os.PathLike) -> Path:
    """The complete checkpoint at `folder` (or in its `checkpoint/` subfolder, the layout of a
    training stage's output), or its `.old` twin if a crash hit the swap."""
    folder = Path(folder)
    inner = folder / "checkpoint"
    if inner.exists() or old_copy(inner).exists():
        folder = inner
    found = complete_or_old(folder, is_complete)
    if found is None:
        raise CheckpointError(
            f"{folder}: not a checkpoint folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    return found


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    path = resolve_checkpoint(folder) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: invalid JSON ({err})") from None


def read_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    return load_file(str(resolve_checkpoint(folder) / WEIGHTS_FILE))


def read_training_state(folder: str | os.PathLike) -> Optional[dict[str, Any]]:
    path = resolve_checkpoint(folder) / STATE_FILE
    if not path.is_file():
        return None
    return torch.load(path, weights_only=True, map_location="cpu")


def load_tuned_weights(
    model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Copy tuned weights into `model`, refusing unknown names and shape mismatches."""
    params = dict(model.named_parameters())
    unknown = sorted(set(weights) - set(params))
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} unknown parameter(s), e.g. {unknown[:3]}")
    for name, value in weights.items():
        if params[name].shape != value.shape:
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(value.shape)}, "
                f"model expects {tuple(params[name].shape)}"
            )
        with torch.no_grad():
            params[name].copy_(value.to(params[name].dtype))
