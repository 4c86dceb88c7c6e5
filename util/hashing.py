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


def stable_int(text: str, bits: int = 64) -> int:
    """A non-negative integer derived from `text` (e.g. a per-item seed)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[: bits // 8], "little")
