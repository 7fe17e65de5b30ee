"""The ann engine: spherical k-means cells trained on a sample, each row placed in its
nearest cell and the further cells it visits, each cell searched exactly against its
members and visitors, and the recall estimate from an exact check of a row sample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    pass
from embetter_core.dedupe.candidates import (
    AnnCells,
    RecallSample,
    sample_priority,
    stratified_draw,
)
from embetter_core.dedupe.engines import (
    _Collector,
    _Found,
    _in_sorted,
    _rescore,
    _run,
    _tile,
)
from embetter_core.dedupe.settings import _READ_BLOCK, _SCREEN_SLACK, SearchSettings


def _ann_search(
    X: np.ndarray,
    screen: np.float32,
    *,
    nlist: int,
    settings: SearchSettings,
    max_probe: int = 32,
) -> _Found:
    """Cluster-blocked exact search: each row against the members of its nearest cells
    (:func:`_train_cells`, :func:`_assign_cells`, :func:`_search_cells`)."""
    nprobe = settings.nprobe
    centroids = _train_cells(X, nlist=nlist, seed=settings.seed)
    primary, visit_rows, visit_cells = _assign_cells(
        X, centroids, screen, nprobe=nprobe, max_probe=max_probe, n_jobs=settings.threads
    )
    cells = AnnCells(
        centroids, primary, visit_rows, visit_cells, nprobe=nprobe, max_probe=max_probe
    )
    return _search_cells(
        X,
        cells,
        screen,
        block=settings.block_size,
        n_jobs=settings.threads,
        limit=settings.max_candidates,
    )


def _train_cells(
    X: np.ndarray, *, nlist: int, seed: int, niter: int = 10, train_per_cell: int = 32
) -> np.ndarray:
    """Spherical k-means centres (``nlist x d`` float32), trained on a sample of rows."""
    train = X[_train_rows(len(X), nlist=nlist, seed=seed, train_per_cell=train_per_cell)]
    return _train_on(train, nlist=nlist, seed=seed, niter=niter)


def _train_rows(n: int, *, nlist: int, seed: int, train_per_cell: int = 32) -> np.ndarray:
    """The rows (ascending) :func:`_train_cells` trains on."""
    rng = np.random.default_rng(seed)
    train_n = min(n, max(train_per_cell * nlist, 10_000))
    return np.sort(rng.choice(n, size=train_n, replace=False))


def _train_on(train: np.ndarray, *, nlist: int, seed: int, niter: int = 10) -> np.ndarray:
    """Spherical k-means centres (``nlist x d`` float32) of the rows ``train``."""
    import faiss

    kmeans = faiss.Kmeans(
        train.shape[1],
        nlist,
        niter=niter,
        spherical=True,
        seed=seed,
        min_points_per_centroid=1,
        max_points_per_centroid=1 << 30,
    )
    kmeans.train(train)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def _assign_cells(
    X: np.ndarray,
    centroids: np.ndarray,
    screen: np.float32,
    *,
    nprobe: int,
    max_probe: int = 32,
    probe: int | None = None,
    n_jobs: int = 1,
    block: int = _READ_BLOCK,
) -> tuple[np.ndarray, ...]:
    """Each row's primary (nearest) cell, and the further cells it visits: its next
    ``nprobe - 1`` cells and also (up to ``max_probe`` in all) every cell whose centroid is
    at least ``screen`` similar to it, so a dense cluster that k-means splits over many cells
    is still searched whole. Returns ``(primary, visit_rows, visit_cells)``; with ``probe``
    (at least ``nprobe``) also the visits by the same rule with ``probe`` in place of
    ``nprobe`` (``probe_rows, probe_cells``), from the same search.

    Blocks of ``block`` rows are searched on ``n_jobs`` threads, each with the caller's
    faiss threads: the same searches of the same blocks as on one thread, so the same cells
    (300k rows, 1,024 cells: 1.25 s on two threads against 2.26 s). The block size is kept
    apart from the thread count on purpose: a row's similarities to the centroids can
    differ in the last bit with the number of rows searched beside it."""
    import faiss

    nlist, d = centroids.shape
    n = len(X)
    nprobe = min(nprobe, nlist)
    k = nprobe if probe is None else min(max(probe, nprobe), nlist)
    wide = min(nlist, max(k, max_probe))
    cells = faiss.IndexFlatIP(d)
    cells.add(centroids)
    widths = [nprobe] if probe is None else [nprobe, k]
    omp_threads = faiss.omp_get_max_threads()  # a new thread starts with OpenMP's default

    def block_task(start: int) -> Callable[[], tuple[np.ndarray, list[tuple[np.ndarray, ...]]]]:
        def task() -> tuple[np.ndarray, list[tuple[np.ndarray, ...]]]:
            if n_jobs > 1:
                faiss.omp_set_num_threads(omp_threads)
            rows = X[start : start + block]
            top_s, top = cells.search(rows, k)  # best first
            more = np.flatnonzero(top_s[:, -1] >= screen)  # may have more cells above screen
            if len(more) and wide > k:
                more_s, more_top = cells.search(rows[more], wide)
                top_s = np.pad(top_s, ((0, 0), (0, wide - k)), constant_values=-np.inf)
                top = np.pad(top, ((0, 0), (0, wide - k)), constant_values=-1)
                top_s[more], top[more] = more_s, more_top
            above = top_s[:, 1:] >= screen
            visits = []
            for width in widths:
                visit = above.copy()
                visit[:, : width - 1] = True
                r, c = np.nonzero(visit)
                visits.append((r + start, top[r, c + 1].astype(np.int64)))
            return top[:, 0], visits

        return task

    blocks = range(0, n, block)
    n_jobs = max(1, min(n_jobs, len(blocks)))
    primary = np.empty(n, dtype=np.int64)
    parts: list[list[np.ndarray]] = [[] for _ in range(2 * len(widths))]
    for start, (first, visits) in zip(blocks, _run(map(block_task, blocks), n_jobs), strict=True):
        primary[start : start + len(first)] = first
        for i, (r, c) in enumerate(visits):
            parts[2 * i].append(r)
            parts[2 * i + 1].append(c)
    return (primary, *(_joined(p) for p in parts))


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _search_cells(
    X: np.ndarray,
    cells: AnnCells,
    screen: np.float32,
    *,
    block: int,
    n_jobs: int,
    limit: int,
) -> _Found:
    """Cluster-blocked exact search: every row against the members of its own cell and of
    the cells it visits (so a cell's members meet its members and its visitors)."""
    n = len(X)
    nlist = len(cells.centroids)
    primary = cells.primary
    members = np.argsort(primary, kind="stable")  # each cell's members in row order
    m_bounds = np.searchsorted(primary[members], np.arange(nlist + 1))
    by_cell = np.argsort(cells.visit_cells, kind="stable")
    visitors = cells.visit_rows[by_cell]
    v_bounds = np.searchsorted(cells.visit_cells[by_cell], np.arange(nlist + 1))

    def cell_task(c: int) -> Callable[[], Any]:
        def task() -> Any:
            mem = members[m_bounds[c] : m_bounds[c + 1]]
            queries = np.concatenate([mem, visitors[v_bounds[c] : v_bounds[c + 1]]])
            best, q, m = _cell_tiles(
                lambda a, b: X[queries[a:b]], len(mem), len(queries), screen, block=block
            )
            return [queries], [best], [queries[q]], [mem[m]]

        return task

    tasks = (cell_task(c) for c in range(nlist))
    nearest = np.full(n, -np.inf, dtype=np.float32)
    found = _Collector(limit)
    for rows, best, hits_a, hits_b in _run(tasks, n_jobs):
        for r, b in zip(rows, best, strict=True):
            np.maximum.at(nearest, r, b)
        for a, b in zip(hits_a, hits_b, strict=True):
            found.add(a, b)
    return _Found(*found.result(unique=True), nearest, cells)


def _cell_tiles(
    rows: Callable[[int, int], np.ndarray],
    n_mem: int,
    n_queries: int,
    screen: np.float32,
    *,
    block: int,
    col_span: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tiles of one cell: its queries (``n_mem`` members first, then the visitors; the
    query rows ``a:b`` are ``rows(a, b)``) against its members, the members' own block over
    its upper triangle only. ``col_span``: only the members ``lo:hi`` as columns (a cell
    searched in pieces; ``lo`` a multiple of ``4 * block``). Returns each query's best
    (over these columns) and the hits as (query, member) positions."""
    cols = 4 * block
    lo, hi = (0, n_mem) if col_span is None else col_span
    best = np.full(n_queries, -np.inf, dtype=np.float32)
    hits_q, hits_m = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    # query blocks: the members first (their own upper triangle), then the visitors
    starts = [*range(0, n_mem, block), *range(n_mem, n_queries, block)]
    for j0 in range(lo, hi, cols):
        Xm = rows(j0, min(j0 + cols, hi))
        for i0 in starts:
            i1 = min(i0 + block, n_mem if i0 < n_mem else n_queries)
            diag = (i0 - j0) if i0 < n_mem else None
            if diag is not None and diag >= len(Xm) - 1:
                continue  # every entry at or below the diagonal: nothing to find
            rmax, cmax, r, cc = _tile(rows(i0, i1), Xm, screen, diag)
            np.maximum(best[i0:i1], rmax, out=best[i0:i1])
            # column maxima: each member's best among these queries (this covers the
            # masked lower triangle of the members' own block)
            span = slice(j0, j0 + len(cmax))
            np.maximum(best[span], cmax, out=best[span])
            hits_q.append(r + i0)
            hits_m.append(cc + j0)
    return best, np.concatenate(hits_q), np.concatenate(hits_m)


def _recall_sample(
    X: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, floor: float, size: int, seed: int, block: int
) -> RecallSample:
    """Exact neighbours (>= floor) of a stratified sample of ``size`` rows, and which of
    them the candidates ``(lo, hi)`` hold, to estimate ann recall."""
    n = len(X)
    has = np.zeros(n, dtype=bool)
    has[lo] = True
    has[hi] = True
    rows, weights = stratified_draw(has, size, sample_priority(X, seed))
    screen = np.float32(floor - _SCREEN_SLACK)
    nearest = np.full(len(rows), -np.inf, dtype=np.float32)
    other_parts, row_parts = [], []
    Xs = X[rows]
    for j0 in range(0, n if len(rows) else 0, 8 * block):
        sims = Xs @ X[j0 : j0 + 8 * block].T
        own = (rows >= j0) & (rows < j0 + sims.shape[1])
        sims[np.flatnonzero(own), rows[own] - j0] = -np.inf
        np.maximum(nearest, sims.max(axis=1), out=nearest)
        r, c = np.nonzero(sims >= screen)
        row_parts.append(r)
        other_parts.append(c + j0)
    sample_pos = np.concatenate(row_parts) if row_parts else np.empty(0, dtype=np.int64)
    other = np.concatenate(other_parts) if other_parts else np.empty(0, dtype=np.int64)
    scores = _rescore(X, rows[sample_pos], other)
    keep = scores >= floor
    # found by ann: the candidate set holds the pair
    cand_keys = np.sort(lo * n + hi)
    a, b = rows[sample_pos[keep]], other[keep]
    keys = np.minimum(a, b) * n + np.maximum(a, b)
    found = _in_sorted(cand_keys, keys)
    return RecallSample(
        rows=rows,
        weights=weights,
        nearest=nearest,
        pair_row=sample_pos[keep],
        other=other[keep],
        scores=scores[keep],
        found=found,
    )
