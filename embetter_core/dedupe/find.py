"""Near-duplicate search over embeddings, and the :class:`DuplicateReport` it returns.

``find_duplicates(embeddings, ids, threshold)`` finds every pair of rows whose cosine
similarity is at least ``threshold`` and groups them into clusters (connected components).
Then it decides which rows to remove: within a cluster, rows are taken in keep order
(``keep=``, a :class:`~embetter_core.keep.KeepRule`: by default ``"first"``, input order) and
each is kept unless it is a near-duplicate (a pair at or above the threshold) of a row already
kept. So a row is removed only for a kept row it directly duplicates, never through a chain
``a ~ b ~ c`` whose ends are far apart; a cluster may keep several rows.

Two engines, both complete (no cap on neighbours, so a cluster of any size is found whole):

- ``"exact"``: blocked matrix products over the upper triangle of the normalised float32
  matrix. Memory: one normalised float32 copy of the input plus one tile per worker (16 MB at
  the default ``block_size``), never the n x n matrix.
- ``"ann"``: cluster-blocked exact search. faiss k-means splits the rows into cells; every
  row is compared, with the same blocked products, to the members of its ``nprobe`` nearest
  cells and of any further cell (up to 32) whose centroid is itself above the floor, so a
  dense cluster that k-means cuts into many cells is still searched whole. A pair is missed
  only when neither row visits the other's cell. The report carries a recall estimate from
  an exact check of a stratified sample of rows.

``"auto"`` runs exact up to :data:`AUTO_EXACT_MAX_ROWS` rows and ann above (the crossover
measured by ``python -m benchmarks.dedupe``).

Every candidate pair down to ``floor`` (below the threshold) is kept with its score in
``report.candidates`` (:class:`Candidates`), so ``report.rethreshold(t)`` moves the threshold
either way without touching the vectors, ``report.rekeep(rule)`` applies another keep rule,
and ``DuplicateReport.from_candidates`` decides a report from candidates however they were
found.

Pairs, scores and clusters do not depend on the row order: rows are searched in the order of
their ids, and each candidate's score is recomputed from its two rows alone. Which rows are
kept depends on the keep rule, and so, for ``first`` and ``last`` and for ties, on the input
order.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar, Unpack

import numpy as np

from embetter_core.dedupe.budget import budget_bytes, fits_in_memory
from embetter_core.dedupe.candidates import AnnCells, Candidates, RecallSample
from embetter_core.dedupe.cells import _ann_search, _recall_sample
from embetter_core.dedupe.checks import (
    _identical_rows,
    _load_normalised,
    _prepare,
    _Prepared,
    _refuse_bad_rows,
)
from embetter_core.dedupe.decide import _groups_by_key
from embetter_core.dedupe.engines import _blas_limit, _exact_search, _Found, _rescore
from embetter_core.dedupe.floors import ReadUnitRows, search_fitting
from embetter_core.dedupe.keep import KeepRule
from embetter_core.dedupe.partitioned import PartitionOptions, Searched, find_partitioned
from embetter_core.dedupe.results import DuplicateReport
from embetter_core.dedupe.settings import (
    _SCREEN_SLACK,
    DEFAULT_THRESHOLD,
    SearchOptions,
    SearchSettings,
)

T = TypeVar("T")


def find_duplicates(
    embeddings: Any,
    ids: Sequence[Hashable] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    method: str = "auto",
    texts: Sequence[str] | Mapping[Hashable, str] | None = None,
    *,
    keep: str | KeepRule | None = "first",
    keep_values: Sequence[Any] | Mapping[Hashable, Any] | None = None,
    floor: float | None = None,
    settings: SearchSettings | None = None,
    reference: Any = None,
    reference_ids: Sequence[Hashable] | None = None,
    memory_budget: int | str | None = None,
    partitions: PartitionOptions | None = None,
    **search: Unpack[SearchOptions],
) -> DuplicateReport:
    """Find near-duplicate rows of ``embeddings`` by cosine similarity.

    Args:
        embeddings: ``(n, d)`` array-like, or an ``h5py.Dataset`` (read in blocks).
        ids: one hashable id per row (default: row numbers); must be unique.
        threshold: cosine similarity at or above which two rows are duplicates, in (0, 1].
        method: ``"exact"``, ``"ann"``, ``"partitioned"`` (the ann search out of core, cell
            by cell: :mod:`~embetter_core.dedupe.partitioned`) or ``"auto"`` (exact up to
            ``AUTO_EXACT_MAX_ROWS``, partitioned when the vectors do not fit
            ``memory_budget``, ann otherwise).
        texts: the rows' texts (a sequence in row order, or a mapping id -> text); identical
            texts form the exact-duplicate groups. Without it, bitwise identical vectors do.
        keep: which rows of a cluster are kept: ``"first"`` (input order), ``"last"``,
            ``"longest"``, ``"shortest"`` (text length) or ``"column:NAME[:desc|asc]"``
            (highest / lowest value), or a :class:`~embetter_core.dedupe.keep.KeepRule`. Rows are
            taken in that order (ties in input order); each is kept unless it is a
            near-duplicate of a row already kept.
        keep_values: the rule's values, one per row (input order) or a mapping id -> value:
            texts or lengths for ``longest`` / ``shortest`` (default: ``texts``), numbers or
            dates for ``column:`` (see :func:`embetter_core.corpus.keep_values_for` to read
            them from a corpus file).
        floor: keep candidates down to this score for ``rethreshold`` (default
            ``max(threshold - 0.1, threshold / 2)``). When the default floor would hold
            more than ``max_candidates`` pairs it is raised toward the threshold, with a
            logged warning (``report.floor`` says which); a floor given here is kept, and
            the error names the floor that would fit.
        settings: how the search runs (:class:`SearchSettings`); its fields may also be
            given as keyword arguments (``nprobe=8``), which win over ``settings``:
            ``nprobe``, ``nlist``, ``recall_sample``, ``n_jobs``, ``blas_threads``,
            ``block_size``, ``max_candidates``, ``seed``.
        memory_budget: partitioned (and auto): the bytes the search may hold, e.g.
            ``"2GiB"`` (default: a quarter of the machine's memory).
        partitions: partitioned: work folder, Dask client, progress
            (:class:`~embetter_core.dedupe.partitioned.PartitionOptions`).
        reference, reference_ids: deprecated: call :func:`find_reference_duplicates`
            (``find_duplicates(X, reference=R)`` still returns its ``ReferenceMatches``,
            with a ``DeprecationWarning``).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> vecs = rng.normal(size=(100, 16)).astype(np.float32)
    >>> vecs[7] = vecs[3] + 0.01
    >>> report = find_duplicates(vecs, threshold=0.95)
    >>> report.clusters
    [[3, 7]]
    >>> report  # doctest: +NORMALIZE_WHITESPACE
    DuplicateReport(n=100, method='exact', threshold=0.95, pairs=1, clusters=1, removed=1,
                    recall_estimate=1)
    """
    settings = SearchSettings.of(settings, search)
    if reference is not None:
        warnings.warn(
            "find_duplicates(reference=...) is deprecated: call "
            "embetter_core.dedupe.find_reference_duplicates(embeddings, reference, ...), which "
            "returns the same ReferenceMatches",
            DeprecationWarning,
            stacklevel=2,
        )
        from embetter_core.dedupe.reference import find_reference_duplicates

        matches = find_reference_duplicates(
            embeddings,
            reference,
            ids=ids,
            reference_ids=reference_ids,
            threshold=threshold,
            method=method,
            settings=settings,
        )
        return matches  # type: ignore[return-value]  # the deprecated form, until removed
    prep = _prepare(embeddings, ids, threshold, floor, method, texts, keep, keep_values)
    if prep.method != "exact" and method in ("auto", "partitioned"):
        budget = budget_bytes(memory_budget)
        dims = int(prep.matrix.shape[1]) if prep.n else 0
        if method == "partitioned" or not fits_in_memory(prep.n, dims, budget):
            prep = replace(prep, method="partitioned")
            return _assemble(*_partitioned_fitting(prep, settings, budget, partitions))
    X, bad_rows, zero_rows = _load_normalised(prep.matrix, prep.n, prep.rank)
    _refuse_bad_rows(bad_rows, prep.ids)
    n = prep.n
    params = settings.report_params(method)
    sample = None
    with _blas_limit(settings.blas_threads, with_faiss=prep.method == "ann"):
        if prep.method == "ann" and n >= 2:
            params["nlist"] = settings.cells(n)

        def search(floor: float) -> _Found:
            screen = np.float32(floor - _SCREEN_SLACK)
            if n < 2:
                return _Found.empty(n)
            if prep.method == "exact":
                return _exact_search(
                    X,
                    screen,
                    block=settings.block_size,
                    n_jobs=settings.threads,
                    limit=settings.max_candidates,
                )
            return _ann_search(X, screen, nlist=params["nlist"], settings=settings)

        found, floor = _at_fitting_floor(search, X, prep, settings)
        if floor != prep.floor:
            params["floor_raised_from"] = prep.floor
            prep = replace(prep, floor=floor)
        lo, hi, nearest = found.lo, found.hi, found.nearest  # canonical rows
        scores = _rescore(X, lo, hi)
        keep_pair = scores >= floor
        lo, hi, scores = lo[keep_pair], hi[keep_pair], scores[keep_pair]
        if prep.method == "ann" and n >= 2:
            sample = _recall_sample(
                X,
                lo,
                hi,
                floor=floor,
                size=settings.recall_sample,
                seed=settings.seed,
                block=settings.block_size,
            )
            nearest[sample.rows] = sample.nearest  # the sampled rows' exact neighbours
    sort = np.lexsort((hi, lo, -scores))  # candidate order
    return _assemble(
        prep, lo[sort], hi[sort], scores[sort], nearest, zero_rows, sample, found.cells, params
    )


def _partitioned_fitting(
    prep: _Prepared, settings: SearchSettings, budget: int, partitions: PartitionOptions | None
) -> Searched:
    """The partitioned search, its default floor raised toward the threshold when it would
    overflow ``max_candidates``, as the in-memory engines' is (:func:`search_fitting`; the
    rows the estimate reads come from the input, block by block)."""
    searched, floor = _at_fitting_floor(
        lambda f: find_partitioned(replace(prep, floor=f), settings, budget, partitions),
        ReadUnitRows(prep.matrix, prep.n),
        prep,
        settings,
    )
    if floor != prep.floor:
        searched.params["floor_raised_from"] = prep.floor
    return searched


def _at_fitting_floor(
    search: Callable[[float], T],
    rows: Any,
    prep: _Prepared,
    settings: SearchSettings,
) -> tuple[T, float]:
    """``search`` at ``prep``'s floor, a default one raised when it would overflow
    (:func:`search_fitting` over the unit ``rows``), and the floor it ran at."""
    found, floor = search_fitting(
        search,
        rows,
        floor=prep.floor,
        threshold=prep.threshold,
        given=prep.floor_given,
        limit=settings.max_candidates,
        seed=settings.seed,
    )
    return found, floor


def _assemble(
    prep: _Prepared,
    lo: np.ndarray,
    hi: np.ndarray,
    scores: np.ndarray,
    nearest: np.ndarray,
    zero_rows: np.ndarray,
    sample: RecallSample | None,
    cells: AnnCells | None,
    params: dict[str, Any],
    before_decide: Callable[[Candidates, np.ndarray], object] | None = None,
) -> DuplicateReport:
    """The report of a search: its candidates (canonical rows ``lo < hi`` in candidate
    order, score descending), each canonical row's ``nearest`` (-inf: none), the all-zero
    input rows, ann's recall ``sample`` and ``cells`` (canonical rows), decided with
    ``prep``'s threshold and keep rule. ``before_decide(candidates, nearest)`` (input order)
    is called once they are made, before the decision."""
    rank, order, ids = prep.rank, prep.order, prep.ids
    nearest[~np.isfinite(nearest)] = np.nan
    nearest[rank[zero_rows]] = np.nan
    if _ascending(order):  # ids in sorted order (the default ids): no copies to renumber
        candidates = Candidates(lo, hi, scores, rank, prep.floor, sample, cells)
    else:
        candidates = Candidates(
            a=order[lo],
            b=order[hi],
            scores=scores,
            rank=rank,
            floor=prep.floor,
            recall=None if sample is None else sample.renumbered(order),
            cells=None if cells is None else cells.renumbered(order),
        )
    nearest = nearest[rank]
    if before_decide is not None:
        before_decide(candidates, nearest)
    if prep.texts is not None:
        exact_groups = _groups_by_key(prep.texts, ids, rank)
    else:
        exact_groups = _identical_rows(prep.matrix, candidates, ids)
    return DuplicateReport._decided_from(
        ids,
        candidates,
        prep.threshold,
        prep.keep,
        prep.keep_rank,
        method=prep.method,
        nearest=nearest,
        exact_groups=exact_groups,
        zero_vector_ids=[ids[r] for r in sorted(zero_rows.tolist(), key=lambda r: rank[r])],
        params=params,
    )


def _ascending(order: np.ndarray) -> bool:
    """Whether the permutation ``order`` is the identity."""
    return bool(len(order) < 2 or (order[1:] > order[:-1]).all())
