"""Reading a release file without trusting it, and without a second copy of its tensors.

A release is a pickled dict {model, optimizer, epoch, scaler, args}. It is read with
`torch.load(weights_only=True)` and a one-class allow-list (`argparse.Namespace`, the pickled
flags): a pickle naming any other global is refused before anything is built or run. The file is
memory-mapped, so tensors are paged in only when used and no second full copy is held. Keys come
back in their canonical names (`keymap.LEGACY` applied).
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from llama.checkpoint import CheckpointError
from llama.release.keymap import FILE_ENTRIES, canonical_key

log = logging.getLogger(__name__)

ALLOWED_GLOBALS = (argparse.Namespace,)


class ReleaseFileError(CheckpointError):
    """A release file cannot be read or does not fit a known layout (the message names the file
    and the key); the CLIs report it as one line and exit status 2."""


def read_release(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict with canonical keys, the run's args as a dict).

    Raises ReleaseFileError for a missing/truncated file, a pickle that names any global outside
    the allow-list (nothing is executed), or a dict without a `model` state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ReleaseFileError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise ReleaseFileError(
            f"{path}: not a torch zip checkpoint (truncated, or saved with the legacy format)")
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            blob = torch.load(path, weights_only=True, mmap=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        text = str(err).strip()
        first = next((ln.strip() for ln in text.splitlines() if "global" in ln.lower()),
                     text.splitlines()[0] if text else "")
        raise ReleaseFileError(
            f"{path}: refused: the pickle refers to a global outside the allow-list "
            f"(argparse.Namespace): {first}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise ReleaseFileError(f"{path}: unreadable (truncated?): "
                               f"{str(err).strip().splitlines()[0]}") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), Mapping):
        keys = sorted(blob)[:5] if isinstance(blob, dict) else type(blob).__name__
        raise ReleaseFileError(f"{path}: expected a dict with a 'model' state dict, got {keys}")
    state: dict[str, torch.Tensor] = {}
    for key, value in blob["model"].items():
        if not isinstance(value, torch.Tensor):
            raise ReleaseFileError(f"{path}: model[{key!r}] is not a tensor")
        state[canonical_key(key)] = value
    other = sorted(set(blob) - set(FILE_ENTRIES) - {"model"})
    if other:
        log.info("%s: entries not read: %s (not in keymap.FILE_ENTRIES)", path, other)
    args = blob.get("args")
    return state, (vars(args) if isinstance(args, argparse.Namespace) else {})
