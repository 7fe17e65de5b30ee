"""The candidate floor: its default, and what happens when a search at it finds more pairs
than ``max_candidates``.

A floor the user did not give (:func:`default_floor`) never makes a call fail: when the
search overflows, :func:`search_fitting` estimates from an exact check of a sample of rows
the lowest floor whose pairs fit in half of ``max_candidates``, raises the floor to it (at
most to the threshold), logs a warning and searches again; ``report.floor`` says which
floor was used. A floor the user gave is kept, and the error names the floor that would fit.
The same loop runs every engine: exact and ann over their unit rows in memory, partitioned
over the input read block by block (:class:`ReadUnitRows`), its whole search run again.

>>> default_floor(0.5), default_floor(0.1)
(0.4, 0.05)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from embetter_core.errors import CandidateOverflowError

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Rows of the exact check that estimates how many pairs lie above each floor.
_ESTIMATE_ROWS = 1000


def default_floor(threshold: float) -> float:
    """The floor candidates are kept down to when none is given: ``max(threshold - 0.1,
    threshold / 2)``."""
    return max(threshold - 0.1, threshold / 2)


def fitting_floor(X: np.ndarray, floor: float, threshold: float, limit: int, seed: int) -> float:
    """The lowest floor in ``[floor, threshold]`` (on a 0.001 grid) at which the pairs of
    the unit rows ``X``, estimated from an exact check of a sample of rows, number at most
    ``limit / 2``; ``threshold`` when none does.

    >>> X = np.repeat(np.eye(4, dtype=np.float32), 50, axis=0)  # 4 groups of 50 equal rows
    >>> fitting_floor(X, 0.5, 0.9, limit=100_000, seed=0), fitting_floor(X, 0.5, 0.9, 10, 0)
    (0.5, 0.9)
    """
    n = len(X)
    rng = np.random.default_rng(seed + 2)
    rows = np.sort(rng.choice(n, size=min(n, _ESTIMATE_ROWS), replace=False))
    edges = np.arange(np.floor(floor * 1000), np.ceil(threshold * 1000) + 1) / 1000
    counts = np.zeros(len(edges), dtype=np.int64)  # sampled pairs scoring >= each edge
    sample = X[rows]
    step = 16_384
    for j0 in range(0, n, step):
        sims = sample @ X[j0 : j0 + step].T
        own = (rows >= j0) & (rows < j0 + step)
        sims[np.flatnonzero(own), rows[own] - j0] = -np.inf
        hits = np.sort(sims[sims >= edges[0]])
        counts += len(hits) - np.searchsorted(hits, edges.astype(np.float32), side="left")
    estimate = counts * (n / len(rows)) / 2  # each pair is seen from both of its rows
    fits = np.flatnonzero(estimate <= limit / 2)
    if not len(fits):
        return float(threshold)
    return float(min(max(edges[fits[0]], floor), threshold))


def search_fitting(
    search: Callable[[float], T],
    X: np.ndarray,
    *,
    floor: float,
    threshold: float,
    given: bool,
    limit: int,
    seed: int,
) -> tuple[T, float]:
    """``search(floor)`` and the floor it ran at. On a :class:`CandidateOverflowError`, a
    default floor (``given`` false) is raised toward the threshold (logged) and the search
    run again; a given floor, or the threshold itself, raises the error, naming the floor
    that would fit."""
    while True:
        try:
            return search(floor), floor
        except CandidateOverflowError:
            fit = fitting_floor(X, floor, threshold, limit, seed) if len(X) else threshold
            if given or floor >= threshold:
                message = _overflow_message(limit, floor, threshold, fit)
                raise CandidateOverflowError(message) from None
            if fit <= floor:  # the estimate missed: close half the gap
                fit = threshold if threshold - floor < 1e-3 else (floor + threshold) / 2
            logger.warning(
                "more than max_candidates=%d candidate pairs above the default floor %s: "
                "raised the floor to %s (report.floor; rethreshold goes down to it). Give "
                "floor= or a larger max_candidates to keep more candidates",
                limit,
                floor,
                fit,
            )
            floor = fit


class ReadUnitRows:
    """The unit-norm float32 rows of ``matrix`` (an array or an ``h5py.Dataset`` of ``n``
    finite rows), read when indexed by a slice or by sorted row numbers: what
    :func:`fitting_floor` reads, for the partitioned engine, which never holds the matrix.

    >>> rows = ReadUnitRows(np.array([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0]]), 3)
    >>> len(rows), rows[np.array([0, 2])].tolist(), rows[1:2].dtype.name
    (3, [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]], 'float32')
    """

    def __init__(self, matrix: Any, n: int) -> None:
        self.matrix, self.n = matrix, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        block = np.asarray(self.matrix[key], dtype=np.float64)
        peak = np.abs(block).max(axis=1, initial=0.0)[:, None]  # huge values: scale first
        block = block / np.where(peak > 0, peak, 1.0)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        return (block / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _overflow_message(limit: int, floor: float, threshold: float, fit: float) -> str:
    head = f"more than max_candidates={limit} candidate pairs above floor={floor}"
    if floor >= threshold:
        return f"{head} (the threshold): raise the threshold or max_candidates"
    if fit >= threshold:
        return (
            f"{head}: even floor={threshold} (the threshold) would not fit; raise the "
            "threshold or max_candidates"
        )
    return (
        f"{head}: floor={fit} would fit (estimated from an exact check of a sample of "
        "rows), or raise max_candidates"
    )
