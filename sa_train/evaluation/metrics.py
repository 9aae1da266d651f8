"""The paper's distribution metrics, in float64 and checked against closed forms in the tests.

- Frechet distance (FD) between two Gaussians fitted to embedding frames:
  ``||mu1 - mu2||^2 + Tr S1 + Tr S2 - 2 Tr sqrt(S1 S2)``.
- KL divergence between class-probability vectors, with its direction in the name.
- CLAP score: mean cosine similarity of paired text and audio embeddings.
"""

from __future__ import annotations

import numpy as np

# Eigenvalues this far below zero (relative to the largest) are rounding, not a broken matrix.
_PSD_TOLERANCE = 1e-8


def gaussian_stats(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``embeddings: (n, dim)`` -> ``(mu: (dim,), sigma: (dim, dim))`` in float64.

    Every row is one sample (one frame of one file, as the paper counts them); the covariance
    is the unbiased one (``ddof=1``), as in the reference FD code.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (n, dim); got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"Gaussian statistics need at least 2 embedding frames; got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings hold NaN or Inf values")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _symmetric(matrix: np.ndarray, name: str, dim: int) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (dim, dim):
        raise ValueError(f"{name} must be ({dim}, {dim}) to match the mean; got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} holds NaN or Inf values")
    scale = max(float(np.abs(m).max()), 1e-300)
    if float(np.abs(m - m.T).max()) > 1e-6 * scale:
        raise ValueError(f"{name} is not symmetric; pass a covariance matrix")
    return (m + m.T) / 2


def _psd_sqrt_eigenvalues(matrix: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric PSD matrix with rounding negatives clipped to 0."""
    values, vectors = np.linalg.eigh(matrix)
    top = max(float(np.abs(values).max()), 1e-300)
    if values.min() < -_PSD_TOLERANCE * top:
        raise ValueError(f"{name} is not positive semi-definite (eigenvalue {values.min():.3g}); pass a covariance")
    # Like numpy's matrix_rank: eigenvalues under dim * eps * largest are rounding noise of a null
    # direction. Zero them, since their square roots (~1e-8 each) would add up to a visible bias.
    noise = matrix.shape[0] * np.finfo(np.float64).eps * top
    return np.where(values > noise, values, 0.0), vectors


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr sqrt(S1 S2)`` for symmetric PSD ``S1, S2``, always real.

    ``S1 S2`` is not symmetric, and a general matrix square root (scipy's sqrtm) of it can come
    back complex or NaN when the covariances are singular (fewer frames than dimensions). It
    has the same eigenvalues as the symmetric PSD ``sqrt(S1) S2 sqrt(S1)``, so the trace is the
    sum of the square roots of that matrix's (clipped) eigenvalues: no complex arithmetic at all.
    """
    values, vectors = _psd_sqrt_eigenvalues(sigma1, "sigma1")
    root1 = (vectors * np.sqrt(values)) @ vectors.T
    middle = root1 @ sigma2 @ root1
    middle = (middle + middle.T) / 2
    inner, _ = _psd_sqrt_eigenvalues(middle, "sqrt(sigma1) sigma2 sqrt(sigma1)")
    return float(np.sqrt(inner).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``mu: (dim,)``, ``sigma: (dim, dim)``; computed in float64 and valid for singular
    (rank-deficient) covariances. Raises ValueError for mismatched shapes, non-finite values or
    matrices that are not symmetric positive semi-definite.
    """
    m1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    m2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"means must be 1-D and of equal length; got shapes {m1.shape} and {m2.shape}")
    if not (np.all(np.isfinite(m1)) and np.all(np.isfinite(m2))):
        raise ValueError("means hold NaN or Inf values")
    dim = m1.shape[0]
    s1 = _symmetric(np.atleast_2d(sigma1), "sigma1", dim)
    s2 = _symmetric(np.atleast_2d(sigma2), "sigma2", dim)
    diff = m1 - m2
    distance = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    return max(distance, 0.0)  # equal statistics can round to a hair below 0


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    """``KL(p || q) = sum_c p_c log(p_c / q_c)`` in nats, per row.

    ``p, q: (classes,)`` or ``(n, classes)`` of non-negative weights; each row is normalised to
    sum 1. Returns ``(n,)`` (or a 0-d array for 1-D input). ``q`` is floored at ``eps`` so a class
    that ``q`` misses costs a large finite amount instead of infinity; ``0 log 0`` counts as 0.
    The evaluation calls it with ``p`` = reference and ``q`` = generated, i.e. KL(reference ||
    generated), and names the result ``kl_ref_gen_*``.
    """
    p64 = np.asarray(p, dtype=np.float64)
    q64 = np.asarray(q, dtype=np.float64)
    if p64.shape != q64.shape or p64.ndim not in (1, 2):
        raise ValueError(f"p and q must have the same (classes,) or (n, classes) shape; got {p64.shape} and {q64.shape}")
    for name, x in (("p", p64), ("q", q64)):
        if not np.all(np.isfinite(x)) or np.any(x < 0):
            raise ValueError(f"{name} must hold finite non-negative probabilities (softmax the logits first)")
        if np.any(x.sum(axis=-1) <= 0):
            raise ValueError(f"every row of {name} needs a positive sum")
    p64 = p64 / p64.sum(axis=-1, keepdims=True)
    q64 = np.maximum(q64 / q64.sum(axis=-1, keepdims=True), eps)
    terms = np.where(p64 > 0, p64 * (np.log(np.where(p64 > 0, p64, 1.0)) - np.log(q64)), 0.0)
    return terms.sum(axis=-1)


def cosine_similarities(text_emb: np.ndarray, audio_emb: np.ndarray) -> np.ndarray:
    """``text_emb, audio_emb: (n, dim)`` paired row by row -> ``(n,)`` cosine similarities."""
    t = np.asarray(text_emb, dtype=np.float64)
    a = np.asarray(audio_emb, dtype=np.float64)
    if t.ndim != 2 or t.shape != a.shape:
        raise ValueError(f"text and audio embeddings must be paired (n, dim) arrays; got {t.shape} and {a.shape}")
    norms = np.linalg.norm(t, axis=1) * np.linalg.norm(a, axis=1)
    if np.any(norms == 0):
        raise ValueError("an embedding is all zeros; its cosine similarity is undefined")
    return (t * a).sum(axis=1) / norms


def clap_score(text_emb: np.ndarray, audio_emb: np.ndarray) -> float:
    """Mean cosine similarity of paired ``(n, dim)`` text and audio embeddings (the CLAP score)."""
    return float(cosine_similarities(text_emb, audio_emb).mean())
