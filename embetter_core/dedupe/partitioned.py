"""The partitioned engine: the ann search out of core, as independent cell tasks.

``find_duplicates(X, method="partitioned", memory_budget="2GiB")`` never holds the whole
matrix: it reads the input (an ``h5py.Dataset`` or an array) in blocks three times:

1. checks every row (NaN / inf refused by name, before anything is written) and keeps the
   k-means training sample, the same rows the in-memory ann engine samples;
2. places each row in its cells (the ann engine's :func:`_assign_cells`, block by block);
3. writes the unit rows grouped by cell into a partition file in a work folder beside the
   store (:mod:`~embetter_core.dedupe.partition_files`).

Then each cell, with the rows that visit it, is searched as one independent unit
(:mod:`~embetter_core.dedupe.partition_search`): on a thread pool here, or one Dask task per
unit with ``PartitionOptions(client=...)`` (a bounded number in flight, ``as_completed``).
A cell too large for the budget is searched in pieces, its rows read block by block. The
pairs come back rescored exactly and are decided as the in-memory engines' are. At the same
``seed``, ``nlist`` and ``nprobe`` the pairs are those of ``method="ann"``.

>>> import numpy as np
>>> from embetter_core.dedupe import find_duplicates
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(3000, 16)).astype(np.float32)
>>> X[7] = X[3] + 0.01
>>> report = find_duplicates(X, threshold=0.95, method="partitioned", memory_budget="1GiB")
>>> report.clusters, report.method, report.params["engine"]
([[3, 7]], 'ann', 'partitioned')
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from embetter_core.dedupe.budget import BudgetPlan, format_bytes, plan_budget
from embetter_core.dedupe.candidates import AnnCells, RecallSample, sample_priority
from embetter_core.dedupe.cells import _assign_cells, _train_on, _train_rows
from embetter_core.dedupe.checks import _load_normalised, _Prepared, _refuse_bad_rows
from embetter_core.dedupe.decide import _index_dtype
from embetter_core.dedupe.engines import _blas_limit, _overflow, _run
from embetter_core.dedupe.partition_files import (
    PartitionRef,
    check_free_space,
    make_work_folder,
    remove_work_folder,
    write_partitions,
)
from embetter_core.dedupe.partition_search import (
    CellUnit,
    UnitResult,
    search_unit,
    streamed_recall_sample,
)
from embetter_core.dedupe.settings import _SCREEN_SLACK, SearchSettings
from embetter_core.errors import DuplicateSearchError

_MAX_PROBE = 32


@dataclass(frozen=True)
class PartitionOptions:
    """How the partitioned engine runs.

    Attributes:
        work_dir: where the work folder goes (default: beside the HDF5 store, else the
            system's temporary folder). On a cluster: a path every worker can open.
        keep_files: leave the work folder (``report.params["work_folder"]``) in place.
        client: a ``distributed.Client``: each cell runs as one Dask task on its workers.
        max_in_flight: cells submitted and not yet collected (default: twice the client's
            threads, or the plan's).
        on_progress: called ``(cells done, cells total)`` as cells complete.
    """

    work_dir: str | Path | None = None
    keep_files: bool = False
    client: Any = None
    max_in_flight: int | None = None
    on_progress: Callable[[int, int], None] | None = field(default=None, compare=False)


class Searched(NamedTuple):
    """What the partitioned search hands ``find_duplicates`` to decide (its ``_assemble``
    arguments): the input (now said to be ann's), candidates in order, each row's best,
    the all-zero rows, the recall sample, the cells and the report's params."""

    prep: _Prepared
    lo: np.ndarray
    hi: np.ndarray
    scores: np.ndarray
    nearest: np.ndarray
    zero_rows: np.ndarray
    sample: RecallSample | None
    cells: AnnCells
    params: dict[str, Any]


def find_partitioned(
    prep: _Prepared,
    settings: SearchSettings,
    budget: int,
    options: PartitionOptions | None = None,
) -> Searched:
    """The partitioned search of ``prep``'s checked input: what ``find_duplicates``
    decides its report from (:class:`Searched`)."""
    options = options or PartitionOptions()
    n, matrix = prep.n, prep.matrix
    dims = int(matrix.shape[1]) if n else 0
    nlist = settings.cells(n)
    workers = _worker_threads(options.client, settings.threads)
    plan = plan_budget(
        budget,
        rows=n,
        dims=dims,
        nlist=nlist,
        nprobe=settings.nprobe,
        workers=workers,
        block=settings.block_size,
    )
    params = settings.report_params(prep.requested, nlist=nlist, engine="partitioned")
    params["memory_budget"] = format_bytes(budget)
    screen = np.float32(prep.floor - _SCREEN_SLACK)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    train_rows = _train_rows(n, nlist=nlist, seed=settings.seed)
    train, zero_rows = _checked_sample(prep, train_rows, plan.read_rows)
    with _blas_limit(settings.blas_threads, with_faiss=True):
        centroids = _train_on(train, nlist=nlist, seed=settings.seed)
        del train
        cells = _placed(prep, centroids, screen, settings.nprobe, plan.read_rows, settings.threads)
    timings["assign"] = time.perf_counter() - clock
    layout = _Layout.of(cells)
    folder = make_work_folder(matrix, work_dir=options.work_dir)
    try:
        clock = time.perf_counter()
        check_free_space(folder, n * dims * 4 + (16 << 20))
        priority = np.zeros(n if settings.recall_sample else 0, dtype=np.uint64)
        blocks = _unit_blocks(prep, plan.read_rows, priority, settings.seed)
        ref = write_partitions(folder, blocks, position=layout.position)
        timings["partition_write"] = time.perf_counter() - clock
        clock = time.perf_counter()
        units = _unit_plan(layout, plan, dims, settings.block_size)
        found = _search(ref, layout, units, prep.floor, settings, options)
        lo, hi, scores, nearest = _collect(found, n, settings.max_candidates)
        timings["search"] = time.perf_counter() - clock
        clock = time.perf_counter()
        sample = None
        if settings.recall_sample and n >= 2:
            sample = streamed_recall_sample(
                ref,
                layout.file_rows,
                layout.position,
                lo,
                hi,
                floor=prep.floor,
                size=settings.recall_sample,
                priority=priority,
                read_rows=plan.read_rows,
            )
            nearest[sample.rows] = sample.nearest
        timings["recall"] = time.perf_counter() - clock
    finally:
        if not options.keep_files:
            remove_work_folder(folder)
    params["cells_searched"] = len({c for c, _ in units})
    params["cells_split"] = len({c for c, span in units if span is not None})
    params["work_folder"] = str(folder) if options.keep_files else None
    sort = np.argsort(-scores, kind="stable")  # (lo, hi) come ascending: candidate order
    lo = lo[sort]  # one at a time: one more array of a kind held, not three
    hi = hi[sort]
    scores = scores[sort]
    del sort
    params["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return Searched(
        replace(prep, method="ann"),
        lo,
        hi,
        scores,
        nearest,
        zero_rows,
        sample,
        cells,
        params,
    )


def _worker_threads(client: Any, n_jobs: int) -> int:
    """Threads searching cells in one process: ``n_jobs`` here, the most threads of one
    worker on a cluster."""
    if client is None:
        return n_jobs
    threads = client.nthreads()
    return max(threads.values()) if threads else 1


def _blocks(prep: _Prepared, read_rows: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(start, unit rows, all-zero block rows)`` per block of ``read_rows`` input rows."""
    for start in range(0, prep.n, read_rows):
        chunk = np.asarray(prep.matrix[start : start + read_rows])
        unit, bad, zero = _load_normalised(chunk, len(chunk), np.arange(len(chunk)))
        if len(bad):
            _refuse_bad_rows(bad + start, prep.ids)
        yield start, unit, zero


def _checked_sample(
    prep: _Prepared, train_rows: np.ndarray, read_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first read: every row checked (NaN / inf refused, all of them named), the
    training sample (canonical rows ``train_rows``, ascending) and the all-zero input rows."""
    n = prep.n
    dims = int(prep.matrix.shape[1]) if n else 0
    in_train = np.zeros(n, dtype=bool)
    in_train[train_rows] = True
    train = np.empty((len(train_rows), dims), dtype=np.float32)
    bad_parts, zero_parts = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    for start in range(0, n, read_rows):
        chunk = np.asarray(prep.matrix[start : start + read_rows])
        unit, bad, zero = _load_normalised(chunk, len(chunk), np.arange(len(chunk)))
        bad_parts.append(bad + start)
        zero_parts.append(zero + start)
        canon = prep.rank[start : start + len(chunk)]
        take = np.flatnonzero(in_train[canon])
        train[np.searchsorted(train_rows, canon[take])] = unit[take]
    _refuse_bad_rows(np.concatenate(bad_parts), prep.ids)
    return train, np.concatenate(zero_parts)


def _placed(
    prep: _Prepared,
    centroids: np.ndarray,
    screen: np.float32,
    nprobe: int,
    read_rows: int,
    threads: int = 1,
) -> AnnCells:
    """The second read: each canonical row's cells, as the ann engine places them (int32
    where the rows fit: a row visits ``nprobe - 1`` cells or more)."""
    small = _index_dtype(max(prep.n, len(centroids)))
    primary = np.empty(prep.n, dtype=small)
    rows_parts, cells_parts = [np.empty(0, dtype=small)], [np.empty(0, dtype=small)]
    for start, unit, _zero in _blocks(prep, read_rows):
        canon = prep.rank[start : start + len(unit)]
        p, vr, vc = _assign_cells(
            unit, centroids, screen, nprobe=nprobe, max_probe=_MAX_PROBE, n_jobs=threads
        )
        primary[canon] = p
        rows_parts.append(canon[vr].astype(small))
        cells_parts.append(vc.astype(small))
    visit_rows, visit_cells = np.concatenate(rows_parts), np.concatenate(cells_parts)
    del rows_parts, cells_parts
    by_row = np.argsort(visit_rows, kind="stable")  # canonical order, as in memory
    return AnnCells(
        centroids,
        primary,
        visit_rows[by_row],
        visit_cells[by_row],
        nprobe=min(nprobe, len(centroids)),
        max_probe=_MAX_PROBE,
    )


@dataclass(frozen=True, eq=False)
class _Layout:
    """Where rows go in the partition file: grouped by cell, each cell's members in
    canonical order."""

    file_rows: np.ndarray  # each file row's canonical row
    position: np.ndarray  # each canonical row's file row
    m_bounds: np.ndarray  # cell c's members: file rows m_bounds[c]:m_bounds[c + 1]
    visitors: np.ndarray  # the visiting rows, by cell (canonical order within a cell)
    v_bounds: np.ndarray

    @classmethod
    def of(cls, cells: AnnCells) -> _Layout:
        nlist = len(cells.centroids)
        file_rows = np.argsort(cells.primary, kind="stable").astype(cells.primary.dtype)
        position = np.empty_like(file_rows)
        position[file_rows] = np.arange(len(file_rows))
        m_bounds = np.searchsorted(cells.primary[file_rows], np.arange(nlist + 1))
        by_cell = np.argsort(cells.visit_cells, kind="stable")
        visitors = cells.visit_rows[by_cell]
        v_bounds = np.searchsorted(cells.visit_cells[by_cell], np.arange(nlist + 1))
        return cls(file_rows, position, m_bounds, visitors, v_bounds)


def _unit_blocks(
    prep: _Prepared, read_rows: int, priority: np.ndarray, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The third read: ``(canonical rows, unit rows)`` per block, for the partition file;
    each row's recall-sample priority goes into ``priority`` (by canonical row) on the way,
    unless it is empty (no sample)."""
    for start, unit, _zero in _blocks(prep, read_rows):
        rows = prep.rank[start : start + len(unit)]
        if len(priority):
            priority[rows] = sample_priority(unit, seed)
        yield rows, unit


def _unit_plan(
    layout: _Layout, plan: BudgetPlan, dims: int, block: int
) -> list[tuple[int, tuple[int, int] | None]]:
    """``(cell, col_span)`` per unit: one per cell with rows; a cell over the plan's cell
    size in pieces of member columns (multiples of ``4 * block``), its rows then read as
    the tiles need them."""
    most = plan.cell_rows(dims)
    span = max(4 * block, (most // (4 * block)) * 4 * block)
    members = np.diff(layout.m_bounds)
    rows = members + np.diff(layout.v_bounds)
    out: list[tuple[int, tuple[int, int] | None]] = []
    for c in np.flatnonzero(members).tolist():
        m = int(members[c])
        if rows[c] <= most:
            out.append((c, None))
        else:
            out += [(c, (lo, min(lo + span, m))) for lo in range(0, m, span)]
    return out


def _unit(layout: _Layout, cell: int, col_span: tuple[int, int] | None) -> CellUnit:
    """The :class:`CellUnit` of ``cell`` (or of its members ``col_span``)."""
    start, stop = int(layout.m_bounds[cell]), int(layout.m_bounds[cell + 1])
    visitors = layout.visitors[layout.v_bounds[cell] : layout.v_bounds[cell + 1]]
    at = layout.position[visitors]
    by_place = np.argsort(at)  # visitors in file order: the gather reads forward
    return CellUnit(
        cell, start, layout.file_rows[start:stop], visitors[by_place], at[by_place], col_span
    )


def _search(
    ref: PartitionRef,
    layout: _Layout,
    units: list[tuple[int, tuple[int, int] | None]],
    floor: float,
    settings: SearchSettings,
    options: PartitionOptions,
) -> Iterator[UnitResult]:
    """Every unit searched, results yielded as they come (so that the driver holds only
    what it keeps): on ``settings.threads`` threads, or as Dask tasks on
    ``options.client``; progress reported as units complete."""
    total = len(units)
    progress = options.on_progress or (lambda done, total: None)
    progress(0, total)
    kwargs = {"floor": floor, "block": settings.block_size, "blas_threads": settings.blas_threads}
    if options.client is not None:
        in_flight = options.max_in_flight or 2 * sum(options.client.nthreads().values()) or 2
        yield from _search_on_dask(options.client, ref, layout, units, kwargs, in_flight, progress)
        return
    # one limit around the whole pool (it is process-wide), not one per cell
    kwargs["blas_threads"] = None
    tasks = (lambda u=u: search_unit(ref, _unit(layout, *u), **kwargs) for u in units)
    with _blas_limit(settings.blas_threads):
        for done, result in enumerate(_run(tasks, settings.threads), start=1):
            yield result
            progress(done, total)


def _search_on_dask(
    client: Any,
    ref: PartitionRef,
    layout: _Layout,
    units: list[tuple[int, tuple[int, int] | None]],
    kwargs: dict[str, Any],
    in_flight: int,
    progress: Callable[[int, int], None],
) -> Iterator[UnitResult]:
    """One Dask task per unit, at most ``in_flight`` submitted and not collected; a unit
    that fails for good (its worker lost more often than Dask retries) fails the search,
    naming the cells, never a partial result."""
    from distributed import as_completed

    total = len(units)
    todo = iter(enumerate(units))
    names: dict[str, str] = {}

    def submit(i: int, unit: tuple[int, tuple[int, int] | None]) -> Any:
        cell = _unit(layout, *unit)
        fut = client.submit(search_unit, ref, cell, key=f"dedupe-cell-{ref.path}-{i}", **kwargs)
        names[fut.key] = cell.name
        return fut

    running = as_completed([submit(i, u) for i, u in islice(todo, in_flight)])
    done = 0
    lost: list[str] = []
    for fut in running:
        try:
            result = fut.result()
        except Exception as exc:  # KilledWorker, or the task's own error
            lost.append(f"{names[fut.key]} ({type(exc).__name__}: {exc})")
            continue
        finally:
            fut.release()
        done += 1
        yield result
        progress(done, total)
        for i, unit in islice(todo, 1):
            running.add(submit(i, unit))
    if lost or done != total:
        raise DuplicateSearchError(
            f"the partitioned search lost {total - done} of {total} cells on the Dask cluster: "
            f"{'; '.join(lost[:10])}{' ...' if len(lost) > 10 else ''}; no report was made "
            f"(rerun; the store is untouched)"
        )


def _collect(
    results: Iterable[UnitResult], n: int, limit: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The units' pairs (each once, canonical ``lo < hi``, ascending), their scores and each
    row's best score. A pair found in two units was scored from the same two rows, so
    either score is its score."""
    nearest = np.full(n, -np.inf, dtype=np.float32)
    count = 0
    keys_parts, score_parts = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.float32)]
    for res in results:
        np.maximum.at(nearest, res.rows, res.best)
        count += len(res.lo)
        if count > limit:
            raise _overflow(limit)
        keys_parts.append(res.lo.astype(np.int64) * n + res.hi)
        score_parts.append(res.scores)
    # one array of each at a time (10M pairs at 5M rows): not np.unique's several copies
    keys = np.concatenate(keys_parts)
    keys_parts.clear()
    order = np.argsort(keys)
    keys = keys[order]
    scores = np.concatenate(score_parts)[order]
    score_parts.clear()
    del order
    first = np.empty(len(keys), dtype=bool)
    first[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    keys, scores = keys[first], scores[first]
    del first
    n = max(n, 1)
    return keys // n, keys % n, scores, nearest
