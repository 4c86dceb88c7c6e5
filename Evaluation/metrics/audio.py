"""Audio metrics for the music-generation tables: pure functions on arrays (no model, no I/O).

- FAD: Frechet distance between Gaussians fitted to two sets of embeddings (any embedding model).
- KL: KL(target || generated) of classifier class distributions, the published way
  (torch `kl_div((p_gen + 1e-6).log(), p_target)` summed over classes, averaged over pairs).
- CLAP score: mean cosine of paired audio and text embeddings (the published script used
  `dim=0` and `=` instead of `+=`; this is the intended per-pair cosine, averaged).
- Relevance rank: per item, systems ranked by cross-modal similarity (1 = most similar);
  reported as the mean reciprocal rank per system (the intended ImageBind "IM_RANK").
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.stats import rankdata

KL_EPS = 1e-6


def gaussian_stats(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, rows = samples) covariance of an (n, d) embedding set."""
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise ValueError(f"embeddings must be (n >= 2, d), got shape {emb.shape}")
    if not np.isfinite(emb).all():
        raise ValueError("embeddings contain NaN or inf")
    return emb.mean(axis=0), np.cov(emb, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)) (Dowson & Landau)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shape mismatch: {mu1.shape}/{mu2.shape}, {sigma1.shape}/{sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: regularise both covariances
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)  # tiny imaginary parts are numerical noise of sqrtm
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean),
                     0.0))


def fad(reference: np.ndarray, generated: np.ndarray) -> float:
    """Frechet Audio Distance between two (n, d) embedding sets (each frame/window one row)."""
    return frechet_distance(*gaussian_stats(reference), *gaussian_stats(generated))


def kl_target_generated(target_probs: np.ndarray, generated_probs: np.ndarray,
                        eps: float = KL_EPS) -> float:
    """Mean over pairs of sum_c t_c (log t_c - log(g_c + eps)); terms with t_c = 0 count 0."""
    t = np.asarray(target_probs, dtype=np.float64)
    g = np.asarray(generated_probs, dtype=np.float64)
    if t.shape != g.shape or t.ndim != 2:
        raise ValueError(f"need two (pairs, classes) arrays of one shape, got {t.shape}, {g.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(t > 0, t * (np.log(np.where(t > 0, t, 1.0)) - np.log(g + eps)), 0.0)
    return float(terms.sum(axis=1).mean())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (classifier logits -> class distribution)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def cosine_rows(a: np.ndarray, b: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Cosine similarity of paired rows of two (n, d) arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two (n, d) arrays of one shape, got {a.shape}, {b.shape}")
    na = np.maximum(np.linalg.norm(a, axis=1), eps)
    nb = np.maximum(np.linalg.norm(b, axis=1), eps)
    return (a * b).sum(axis=1) / (na * nb)


def clap_score(audio_emb: np.ndarray, text_emb: np.ndarray) -> float:
    """Mean cosine between each generated clip's audio embedding and its caption's embedding."""
    return float(cosine_rows(audio_emb, text_emb).mean())


def relevance_ranks(similarity: np.ndarray) -> np.ndarray:
    """(items, systems) similarities -> ranks (1 = most similar; ties share their mean rank)."""
    s = np.asarray(similarity, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"similarity must be (items, systems), got {s.shape}")
    return np.vstack([rankdata(-row, method="average") for row in s])


def mean_reciprocal_rank(similarity: np.ndarray) -> np.ndarray:
    """Per system, mean over items of 1 / rank (1.0 = always the most relevant system)."""
    return (1.0 / relevance_ranks(similarity)).mean(axis=0)


def fixed_chunks(wave: np.ndarray, sample_size: int = 2 ** 18, n_chunks: int = 10) -> np.ndarray:
    """fad-pytorch's framing as it really runs: the clip cut/zero-padded to `sample_size`
    samples, split into `n_chunks` consecutive chunks of int(0.1 * sample_size) samples
    (its `--hop_size 0.1` is a fraction of `sample_size`; its `max_hops <= 0` branch drops the
    11th, 4-sample chunk). At 16 kHz: 10 chunks of 1.638 s over the first 16.4 s."""
    w = np.zeros(sample_size, dtype=np.float32)
    x = np.asarray(wave, dtype=np.float32)[:sample_size]
    w[: len(x)] = x
    hop = int(0.1 * sample_size)
    return np.stack([w[i * hop:(i + 1) * hop] for i in range(n_chunks)])
