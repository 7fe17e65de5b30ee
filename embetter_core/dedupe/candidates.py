"""What a search found before anything is decided: :class:`Candidates` (every pair down to the
floor), the ann engine's :class:`AnnCells` and its :class:`RecallSample`.
"""

from __future__ import annotations

import math
from collections.abc import Sized
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from embetter_core.dedupe.hashing import multilinear_hash

if TYPE_CHECKING:
    pass


@dataclass(frozen=True, eq=False, repr=False)
class RecallSample:
    """The exact neighbours of a stratified sample of rows: how ann estimates its recall.

    The rows were sampled in two strata, rows with at least one candidate and rows with
    none; each sampled row stands for ``weight`` rows of its stratum. Every pair of a sampled
    row scoring at least the floor is listed, with whether the search found it. Treat the
    arrays as read-only.

    Attributes:
        rows: the sampled input rows.
        weights: per sampled row, ``stratum size / stratum sample`` (float64).
        nearest: per sampled row, its exact best neighbour similarity (float32).
        pair_row: per pair, the position in ``rows`` of its sampled row.
        other: per pair, its other input row.
        scores: per pair, its cosine (float32).
        found: per pair, whether the search's candidates hold it.

    >>> import numpy as np
    >>> sample = RecallSample(
    ...     rows=np.array([0, 5]), weights=np.array([1.0, 3.0]),
    ...     nearest=np.array([0.95, 0.9], dtype=np.float32), pair_row=np.array([0, 1]),
    ...     other=np.array([1, 6]), scores=np.array([0.95, 0.9], dtype=np.float32),
    ...     found=np.array([True, False]),
    ... )
    >>> sample.estimate(0.9), sample.estimate(0.92)
    (0.25, 1.0)
    """

    rows: np.ndarray
    weights: np.ndarray
    nearest: np.ndarray
    pair_row: np.ndarray
    other: np.ndarray
    scores: np.ndarray
    found: np.ndarray

    def estimate(self, threshold: float) -> float:
        """The weighted share of the sample's pairs at ``threshold`` that the search found
        (NaN when the sample holds no such pair)."""
        at = self.scores >= threshold
        w = self.weights[self.pair_row[at]]
        total = float(w.sum())
        if total == 0:
            return math.nan
        return float(w[self.found[at]].sum() / total)

    def renumbered(self, rows: np.ndarray) -> RecallSample:
        """The sample with row ``r`` renamed ``rows[r]`` (e.g. search order to input order)."""
        return replace(self, rows=rows[self.rows], other=rows[self.other])


_PRIORITY_WORDS = 16  # a row's first values that key its place in the recall sample


def sample_priority(X: np.ndarray, seed: int) -> np.ndarray:
    """Each row's place in the recall sample's draw (uint64, lowest drawn first): a keyed
    multilinear hash of its first 16 float32 values, so the draw depends on the rows'
    contents and ``seed``, not on where the rows are. Runs over a corpus that grew draw
    nearly the same rows, and their recall estimates compare like for like (an incremental
    run carries the last sample forward; the next full run draws the same rows again).
    Rows alike in those values (zero rows, exact duplicates) share a place, a random one: a
    keyed offset keeps all-zero values from coming first.

    >>> X = np.array([[1, 0], [0.6, 0.8], [1, 0], [0, 0]], dtype=np.float32)
    >>> p = sample_priority(X, seed=0)
    >>> p.dtype.name, bool(p[0] == p[2]), bool(p[0] == p[1]), bool(p[3] > 0)
    ('uint64', True, False, True)
    """
    first = np.ascontiguousarray(X[:, :_PRIORITY_WORDS], dtype=np.float32)
    keys = np.random.default_rng(seed + 1).integers(
        0, 2**64 - 1, size=first.shape[1] + 1, dtype=np.uint64, endpoint=True
    )
    per_word = (keys[1:] | np.uint64(1))[:, None]
    return multilinear_hash(first, per_word)[:, 0] + keys[0]  # mod 2**64


def stratified_draw(
    has: np.ndarray, size: int, priority: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The recall sample's rows (ascending within each stratum) and weights: ``size - size
    // 2`` rows of lowest ``priority`` among the rows with a candidate (``has``), ``size //
    2`` among the rest, each weighing ``stratum size / rows drawn``.

    >>> rows, weights = stratified_draw(
    ...     np.array([True, True, True, False]), 2, np.array([5, 1, 3, 0], dtype=np.uint64)
    ... )
    >>> rows.tolist(), weights.tolist()
    ([1, 3], [3.0, 1.0])
    """
    rows_parts = [np.empty(0, dtype=np.int64)]
    weight_parts = [np.empty(0, dtype=np.float64)]
    for k, stratum in enumerate((np.flatnonzero(has), np.flatnonzero(~has))):
        take = min(len(stratum), size - size // 2 if k == 0 else size // 2)
        if take:
            lowest = np.argpartition(priority[stratum], take - 1)[:take]
            rows_parts.append(np.sort(stratum[lowest]))
            weight_parts.append(np.full(take, len(stratum) / take))
    return np.concatenate(rows_parts), np.concatenate(weight_parts)


@dataclass(frozen=True, eq=False, repr=False)
class AnnCells:
    """The k-means cells an ``"ann"`` search compared rows within, kept so that an
    incremental run (:mod:`embetter_core.dedupe.incremental`) places new rows in the same cells.

    A row is compared with the members of its own (primary) cell and of the cells it visits,
    so a cell's members meet its members and its visitors. Treat the arrays as read-only.

    Attributes:
        centroids: ``(nlist, d)`` float32 cell centres.
        primary: each row's own cell, its nearest centre (int64).
        visit_rows, visit_cells: the further cells the rows visit, as (row, cell) pairs:
            each row's next ``nprobe - 1`` cells, and also (up to ``max_probe`` in all) every
            cell whose centre is at least the search's screen (``floor - 1e-4``) similar.
        nprobe, max_probe: the settings that placed the rows.
    """

    centroids: np.ndarray
    primary: np.ndarray
    visit_rows: np.ndarray
    visit_cells: np.ndarray
    nprobe: int
    max_probe: int

    def renumbered(self, rows: np.ndarray) -> AnnCells:
        """The cells with row ``r`` renamed ``rows[r]`` (e.g. search order to input order)."""
        primary = np.empty_like(self.primary)
        primary[rows] = self.primary
        return replace(self, primary=primary, visit_rows=rows[self.visit_rows])


def check_parallel(unit: str, **columns: Sized) -> None:
    """Raise ``ValueError`` unless the ``columns`` have one entry per ``unit`` each.

    >>> check_parallel("pair", a=[1, 2], b=[3])
    Traceback (most recent call last):
    ...
    ValueError: a and b must have one entry per pair, got lengths 2 and 1
    """
    lengths = [len(c) for c in columns.values()]
    if len(set(lengths)) > 1:
        names = list(columns)
        listed = ", ".join(names[:-1]) + f" and {names[-1]}"
        shown = ", ".join(map(str, lengths[:-1])) + f" and {lengths[-1]}"
        raise ValueError(f"{listed} must have one entry per {unit}, got lengths {shown}")


@dataclass(frozen=True, eq=False, repr=False)
class Candidates:
    """Every pair a search scored at or above ``floor``: what a :class:`DuplicateReport` is
    decided from, at any threshold down to ``floor``, without searching again.

    Rows are positions in the input (and in ``DuplicateReport.ids``). Treat the arrays as
    read-only.

    Attributes:
        a, b: the pairs' rows (int64), ``a``'s id sorting before ``b``'s.
        scores: the pairs' cosines (float32), highest first; ties in id order of ``(a, b)``.
        rank: each row's place in id order. It orders the ids of a pair, ties, and the
            members of a cluster (which rows are kept is the report's keep rule).
        floor: the score down to which the pairs are complete.
        recall: ann's exact check of a row sample; None for a complete (exact) search.
        cells: the ann search's k-means cells (:class:`AnnCells`), to place new rows in
            them in an incremental run; None for exact.

    >>> from embetter_core.dedupe import DuplicateReport
    >>> import numpy as np
    >>> cand = Candidates(
    ...     a=np.array([0, 1]), b=np.array([1, 2]),
    ...     scores=np.array([0.97, 0.91], dtype=np.float32), rank=np.arange(4), floor=0.9,
    ... )
    >>> len(cand), cand.recall_estimate(0.95)
    (2, 1.0)
    >>> DuplicateReport.from_candidates(["a", "b", "c", "d"], cand, threshold=0.9).clusters
    [['a', 'b', 'c']]
    """

    a: np.ndarray
    b: np.ndarray
    scores: np.ndarray
    rank: np.ndarray
    floor: float
    recall: RecallSample | None = None
    cells: AnnCells | None = None

    def __post_init__(self) -> None:
        check_parallel("pair", a=self.a, b=self.b, scores=self.scores)

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> Candidates:
        """The candidates where the boolean mask ``keep`` is true (the recall sample stays)."""
        return replace(self, a=self.a[keep], b=self.b[keep], scores=self.scores[keep])

    def recall_estimate(self, threshold: float) -> float:
        """Share of the pairs at ``threshold`` that the search found: 1.0 for a complete
        search, else the recall sample's estimate."""
        return 1.0 if self.recall is None else self.recall.estimate(threshold)
