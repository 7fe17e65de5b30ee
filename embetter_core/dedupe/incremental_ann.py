"""Incremental ann: new and edited rows placed in the saved k-means cells, the rows to
search compared with the members of their cell and of their ``FRESH_PROBE * nprobe`` nearest
cells (one product per cell), and the saved recall sample carried forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from embetter_core.dedupe.candidates import AnnCells, RecallSample
from embetter_core.dedupe.cells import _assign_cells
from embetter_core.dedupe.engines import _cross_search, _overflow, _rescore, _run
from embetter_core.dedupe.settings import (
    _SCREEN_SLACK,
)
from embetter_core.dedupe.state import DedupeState


class _UnitRows:
    """This run's unit-norm rows, by canonical row, made when asked for: the input row times
    its scale, the same float32 product :func:`~embetter_core.dedupe._load_normalised`
    makes. Supports ``len`` and ``rows[index_array]``."""

    def __init__(self, raw: np.ndarray, scale: np.ndarray, order: np.ndarray) -> None:
        self.raw, self.scale, self.order = raw, scale, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        at = self.order[rows]
        return self.raw[at] * self.scale[at, None]


#: An incremental run compares each searched row with the members of its
#: ``FRESH_PROBE * nprobe`` nearest cells (see :func:`_search_fresh`).
FRESH_PROBE = 2
#: Similarities from which the cells are searched on threads, ``_SPANS`` tasks of many
#: cells per thread (a task per cell would cost more in futures than it saves). The
#: products and row gathers release the GIL, the few microseconds of Python per cell do
#: not: at 64k + 1k rows (1.2M similarities) two threads take 0.77 of one's time.
_THREADED_DOTS = 1 << 17
_SPANS = 4
#: The rows placed in cells per centroid search (on ``n_jobs`` threads; at 1M + 10k rows,
#: 10,000 rows against 2,000 centroids, 0.17 s on one thread). Fixed: the cells a row gets
#: do not depend on the thread count.
_PLACE_BLOCK = 2048


class _Probes(NamedTuple):
    """The cells each searched row is compared with besides its own (canonical rows)."""

    rows: np.ndarray
    cells: np.ndarray


def _search_fresh(
    rows: _UnitRows,
    cells: AnnCells,
    fresh: np.ndarray,
    probes: _Probes,
    screen: np.float32,
    *,
    n_jobs: int,
    limit: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each ``fresh`` row (boolean mask of canonical rows: new, edited or rechecked)
    against the members of its own cell and of the cells it ``probes``, one product per
    cell: the cell's fresh members and probing rows against its members, input rows
    scaled after (a cell has a few fresh rows, so scaling its many rows would cost more).

    A full search also compares a row with the rows that visit its cell (whose own
    ``nprobe`` cells include it). Here the fresh rows probe ``FRESH_PROBE`` times as many
    cells instead (:func:`_placed_cells`): a pair of near-duplicates whose cells one of the
    rows visits is met from the fresh row's side, and each old row is read once, as a
    member of its cell, not once more for each cell it visits (a quarter of the reads at
    ``nprobe=4``: 1M rows, not 4M, at 1M + 10k).

    Returns the pairs scoring at least ``screen`` (canonical rows, ``lo < hi``, unique) and
    each row's best similarity among the rows it met (-inf: none).
    """
    n = len(rows)
    nlist = len(cells.centroids)
    order = rows.order
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    raw, scale = rows.raw, rows.scale
    # each cell's members (primary cell) as input rows, their scales, and its queries: its
    # fresh members first (their positions among the members kept), then its probing rows
    small = np.int16 if nlist <= np.iinfo(np.int16).max else np.int64  # a radix sort
    by_cell = np.argsort(cells.primary.astype(small), kind="stable")
    members, m_scale = order[by_cell], scale[order[by_cell]]
    m_bounds = np.concatenate([[0], np.cumsum(np.bincount(cells.primary, minlength=nlist))])
    own = np.flatnonzero(fresh[by_cell])  # fresh members, by cell, as positions in members
    own_cell = cells.primary[by_cell[own]]  # ascending, as the members are
    q_cell = np.concatenate([own_cell, probes.cells])
    q_rank = np.concatenate([by_cell[own], probes.rows])  # canonical rows
    q_sort = np.argsort(q_cell.astype(small), kind="stable")  # own ones first in a cell
    queries = order[q_rank[q_sort]]
    q_bounds = np.concatenate([[0], np.cumsum(np.bincount(q_cell, minlength=nlist))])
    own_bounds = np.concatenate([[0], np.cumsum(np.bincount(own_cell, minlength=nlist))])
    # the queries' unit rows, made once (a row may query several cells)
    q_rows, q_of = np.unique(queries, return_inverse=True)
    q_unit = np.take(raw, q_rows, axis=0) * scale[q_rows, None]

    # a fresh member meets itself as its cell's query i (the cell's i-th fresh member):
    # that entry of the cell's product, as a flat position, is masked
    own_i = np.arange(len(own)) - own_bounds[own_cell]
    own_flat = own_i * np.diff(m_bounds)[own_cell] + own - m_bounds[own_cell]
    mb, qb, ob = m_bounds.tolist(), q_bounds.tolist(), own_bounds.tolist()  # Python ints
    q_best = np.full(len(queries), -np.inf, dtype=np.float32)  # by query
    m_best = np.full(len(members), -np.inf, dtype=np.float32)  # by member

    def cells_task(cs: list[int]) -> Callable[[], list[tuple[np.ndarray, np.ndarray]]]:
        def task() -> list[tuple[np.ndarray, np.ndarray]]:
            hits = []  # (query, member) positions at ``screen``
            for c in cs:
                lo, hi, q0, q1 = mb[c], mb[c + 1], qb[c], qb[c + 1]
                if lo == hi:
                    continue
                sims = _products(q_unit[q_of[q0:q1]], raw[members[lo:hi]])
                sims *= m_scale[lo:hi]
                if ob[c + 1] > ob[c]:
                    np.put(sims, own_flat[ob[c] : ob[c + 1]], -np.inf)
                sims.max(axis=1, out=q_best[q0:q1])  # disjoint slices: threads may share
                sims.max(axis=0, out=m_best[lo:hi])
                r, k = np.nonzero(sims >= screen)
                if len(r):
                    hits.append((r + q0, k + lo))
            return hits

        return task

    touched = np.flatnonzero(q_bounds[1:] > q_bounds[:-1]).tolist()
    if np.diff(q_bounds) @ np.diff(m_bounds) < _THREADED_DOTS:
        n_jobs = 1  # too few products to gain from threads
    span = max(1, -(-len(touched) // (_SPANS * n_jobs)))
    tasks = (cells_task(touched[i : i + span]) for i in range(0, len(touched), span))
    hits_q, hits_m = [], []
    count = 0
    for hits in _run(tasks, n_jobs):
        for q, m in hits:
            hits_q.append(q)
            hits_m.append(m)
            count += len(q)
        if count > limit:
            raise _overflow(limit)
    nearest = np.full(n, -np.inf, dtype=np.float32)  # by input row
    nearest[members] = m_best  # each row is one cell's member
    np.maximum.at(nearest, queries, q_best)
    if not hits_q:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, nearest[order]
    a = rank[queries[np.concatenate(hits_q)]]
    b = rank[members[np.concatenate(hits_m)]]
    keys = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    return keys // n, keys % n, nearest[order]


def _products(Q: np.ndarray, G: np.ndarray) -> np.ndarray:
    """``Q @ G.T`` for the few rows of ``Q`` a cell has: 1 to 3 rows one by one, as
    matrix-vector products (OpenBLAS's matrix product takes 2-3 rows twice as long as 4)."""
    if not 1 < len(Q) < 4:
        return Q @ G.T
    out = np.empty((len(Q), len(G)), dtype=np.float32)
    for i in range(len(Q)):
        np.matmul(G, Q[i], out=out[i])
    return out


def _placed_cells(
    old: DedupeState,
    now_of: np.ndarray,
    X: _UnitRows,
    fresh: np.ndarray,
    searched: np.ndarray,
    screen: np.float32,
    n_jobs: int = 1,
) -> tuple[AnnCells, _Probes]:
    """The state's cells over this run's canonical rows (unchanged rows where they were,
    ``fresh`` rows placed by the same rule), and the cells each ``searched`` row probes
    (``FRESH_PROBE * nprobe`` by the same rule, from the same search of the centroids)."""
    assert old.cells is not None
    cells = old.cells
    n = len(X)
    primary = np.empty(n, dtype=np.int64)
    alive = now_of >= 0
    primary[now_of[alive]] = cells.primary[alive]
    kept = alive[cells.visit_rows]
    look = np.flatnonzero(searched)  # the fresh rows and the rechecked ones
    p, vr, vc, pr, pc = _assign_cells(
        X[look],
        cells.centroids,
        screen,
        nprobe=cells.nprobe,
        max_probe=cells.max_probe,
        probe=FRESH_PROBE * cells.nprobe,
        n_jobs=n_jobs,
        block=_PLACE_BLOCK,
    )
    new = fresh[look]  # a rechecked row keeps the cells it has
    primary[look[new]] = p[new]
    placed = new[vr]
    cells = replace(
        cells,
        primary=primary,
        visit_rows=np.concatenate([now_of[cells.visit_rows[kept]], look[vr[placed]]]),
        visit_cells=np.concatenate([cells.visit_cells[kept], vc[placed]]),
    )
    probe_rows = look[pr]
    other = cells.primary[probe_rows] != pc  # a rechecked row's own cell, placed anew
    return cells, _Probes(probe_rows[other], pc[other])


def _carried_sample(
    sample: RecallSample,
    now_of: np.ndarray,
    X: _UnitRows,
    fresh: np.ndarray,
    searched: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    floor: float,
    block: int,
) -> RecallSample:
    """The last run's recall sample over this run's canonical rows: its unchanged rows,
    their exact neighbours among the fresh rows added, ``found`` against ``(lo, hi)``: looked
    up for the pairs with a ``searched`` row, as before for the others (such a pair is a
    candidate now exactly when it was one, reused)."""
    n = len(X)
    alive = now_of[sample.rows] >= 0
    renum = np.cumsum(alive) - 1  # old sample position -> new one
    rows = now_of[sample.rows[alive]]
    keep = alive[sample.pair_row] & (now_of[sample.other] >= 0)
    pair_row = renum[sample.pair_row[keep]]
    other = now_of[sample.other[keep]]
    scores = sample.scores[keep]
    new_rows = np.flatnonzero(fresh)
    screen = np.float32(floor - _SCREEN_SLACK)
    best, _, q, m = _cross_search(
        X[rows], X[new_rows], screen, block=block, n_jobs=1, limit=np.iinfo(np.int64).max
    )
    add = _rescore(X, rows[q], new_rows[m])
    ok = add >= floor
    pair_row = np.concatenate([pair_row, q[ok]])
    other = np.concatenate([other, new_rows[m[ok]]])
    scores = np.concatenate([scores, add[ok]])
    found = np.concatenate([sample.found[keep], np.zeros(int(ok.sum()), dtype=bool)])
    a, b = rows[pair_row], other
    look = searched[a] | searched[b]
    if look.any():
        mine = searched[lo] | searched[hi]
        cand = np.sort(lo[mine] * n + hi[mine])
        keys = np.minimum(a[look], b[look]) * n + np.maximum(a[look], b[look])
        at = np.minimum(np.searchsorted(cand, keys), max(len(cand) - 1, 0))
        found[look] = cand[at] == keys if len(cand) else False
    return RecallSample(
        rows=rows,
        weights=sample.weights[alive],
        nearest=np.maximum(sample.nearest[alive], best),
        pair_row=pair_row,
        other=other,
        scores=scores,
        found=found,
    )
