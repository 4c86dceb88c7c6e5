"""Stable hashing: the same content gives the same key in every process and on every machine
(Python's `hash` is salted per process, so it must never key anything persistent)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

CHUNK = 1 << 20


def stable_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): equal values give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_json(obj: Any) -> str:
    return sha256_text(stable_json(obj))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def module_fingerprint(module: Any) -> str:
    """Content fingerprint of a torch module's weights, independent of where they were loaded
    from: two copies of the same weights (a hub id and a local folder) agree, a fine-tuned copy
    does not. Per tensor: name, shape, dtype, the first elements' bytes and the float64 sum; one
    pass over the weights (about a second for a 330M-parameter model)."""
    import numpy as np  # imported here: the rest of util stays free of numeric libraries

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        flat = t.reshape(-1)
        h.update(flat[:1024].float().cpu().numpy().tobytes())
        h.update(np.float64(flat.double().sum().item()).tobytes())
    return h.hexdigest()[:16]


def stable_int(text: str, bits: int = 64) -> int:
    """A non-negative integer derived from `text` (e.g. a per-item seed)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[: bits // 8], "little")
