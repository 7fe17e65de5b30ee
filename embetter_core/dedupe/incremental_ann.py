"""Incremental ann: new and edited rows placed in the saved k-means cells and searched
against the members and visitors of the cells they touch (one product per cell), and the
saved recall sample carried forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

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


def _search_fresh(
    rows: _UnitRows,
    cells: AnnCells,
    fresh: np.ndarray,
    screen: np.float32,
    *,
    n_jobs: int,
    limit: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The comparisons a full search over ``cells`` (:func:`~embetter_core.dedupe.
    _search_cells`) makes that involve a ``fresh`` row (boolean mask of canonical rows):
    a fresh member of a cell against the cell's members and visitors, a fresh visitor
    against its members. Cell by cell: its fresh rows against its members in one product,
    its fresh members against its visitors in another; the products are of input rows,
    scaled after (a cell has a few fresh rows, so scaling its many rows would cost more).

    Returns the pairs scoring at least ``screen`` (canonical rows, ``lo < hi``, unique) and
    each row's best similarity among the fresh rows it met (every row it met, for fresh rows;
    -inf: none).
    """
    n = len(rows)
    nlist = len(cells.centroids)
    order = rows.order
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    fresh_in = fresh[rank]  # by input row
    raw, scale = rows.raw, rows.scale
    # each cell's members (primary cell) and visitors, as input rows
    small = np.int16 if nlist <= np.iinfo(np.int16).max else np.int64  # a radix sort
    members = order[np.argsort(cells.primary.astype(small), kind="stable")]
    m_bounds = np.concatenate([[0], np.cumsum(np.bincount(cells.primary, minlength=nlist))])
    visitors = order[cells.visit_rows[np.argsort(cells.visit_cells.astype(small), kind="stable")]]
    v_bounds = np.concatenate([[0], np.cumsum(np.bincount(cells.visit_cells, minlength=nlist))])
    touched = np.zeros(nlist, dtype=bool)
    touched[cells.primary[fresh]] = True
    touched[cells.visit_cells[fresh[cells.visit_rows]]] = True

    def cell_task(c: int) -> Callable[[], Any]:
        def task() -> Any:
            mem = members[m_bounds[c] : m_bounds[c + 1]]
            vis = visitors[v_bounds[c] : v_bounds[c + 1]]
            new_mem = np.flatnonzero(fresh_in[mem])  # positions in mem
            new_vis = vis[fresh_in[vis]]
            queries = np.concatenate([mem[new_mem], new_vis])
            unit = np.take(raw, queries, axis=0) * scale[queries, None]
            # one row per query; columns: the members, then (fresh members only) the visitors
            cols = np.concatenate([mem, vis]) if len(new_mem) else mem
            sims = np.full((len(queries), len(cols)), -np.inf, dtype=np.float32)
            if len(mem):  # fresh members and visitors against the members (raw, scaled after)
                part = sims[:, : len(mem)]
                part[...] = _products(unit, np.take(raw, mem, axis=0))
                part *= scale[mem]
                part[np.arange(len(new_mem)), new_mem] = -np.inf  # itself
                part[len(new_mem) :, new_mem] = -np.inf  # met as the member's visitor
            if len(new_mem) and len(vis):  # fresh members against the visitors
                part = sims[: len(new_mem), len(mem) :]
                part[...] = _products(unit[: len(new_mem)], np.take(raw, vis, axis=0))
                part *= scale[vis]
            return _met(queries, cols, sims, screen)

        return task

    nearest = np.full(n, -np.inf, dtype=np.float32)  # by input row
    where, best, hits_a, hits_b = [], [], [], []
    count = 0
    for q_rows, q_best, m_rows, m_best, a, b in _run(
        (cell_task(int(c)) for c in np.flatnonzero(touched)), n_jobs
    ):
        where += [q_rows, m_rows]
        best += [q_best, m_best]
        hits_a.append(a)
        hits_b.append(b)
        count += len(a)
        if count > limit:
            raise _overflow(limit)
    if where:
        np.maximum.at(nearest, np.concatenate(where), np.concatenate(best))
    if not hits_a:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, nearest[order]
    a, b = rank[np.concatenate(hits_a)], rank[np.concatenate(hits_b)]
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


def _met(
    q_rows: np.ndarray, m_rows: np.ndarray, sims: np.ndarray, screen: np.float32
) -> tuple[np.ndarray, ...]:
    """From one product: each query's and each column's best, and the pairs at ``screen``."""
    r, k = np.nonzero(sims >= screen)
    q_best, m_best = sims.max(axis=1, initial=-np.inf), sims.max(axis=0, initial=-np.inf)
    return q_rows, q_best, m_rows, m_best, q_rows[r], m_rows[k]


def _placed_cells(
    old: DedupeState, now_of: np.ndarray, X: _UnitRows, fresh: np.ndarray, screen: np.float32
) -> AnnCells:
    """The state's cells over this run's canonical rows: unchanged rows where they were,
    fresh rows placed by the same rule."""
    assert old.cells is not None
    cells = old.cells
    n = len(X)
    primary = np.empty(n, dtype=np.int64)
    alive = now_of >= 0
    primary[now_of[alive]] = cells.primary[alive]
    kept = alive[cells.visit_rows]
    new_rows = np.flatnonzero(fresh)
    p, vr, vc = _assign_cells(
        X[new_rows], cells.centroids, screen, nprobe=cells.nprobe, max_probe=cells.max_probe
    )
    primary[new_rows] = p
    return replace(
        cells,
        primary=primary,
        visit_rows=np.concatenate([now_of[cells.visit_rows[kept]], new_rows[vr]]),
        visit_cells=np.concatenate([cells.visit_cells[kept], vc]),
    )


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
