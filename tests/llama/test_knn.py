"""kNN prototype retrieval: build, save/load, the mixing formula, gradients, configuration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llama.config import KnnConfig
from llama.knn import KnnIndex, load_knn

D = 8


@pytest.fixture()
def protos() -> torch.Tensor:
    return torch.randn(20, D, generator=torch.Generator().manual_seed(0))


def test_build_normalises_and_searches_exactly(protos):
    idx = KnnIndex.build(protos)
    assert (idx.ntotal, idx.dim) == (20, D)
    sims, ids = idx.search(protos[:3] * 5.0, k=1)  # scale does not matter: cosine similarity
    assert ids[:, 0].tolist() == [0, 1, 2]
    assert torch.allclose(sims[:, 0], torch.ones(3), atol=1e-5)


def test_save_load_roundtrip(protos, tmp_path):
    idx = KnnIndex.build(protos)
    path = tmp_path / "sub" / "knn.index"
    idx.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["knn.index"]  # no temp file left
    again = KnnIndex.load(path)
    q = torch.randn(4, D)
    assert torch.equal(idx.search(q, 5)[1], again.search(q, 5)[1])
    assert torch.allclose(idx.mix(q), again.mix(q))


def test_mix_matches_formula(protos):
    idx = KnnIndex.build(protos)
    q = torch.randn(3, D, generator=torch.Generator().manual_seed(1))
    k, t, a = 4, 20.0, 0.5
    qn = F.normalize(q, dim=-1)
    pn = F.normalize(protos, dim=-1)
    sims = qn @ pn.T
    top = sims.topk(k, dim=-1)
    w = torch.softmax(t * top.values, dim=-1)
    r = F.normalize(torch.einsum("bk,bkd->bd", w, pn[top.indices]), dim=-1)
    want = F.normalize((1 - a) * qn + a * r, dim=-1)
    assert torch.allclose(idx.mix(q, k=k, t=t, weight=a), want, atol=1e-5)
    assert torch.allclose(idx.mix(q, k=k, t=t, weight=0.0), qn, atol=1e-6)
    full = idx.mix(q, k=k, t=t, weight=1.0)
    assert torch.allclose(full, r, atol=1e-5)


def test_k_larger_than_index_and_validation(protos):
    idx = KnnIndex.build(protos[:3])
    out = idx.mix(torch.randn(2, D), k=10)
    assert out.shape == (2, D) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        idx.mix(torch.randn(2, D + 1))
    with pytest.raises(ValueError, match="cache_weight"):
        idx.mix(torch.randn(2, D), weight=1.5)
    with pytest.raises(ValueError, match="zero vector"):
        KnnIndex.build(torch.zeros(2, D))


def test_gradient_flows_through_mix(protos):
    idx = KnnIndex.build(protos)
    q = torch.randn(2, D, requires_grad=True)
    idx.mix(q, k=3).sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_config_off_by_default_and_loading(protos, tmp_path):
    assert KnnConfig().enabled is False
    assert load_knn(KnnConfig()) is None
    with pytest.raises(ValueError, match="index_path"):
        load_knn(KnnConfig(enabled=True))
    path = tmp_path / "knn.index"
    KnnIndex.build(protos).save(path)
    cfg = KnnConfig(enabled=True, index_path=str(path), cache_size=2, cache_t=5.0, cache_weight=0.3)
    idx = load_knn(cfg)
    q = torch.randn(2, D)
    assert torch.allclose(idx.mixer(cfg)(q), idx.mix(q, k=2, t=5.0, weight=0.3))
    bad = tmp_path / "bad.index"
    bad.write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not a readable faiss index"):
        KnnIndex.load(bad)
    with pytest.raises(FileNotFoundError):
        KnnIndex.load(tmp_path / "missing.index")


def test_numpy_input(protos):
    idx = KnnIndex.build(protos.numpy().astype(np.float64))
    assert idx.ntotal == 20
