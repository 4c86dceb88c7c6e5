"""Optional kNN retrieval of feature prototypes (faiss), mixed into a bridge's pooled feature.

docs/MODEL.md section 3: the L2-normalised feature q is mixed with the
softmax(t * similarity)-weighted mean of its top-k prototypes p_1..p_k from an index:

    w = softmax(t * <q, p_i>),   r = normalise(sum_i w_i p_i),   out = normalise((1 - a) q + a r)

with k = cache_size, t = cache_t, a = cache_weight. The index is an exact inner-product index over
L2-normalised vectors (inner product = cosine similarity). Off by default (`KnnConfig.enabled`).

faiss only chooses the neighbours; the similarities are recomputed in torch from the retrieved
prototypes, so gradients still reach q (and the bridge below it) during training.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from llama.config import KnnConfig
from util.atomic import atomic_path

log = logging.getLogger(__name__)


class KnnIndexError(ValueError):
    """An index file that is not a usable faiss index (a missing file is FileNotFoundError)."""


def _as_matrix(vectors: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().float().cpu().numpy()
    a = np.asarray(vectors)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"expected a non-empty (N, D) matrix of vectors, got shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError("vectors contain NaN or infinite values")
    return a


class KnnIndex:
    """An exact inner-product faiss index over unit vectors, plus a torch copy for mixing."""

    def __init__(self, index: faiss.Index) -> None:
        if index.ntotal == 0:
            raise ValueError("the kNN index holds no vectors")
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("the kNN index must use the inner-product metric")
        self.index = index
        self._vectors = torch.from_numpy(index.reconstruct_n(0, index.ntotal))

    @classmethod
    def build(cls, vectors: np.ndarray | torch.Tensor) -> "KnnIndex":
        """Index of the given (N, D) prototype vectors, L2-normalised first."""
        a = _as_matrix(vectors)
        norms = np.linalg.norm(a, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError("cannot index a zero vector (no direction to normalise)")
        index = faiss.IndexFlatIP(a.shape[1])
        index.add(a / norms)
        return cls(index)

    @property
    def dim(self) -> int:
        return self.index.d

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def save(self, path: str | os.PathLike) -> None:
        """Write with `faiss.write_index`, atomically (a crash leaves the old file intact)."""
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KnnIndex":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"kNN index {str(p)!r} does not exist")
        try:
            index = faiss.read_index(str(p))
        except RuntimeError as e:  # faiss reports unreadable files as RuntimeError
            raise KnnIndexError(f"kNN index {str(p)!r} is not a readable faiss index: {e}") from e
        return cls(index)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (similarities, ids) of unit-normalised queries, (B, k) each."""
        q = F.normalize(queries.detach().float(), dim=-1).cpu().numpy()
        sims, ids = self.index.search(np.ascontiguousarray(q), min(k, self.ntotal))
        return torch.from_numpy(sims), torch.from_numpy(ids)

    def mix(self, features: torch.Tensor, k: int = 10, t: float = 20.0,
            weight: float = 0.5) -> torch.Tensor:
        """(B, D) features -> (B, D) unit vectors mixed with their retrieved prototypes."""
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be (B, {self.dim}) for this index, got "
                             f"{tuple(features.shape)}")
        if k < 1:
            raise ValueError(f"cache_size must be >= 1, got {k}")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"cache_weight must be in [0, 1], got {weight}")
        q = F.normalize(features, dim=-1)
        _, ids = self.search(q, k)
        protos = self._vectors[ids].to(q.device, q.dtype)  # (B, k, D)
        sims = torch.einsum("bd,bkd->bk", q, protos)  # = faiss scores, but differentiable in q
        w = torch.softmax(t * sims.float(), dim=-1).to(q.dtype)
        retrieved = F.normalize(torch.einsum("bk,bkd->bd", w, protos), dim=-1)
        return F.normalize((1.0 - weight) * q + weight * retrieved, dim=-1)

    def mixer(self, cfg: KnnConfig) -> Callable[[torch.Tensor], torch.Tensor]:
        """`mix` bound to a config's cache_size / cache_t / cache_weight (a bridge's `knn=`)."""
        return functools.partial(self.mix, k=cfg.cache_size, t=cfg.cache_t, weight=cfg.cache_weight)


def load_knn(cfg: KnnConfig) -> Optional[KnnIndex]:
    """The configured index, or None when kNN mixing is disabled (the default)."""
    if not cfg.enabled:
        return None
    if not cfg.index_path:
        raise ValueError("knn.enabled is set but knn.index_path is empty")
    return KnnIndex.load(cfg.index_path)


def knn_index_file(knn_dir: str | os.PathLike) -> Path:
    """The published layout keeps the index as `<knn_dir>/knn.index`; a file path is taken as is."""
    p = Path(knn_dir)
    return p / "knn.index" if p.is_dir() else p


def attach_knn(model: Any, knn_dir: str | os.PathLike) -> list[str]:
    """`--knn_dir`: mix every modality whose pooled feature width equals the index width with
    its retrieved prototypes (the published forward_audio/_image/_video did this with one shared
    index). Returns the modalities covered; an index matching no modality is an error."""
    path = knn_index_file(knn_dir)
    index = KnnIndex.load(path)
    cfg = dataclasses.replace(model.cfg.knn, enabled=True, index_path=str(path))
    mixer = index.mixer(cfg)
    widths = {"audio": model.cfg.mert.hidden_size, "image": model.cfg.vit.hidden_size,
              "video": model.cfg.vivit.hidden_size}
    covered = [m for m, w in widths.items() if w == index.dim]
    if not covered:
        raise KnnIndexError(f"{path}: the index holds {index.dim}-wide vectors; no encoder "
                            f"feature has that width ({widths})")
    for modality in covered:
        if modality == "audio":
            model._knn = mixer  # M2UGen.bridge hands it to the music bridge
        else:  # the token bridges take `knn=` too; bind it (their weights are untouched)
            bridge = model.bridges[modality]
            bridge.forward = functools.partial(type(bridge).forward, bridge, knn=mixer)
    model.cfg.knn = cfg
    log.info("%s: kNN retrieval enabled for %s", path, ", ".join(covered))
    return covered
