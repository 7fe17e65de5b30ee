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

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from embetter_core.dedupe.keep import KeepRule

if TYPE_CHECKING:
    from embetter_core.dedupe.reference import ReferenceMatches
from embetter_core.dedupe.candidates import Candidates
from embetter_core.dedupe.cells import _ann_search, _recall_sample
from embetter_core.dedupe.checks import (
    _canonical_order,
    _check_ids,
    _check_params,
    _check_texts,
    _identical_rows,
    _input_shape,
    _keep_setup,
    _load_normalised,
    _refuse_bad_rows,
)
from embetter_core.dedupe.decide import _groups_by_key
from embetter_core.dedupe.engines import _blas_limit, _exact_search, _Found, _rescore
from embetter_core.dedupe.results import DuplicateReport
from embetter_core.dedupe.settings import _SCREEN_SLACK, AUTO_EXACT_MAX_ROWS, DEFAULT_THRESHOLD


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
    nprobe: int = 4,
    nlist: int | None = None,
    recall_sample: int = 500,
    n_jobs: int = 1,
    blas_threads: int | None = 1,
    block_size: int = 1024,
    max_candidates: int = 50_000_000,
    seed: int = 0,
    reference: Any = None,
    reference_ids: Sequence[Hashable] | None = None,
) -> DuplicateReport | ReferenceMatches:
    """Find near-duplicate rows of ``embeddings`` by cosine similarity.

    Args:
        embeddings: ``(n, d)`` array-like, or an ``h5py.Dataset`` (read in blocks).
        ids: one hashable id per row (default: row numbers); must be unique.
        threshold: cosine similarity at or above which two rows are duplicates, in (0, 1].
        method: ``"exact"``, ``"ann"`` or ``"auto"`` (exact up to ``AUTO_EXACT_MAX_ROWS``).
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
            ``max(threshold - 0.1, threshold / 2)``).
        nprobe: ann only: cells each row is compared with.
        nlist: ann only: number of k-means cells (default ``sqrt(nprobe * n)``).
        recall_sample: ann only: rows checked exactly to estimate recall.
        n_jobs: worker threads over blocks.
        blas_threads: BLAS threads per worker during the search (None leaves it as is).
        block_size: rows per tile side (a tile is ``block_size x 4 * block_size`` floats).
        max_candidates: raise instead of holding more candidate pairs than this.
        seed: seed for the ann k-means and the recall sample.
        reference: another corpus's embeddings (array, h5py dataset, EmbeddingStore or .h5
            path): return the :class:`~embetter_core.dedupe.reference.ReferenceMatches` of each row
            against it (every reference row at or above ``threshold``) instead of a report.
        reference_ids: the reference rows' ids (default: the store's ids, else row numbers).

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
    if reference is not None:
        from embetter_core.dedupe.reference import find_reference_duplicates

        return find_reference_duplicates(
            embeddings,
            reference,
            ids=ids,
            reference_ids=reference_ids,
            threshold=threshold,
            method=method,
            nprobe=nprobe,
            nlist=nlist,
            recall_sample=recall_sample,
            n_jobs=n_jobs,
            blas_threads=blas_threads,
            block_size=block_size,
            max_candidates=max_candidates,
            seed=seed,
        )
    threshold, floor = _check_params(threshold, floor, method, nprobe, n_jobs, block_size)
    matrix, n = _input_shape(embeddings)
    ids_list = _check_ids(ids, n)
    text_list = _check_texts(texts, ids_list)
    rule, keep_values, keep_rank = _keep_setup(keep, keep_values, text_list, ids_list)
    rank, order = _canonical_order(ids_list)

    X, bad_rows, zero_rows = _load_normalised(matrix, n, rank)
    _refuse_bad_rows(bad_rows, ids_list)

    chosen = method
    if method == "auto":
        chosen = "exact" if n <= AUTO_EXACT_MAX_ROWS else "ann"
    params = {
        "requested_method": method,
        "nprobe": nprobe,
        "nlist": nlist,
        "recall_sample": recall_sample,
        "n_jobs": n_jobs,
        "blas_threads": blas_threads,
        "block_size": block_size,
        "seed": seed,
    }
    screen = np.float32(floor - _SCREEN_SLACK)
    sample = None
    with _blas_limit(blas_threads, with_faiss=chosen == "ann"):
        if n < 2:
            found = _Found.empty(n)
        elif chosen == "exact":
            found = _exact_search(X, screen, block=block_size, n_jobs=n_jobs, limit=max_candidates)
        else:
            cells = nlist or max(1, int(round(math.sqrt(nprobe * n))))
            params["nlist"] = cells = min(cells, max(1, n // 4))
            found = _ann_search(
                X,
                screen,
                nlist=cells,
                nprobe=nprobe,
                block=block_size,
                n_jobs=n_jobs,
                limit=max_candidates,
                seed=seed,
            )
        lo, hi, nearest_c = found.lo, found.hi, found.nearest  # canonical rows
        scores = _rescore(X, lo, hi)
        keep = scores >= floor
        lo, hi, scores = lo[keep], hi[keep], scores[keep]
        if chosen == "ann" and n >= 2:
            sample = _recall_sample(
                X, lo, hi, floor=floor, size=recall_sample, seed=seed, block=block_size
            )
            # the sampled rows' exact nearest neighbours are known now
            nearest_c[sample.rows] = sample.nearest

    nearest_c[~np.isfinite(nearest_c)] = np.nan
    nearest_c[rank[zero_rows]] = np.nan

    # candidates as input rows, canonical pair order (rank a < rank b), sorted by score
    sort = np.lexsort((hi, lo, -scores))
    candidates = Candidates(
        a=order[lo[sort]],
        b=order[hi[sort]],
        scores=scores[sort],
        rank=rank,
        floor=floor,
        recall=None if sample is None else sample.renumbered(order),
        cells=None if found.cells is None else found.cells.renumbered(order),
    )
    if text_list is not None:
        exact_groups = _groups_by_key(text_list, ids_list, rank)
    else:
        exact_groups = _identical_rows(matrix, candidates, ids_list)
    return DuplicateReport._decided_from(
        ids_list,
        candidates,
        threshold,
        rule,
        keep_rank,
        method=chosen,
        nearest=nearest_c[rank],
        exact_groups=exact_groups,
        zero_vector_ids=[ids_list[r] for r in sorted(zero_rows.tolist(), key=lambda r: rank[r])],
        params=params,
    )
