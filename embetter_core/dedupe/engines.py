"""The exact search kernels: tiles of blocked matrix products (one reused buffer per thread),
the exact engine over the upper triangle, the cross search of one row set against another,
exact rescoring of pairs, and the thread and BLAS limits they run under.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from embetter_core.errors import CandidateOverflowError

if TYPE_CHECKING:
    pass
from embetter_core.dedupe.candidates import AnnCells


class _blas_limit:
    """Limit BLAS threads (threadpoolctl) and, for ann, faiss's OpenMP threads inside the
    block; restore both after. Cheap enough to enter per task (:func:`_blas_controller`)."""

    def __init__(self, threads: int | None, with_faiss: bool = False) -> None:
        self.threads = threads
        self.with_faiss = with_faiss
        self._ctx: Any = None
        self._faiss_threads: int | None = None

    def __enter__(self) -> None:
        if self.threads is None:
            return
        self._ctx = _blas_controller().limit(limits=int(self.threads), user_api="blas")
        if self.with_faiss:
            import faiss

            self._faiss_threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(int(self.threads))

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.restore_original_limits()
        if self._faiss_threads is not None:
            import faiss

            faiss.omp_set_num_threads(self._faiss_threads)


_controller: list[Any] = []  # [(modules loaded when made, ThreadpoolController)]


def _blas_controller() -> Any:
    """A ``threadpoolctl.ThreadpoolController`` of the loaded BLAS libraries, made again only
    when modules were imported since (finding the libraries costs about 1 ms, a limit
    through a made controller 0.01 ms: thousands of cells each set one)."""
    import sys

    from threadpoolctl import ThreadpoolController

    loaded = len(sys.modules)
    if not _controller or _controller[0][0] != loaded:
        _controller[:] = [(loaded, ThreadpoolController())]
    return _controller[0][1]


def _run(tasks: Iterator[Callable[[], Any]], n_jobs: int) -> Iterator[Any]:
    """Run tasks in order on ``n_jobs`` threads, yielding results in task order."""
    if n_jobs <= 1:
        for task in tasks:
            yield task()
        return
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        pending = []
        for task in tasks:
            pending.append(pool.submit(task))
            if len(pending) >= 2 * n_jobs:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


class _Found(NamedTuple):
    """What an engine found: candidate pairs as canonical rows (``lo < hi``), and each
    row's best similarity among the rows it was compared with (-inf: none)."""

    lo: np.ndarray
    hi: np.ndarray
    nearest: np.ndarray
    cells: AnnCells | None = None  # the ann engine's cells

    @classmethod
    def empty(cls, n: int) -> _Found:
        none = np.empty(0, dtype=np.int64)
        return cls(none, none, np.full(n, -np.inf, dtype=np.float32))


def _overflow(limit: int) -> CandidateOverflowError:
    """The error of a search that found more than ``limit`` candidate pairs (the entry
    points catch it to raise a default floor, or to name the floor that would fit)."""
    return CandidateOverflowError(
        f"more than max_candidates={limit} candidate pairs above the floor: "
        "raise the threshold or the floor, or raise max_candidates"
    )


class _Collector:
    """Accumulates candidate pairs (canonical rows, lo < hi), bounded by ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        if not len(a):
            return
        self.count += len(a)
        if self.count > self.limit:
            raise _overflow(self.limit)
        self.lo.append(np.minimum(a, b))
        self.hi.append(np.maximum(a, b))

    def result(self, unique: bool) -> tuple[np.ndarray, np.ndarray]:
        if not self.lo:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        lo = np.concatenate(self.lo).astype(np.int64)
        hi = np.concatenate(self.hi).astype(np.int64)
        if unique:
            n = int(hi.max()) + 1
            keys = np.unique(lo * n + hi)
            lo, hi = keys // n, keys % n
        return lo, hi


_buffers = threading.local()


def _tile(
    Xq: np.ndarray, Xm: np.ndarray, screen: np.float32, diag_offset: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One tile of similarities: (row max, col max, hit rows, hit cols).

    ``diag_offset``: when not None, tile entry (r, c) with ``c <= r + diag_offset`` is masked
    (the lower triangle and the diagonal of the full matrix).
    """
    mask = None
    if diag_offset is not None:
        r = np.arange(len(Xq))[:, None]
        c = np.arange(len(Xm))[None, :]
        mask = c <= r + diag_offset
    return _masked_tile(Xq, Xm, screen, mask)


def _exact_search(
    X: np.ndarray, screen: np.float32, *, block: int, n_jobs: int, limit: int
) -> _Found:
    """All pairs above ``screen`` over the upper triangle, one row block per task."""
    n = len(X)
    cols = 4 * block

    def row_block(i0: int) -> Callable[[], Any]:
        def task() -> Any:
            i1 = min(i0 + block, n)
            rowmax = np.full(i1 - i0, -np.inf, dtype=np.float32)
            colmax = np.full(n - i0, -np.inf, dtype=np.float32)
            hits_a, hits_b = [], []
            for j0 in range(i0, n, cols):
                j1 = min(j0 + cols, n)
                diag = (i0 - j0) if j0 == i0 else None
                rmax, cmax, r, c = _tile(X[i0:i1], X[j0:j1], screen, diag)
                np.maximum(rowmax, rmax, out=rowmax)
                np.maximum(colmax[j0 - i0 : j1 - i0], cmax, out=colmax[j0 - i0 : j1 - i0])
                hits_a.append(r + i0)
                hits_b.append(c + j0)
            return i0, rowmax, colmax, np.concatenate(hits_a), np.concatenate(hits_b)

        return task

    nearest = np.full(n, -np.inf, dtype=np.float32)
    found = _Collector(limit)
    for i0, rowmax, colmax, a, b in _run((row_block(i) for i in range(0, n, block)), n_jobs):
        np.maximum(nearest[i0 : i0 + len(rowmax)], rowmax, out=nearest[i0 : i0 + len(rowmax)])
        np.maximum(nearest[i0:], colmax, out=nearest[i0:])
        found.add(a, b)
    return _Found(*found.result(unique=False), nearest)


def _masked_tile(
    Xq: np.ndarray, Xm: np.ndarray, screen: np.float32, mask: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One tile of similarities, entries ``mask`` (an index tuple or a boolean array)
    excluded: (row max, col max, hit rows, hit cols)."""
    # A reused per-thread buffer: a fresh 16 MB result per tile costs page faults.
    size = len(Xq) * len(Xm)
    buf = getattr(_buffers, "tile", None)
    if buf is None or len(buf) < size:
        buf = _buffers.tile = np.empty(size, dtype=np.float32)
    sims = np.matmul(Xq, Xm.T, out=buf[:size].reshape(len(Xq), len(Xm)))
    if mask is not None:
        sims[mask] = -np.inf
    rowmax = sims.max(axis=1, initial=-np.inf)
    colmax = sims.max(axis=0, initial=-np.inf)
    rows = np.flatnonzero(rowmax >= screen)
    if len(rows):
        rr, cc = np.nonzero(sims[rows] >= screen)
        return rowmax, colmax, rows[rr], cc
    empty = np.empty(0, dtype=np.int64)
    return rowmax, colmax, empty, empty


def _cross_tiles(
    Xq: np.ndarray,
    Xm: np.ndarray,
    screen: np.float32,
    *,
    block: int,
    self_cols: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (``Xq`` row, ``Xm`` row) scoring at least ``screen``, in tiles of
    ``block x 4 block``: (each ``Xq`` row's best, each ``Xm`` row's best, hit ``Xq`` rows,
    hit ``Xm`` rows). ``self_cols[i]``, when in range, is the ``Xm`` row that is ``Xq``'s
    row ``i`` itself: that pair is skipped."""
    nq, nm = len(Xq), len(Xm)
    rowmax = np.full(nq, -np.inf, dtype=np.float32)
    colmax = np.full(nm, -np.inf, dtype=np.float32)
    hits_q, hits_m = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    cols = 4 * block
    for j0 in range(0, nm, cols):
        Xj = Xm[j0 : j0 + cols]
        for i0 in range(0, nq, block):
            i1 = min(i0 + block, nq)
            mask = None
            if self_cols is not None:
                own = self_cols[i0:i1] - j0
                r = np.flatnonzero((own >= 0) & (own < len(Xj)))
                mask = (r, own[r]) if len(r) else None
            rmax, cmax, r, c = _masked_tile(Xq[i0:i1], Xj, screen, mask)
            np.maximum(rowmax[i0:i1], rmax, out=rowmax[i0:i1])
            np.maximum(colmax[j0 : j0 + len(Xj)], cmax, out=colmax[j0 : j0 + len(Xj)])
            hits_q.append(r + i0)
            hits_m.append(c + j0)
    return rowmax, colmax, np.concatenate(hits_q), np.concatenate(hits_m)


def _cross_search(
    Xq: np.ndarray,
    Xm: np.ndarray,
    screen: np.float32,
    *,
    block: int,
    n_jobs: int,
    limit: int,
    self_cols: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact search of every ``Xq`` row against every ``Xm`` row: :func:`_cross_tiles`,
    one span of ``4 x block`` ``Xm`` rows per task. Raises when more than ``limit`` pairs
    score at least ``screen``."""
    span = 4 * block

    def span_task(j0: int) -> Callable[[], Any]:
        def task() -> Any:
            own = None if self_cols is None else self_cols - j0
            return j0, *_cross_tiles(Xq, Xm[j0 : j0 + span], screen, block=block, self_cols=own)

        return task

    rowmax = np.full(len(Xq), -np.inf, dtype=np.float32)
    colmax = np.full(len(Xm), -np.inf, dtype=np.float32)
    hits_q, hits_m = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    count = 0
    for j0, rmax, cmax, q, m in _run((span_task(j) for j in range(0, len(Xm), span)), n_jobs):
        np.maximum(rowmax, rmax, out=rowmax)
        colmax[j0 : j0 + len(cmax)] = cmax
        count += len(q)
        if count > limit:
            raise _overflow(limit)
        hits_q.append(q)
        hits_m.append(m + j0)
    return rowmax, colmax, np.concatenate(hits_q), np.concatenate(hits_m)


def _rescore(X: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Each pair's cosine from its two rows alone (float64 sum, float32 result)."""
    return _rescore_pairs(X, X, lo, hi)


def _rescore_pairs(A: np.ndarray, B: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """The cosine of ``A[ia[i]]`` and ``B[ib[i]]`` (float64 sum, float32 result)."""
    out = np.empty(len(ia), dtype=np.float32)
    step = 8192  # small chunks stay in cache
    for s in range(0, len(ia), step):
        a = A[ia[s : s + step]].astype(np.float64)
        b = B[ib[s : s + step]].astype(np.float64)
        out[s : s + step] = np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0)
    return out


def _in_sorted(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which of ``keys`` occur in the ascending array ``sorted_keys`` (bool, like ``keys``)."""
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys
