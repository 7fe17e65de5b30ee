"""One unit of the partitioned search: a cell (or a piece of a dense cell) searched from the
partition file alone, with the ann engine's tiles (:func:`~embetter_core.dedupe.cells._cell_tiles`),
its pairs rescored exactly there; and the recall sample computed by streaming the file.

A :class:`CellUnit` is small (row numbers, no vectors): it travels to a thread here or to a
Dask worker as task data, and the worker reads the vectors from the file by path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embetter_core.dedupe.candidates import RecallSample, stratified_draw
from embetter_core.dedupe.cells import _cell_tiles
from embetter_core.dedupe.engines import _blas_limit, _in_sorted, _rescore_pairs
from embetter_core.dedupe.partition_files import PartitionRef
from embetter_core.dedupe.settings import _SCREEN_SLACK

#: The most partition rows the recall sample is compared with at once (its similarities to
#: them: 500 x 16384 float32 = 33 MB).
_RECALL_READ_ROWS = 16_384


@dataclass(frozen=True, eq=False)
class CellUnit:
    """One unit of work: cell ``cell``'s members (file rows ``start:start + len(members)``,
    canonical rows ``members``) and its visitors (file rows ``visitor_pos``, canonical rows
    ``visitors``); ``col_span``: only these members as columns (a dense cell in pieces,
    whose rows are then read block by block instead of at once)."""

    cell: int
    start: int
    members: np.ndarray
    visitors: np.ndarray
    visitor_pos: np.ndarray
    col_span: tuple[int, int] | None = None

    @property
    def rows(self) -> int:
        return len(self.members) + len(self.visitors)

    @property
    def name(self) -> str:
        piece = "" if self.col_span is None else f" (members {self.col_span[0]}:{self.col_span[1]})"
        return f"cell {self.cell}{piece}"


@dataclass(frozen=True, eq=False)
class UnitResult:
    """What a unit found: each query's best score (canonical ``rows``, ``best``) and its
    pairs at or above the floor (canonical ``lo < hi``, exact ``scores``)."""

    cell: int
    col_span: tuple[int, int] | None
    rows: np.ndarray
    best: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    scores: np.ndarray


def search_unit(
    ref: PartitionRef,
    unit: CellUnit,
    *,
    floor: float,
    block: int,
    blas_threads: int | None = 1,
) -> UnitResult:
    """Search one unit from the partition file (a thread's or a Dask worker's task)."""
    n_mem = len(unit.members)
    queries = np.concatenate([unit.members, unit.visitors])
    screen = np.float32(floor - _SCREEN_SLACK)
    if unit.col_span is None:  # the cell fits: read it once
        local = np.concatenate(
            [ref.read(unit.start, unit.start + n_mem), ref.gather(unit.visitor_pos)]
        )

        def rows(a: int, b: int) -> np.ndarray:
            return local[a:b]
    else:  # a dense cell's piece: read the rows a tile needs, when it needs them

        def rows(a: int, b: int) -> np.ndarray:
            if b <= n_mem:
                return ref.read(unit.start + a, unit.start + b)
            return ref.gather(unit.visitor_pos[a - n_mem : b - n_mem])

    with _blas_limit(blas_threads):
        best, q, m = _cell_tiles(
            rows, n_mem, len(queries), screen, block=block, col_span=unit.col_span
        )
        if unit.col_span is None:
            scores = _rescore_pairs(local, local, q, m)
        else:
            scores = _rescore_picked(ref, unit, q, m)
    a, b = queries[q], unit.members[m]
    keep = scores >= floor
    a, b, scores = a[keep], b[keep], scores[keep]
    # a piece's best is over its columns only: the driver takes the max over the pieces
    return UnitResult(
        unit.cell,
        unit.col_span,
        queries,
        best,
        np.minimum(a, b),
        np.maximum(a, b),
        scores,
    )


def _rescore_picked(ref: PartitionRef, unit: CellUnit, q: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Exact scores of the hits ``(q, m)`` of a piece, reading only their rows."""
    if not len(q):
        return np.empty(0, dtype=np.float32)
    n_mem = len(unit.members)
    pos = np.concatenate([unit.start + np.arange(n_mem), unit.visitor_pos])
    need, inverse = np.unique(np.concatenate([q, m]), return_inverse=True)
    vecs = ref.gather(pos[need])
    return _rescore_pairs(vecs, vecs, inverse[: len(q)], inverse[len(q) :])


def streamed_recall_sample(
    ref: PartitionRef,
    file_rows: np.ndarray,
    position: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    floor: float,
    size: int,
    priority: np.ndarray,
    read_rows: int,
) -> RecallSample:
    """:func:`~embetter_core.dedupe.cells._recall_sample` with the rows streamed from the
    partition file (``file_rows``: each file row's canonical row; ``position``: each
    canonical row's file row; the candidates ``lo``, ``hi`` ascending; ``priority``: each
    canonical row's :func:`~embetter_core.dedupe.candidates.sample_priority`, taken as the
    rows were written): the same sample, the same exact neighbours. The file is read
    ``read_rows`` rows at a time (at most :data:`_RECALL_READ_ROWS`: the sample's
    similarities to one block are held at once)."""
    n = len(file_rows)
    has = np.zeros(n, dtype=bool)
    has[lo] = True
    has[hi] = True
    rows, weights = stratified_draw(has, size, priority)
    del has
    screen = np.float32(floor - _SCREEN_SLACK)
    nearest = np.full(len(rows), -np.inf, dtype=np.float32)
    Xs = ref.gather(position[rows])
    own_pos = position[rows]
    pair_parts, other_parts, score_parts = [], [], []
    read_rows = min(read_rows, _RECALL_READ_ROWS)
    for p0 in range(0, n if len(rows) else 0, read_rows):
        Xb = ref.read(p0, p0 + read_rows)
        sims = Xs @ Xb.T
        own = (own_pos >= p0) & (own_pos < p0 + len(Xb))
        sims[np.flatnonzero(own), own_pos[own] - p0] = -np.inf
        np.maximum(nearest, sims.max(axis=1), out=nearest)
        r, c = np.nonzero(sims >= screen)
        scores = _rescore_pairs(Xs, Xb, r, c)
        keep = scores >= floor
        pair_parts.append(r[keep])
        other_parts.append(file_rows[p0 + c[keep]])
        score_parts.append(scores[keep])
    empty = np.empty(0, dtype=np.int64)
    pair_row = np.concatenate(pair_parts) if pair_parts else empty
    other = np.concatenate(other_parts) if other_parts else empty
    scores = np.concatenate(score_parts) if score_parts else np.empty(0, dtype=np.float32)
    cand_keys = lo * n + hi  # ascending, as the candidates come
    a = rows[pair_row]
    keys = np.minimum(a, other) * n + np.maximum(a, other)
    return RecallSample(
        rows=rows,
        weights=weights,
        nearest=nearest,
        pair_row=pair_row,
        other=other,
        scores=scores,
        found=_in_sorted(cand_keys, keys),
    )
