"""Recall against exact on a row sample, for a benchmark (issue 19's target): every pair
of a random ``size``-row sample at or above the threshold, found by brute force (the sample's
unit rows, all of its pairs, float32 dot products), against the pairs a report found among
those rows. Not the engine's own ``recall_estimate`` (a stratified 500-row sample checked
against all rows): this counts the pairs whose both rows are in the sample.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits


def sample_rows(matrix, size: int, *, seed: int = 0, block: int = 65_536) -> tuple:
    """``(rows, unit vectors)`` of a sorted random sample of ``size`` rows of ``matrix``
    (an ``h5py.Dataset``, read block by block)."""
    n = matrix.shape[0]
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
    parts = []
    for start in range(0, n, block):
        take = rows[(rows >= start) & (rows < start + block)]
        if len(take):
            parts.append(np.asarray(matrix[start : start + block])[take - start])
    X = np.concatenate(parts).astype(np.float32)
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return rows, X


def exact_pairs(X: np.ndarray, threshold: float, *, block: int = 2048) -> np.ndarray:
    """Keys ``i * len(X) + j`` (``i < j``, sample positions) of every pair at or above
    ``threshold``, sorted."""
    m = len(X)
    keys = []
    for a in range(0, m, block):
        sims = X[a : a + block] @ X[a:].T
        r, c = np.nonzero(sims >= threshold)
        i, j = r + a, c + a
        keys.append(i[i < j] * m + j[i < j])
    return np.sort(np.concatenate(keys)) if keys else np.empty(0, dtype=np.int64)


def sample_recall(
    matrix,
    a: np.ndarray,
    b: np.ndarray,
    threshold: float,
    *,
    size: int,
    seed: int = 0,
    threads: int = 2,
) -> dict:
    """Exact pairs among a ``size``-row sample of ``matrix``, and the share of them among
    the found pairs ``(a, b)`` (input rows)."""
    rows, X = sample_rows(matrix, size, seed=seed)
    with threadpool_limits(threads):
        truth = exact_pairs(X, threshold)
    m = len(rows)
    ia, ib = np.searchsorted(rows, a), np.searchsorted(rows, b)
    ia, ib = np.minimum(ia, m - 1), np.minimum(ib, m - 1)
    both = (rows[ia] == a) & (rows[ib] == b)
    lo, hi = np.minimum(ia[both], ib[both]), np.maximum(ia[both], ib[both])
    found = np.isin(truth, lo * m + hi)
    recall = float(found.mean()) if len(truth) else 1.0
    return {
        "sample_rows": m,
        "exact_pairs": len(truth),
        "found": int(found.sum()),
        "recall": round(recall, 5),
    }
