"""Near-duplicates of a corpus's rows in another corpus, the reference: decontamination.

Which rows of a test set near-duplicate a row of the training set? Which rows of a new batch
were already in last month's? :func:`find_reference_duplicates` (also reached as
``find_duplicates(X, reference=R)``) returns :class:`ReferenceMatches`: every pair (row,
reference row) whose cosine similarity is at least the threshold. Nothing is capped: a row
that matches 500 reference rows lists all 500.

Engines:

- ``"exact"``: blocked matrix products of the rows against the reference, the kernel of the
  exact dedupe engine; complete.
- ``"ann"``: faiss k-means splits the reference into cells; each row is compared, exactly and
  with no cap, with every member of its ``nprobe`` nearest cells and of any further cell (up
  to 32) whose centroid is itself above the threshold. A match is missed only when its
  reference row lies in a cell the row did not visit. Completeness is measured, not
  promised: ``recall_estimate`` comes from an exact check of a stratified sample of rows
  (rows with a match and rows without) against the whole reference. Use ``"exact"`` where a
  missed match is not acceptable.
- ``"auto"``: exact up to :data:`AUTO_EXACT_MAX_PAIRS` comparisons (rows x reference rows,
  the work of the exact dedupe engine at its own crossover), ann above.

The reference may be a store from an earlier run (an ``.h5`` path or an
:class:`~embetter_core.store.EmbeddingStore`): with ``fingerprint=`` it is refused, both
encoders named, when another encoder wrote it, and a reference of another dimension is
refused whatever its source.

>>> import numpy as np
>>> test = np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
>>> train = np.array([[0.99, 0.1], [1, 0], [-1, 0]], dtype=np.float32)
>>> matches = find_reference_duplicates(
...     test, train, ids=["t1", "t2", "t3"], reference_ids=["a", "b", "c"], threshold=0.95
... )
>>> matches.pairs
[('t1', 'b', 1.0), ('t1', 'a', 0.994937)]
>>> matches.matched_ids
['t1']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from embetter_core.dedupe.candidates import (
    RecallSample,
    check_parallel,
    sample_priority,
    stratified_draw,
)
from embetter_core.dedupe.cells import _assign_cells, _train_cells
from embetter_core.dedupe.checks import (
    _canonical_order,
    _check_ids,
    _check_params,
    _input_shape,
    _load_normalised,
    _refuse_bad_rows,
)
from embetter_core.dedupe.engines import (
    _blas_limit,
    _cross_search,
    _cross_tiles,
    _in_sorted,
    _rescore_pairs,
    _run,
)
from embetter_core.dedupe.settings import (
    _SCREEN_SLACK,
    AUTO_EXACT_MAX_ROWS,
    DEFAULT_THRESHOLD,
    SearchOptions,
    SearchSettings,
)
from embetter_core.errors import DuplicateSearchError, FingerprintMismatchError
from embetter_core.files import atomic_path

#: ``method="auto"`` runs exact up to this many row x reference comparisons: the work of
#: the exact dedupe engine at ``AUTO_EXACT_MAX_ROWS`` rows, its crossover with ann.
AUTO_EXACT_MAX_PAIRS = AUTO_EXACT_MAX_ROWS * (AUTO_EXACT_MAX_ROWS - 1) // 2
#: The file name the report writes the matches to.
REFERENCE_PAIRS_CSV = "reference_pairs.csv"


@dataclass(frozen=True, eq=False, repr=False)
class ReferenceMatches:
    """Every (row, reference row) pair at or above ``threshold``, highest score first.

    Attributes:
        ids: per match, the row's id.
        reference_ids: per match, the reference row's id.
        scores: per match, the two rows' cosine (float32). Ties are ordered by row id, then
            by reference id. Treat the array as read-only.
        threshold: the similarity a match needs.
        method: the engine that ran, ``"exact"`` or ``"ann"``.
        row_ids: the ids of all searched rows, input order.
        nearest: per searched row (input order), its best similarity to a reference row
            (float32); NaN for zero vectors and for an empty reference. For ``"ann"`` it is
            the best among the reference rows it was compared with.
        reference_rows: the number of reference rows.
        recall_estimate: share of the matches that were found: 1.0 for exact; for ann from
            an exact check of a row sample (NaN when the sample holds no match).
        zero_vector_ids: ids of all-zero rows; they match nothing.
        params: the search settings, and ``reference`` (where the reference came from).

    >>> import numpy as np
    >>> m = find_reference_duplicates(np.eye(3), np.eye(3)[:2], ids=list("xyz"), threshold=0.9)
    >>> m.to_frame().to_dict("list")
    {'id': ['x', 'y'], 'reference_id': [0, 1], 'score': [1.0, 1.0]}
    >>> m.summary()["rows_matched"], m.nearest.tolist()
    (2, [1.0, 1.0, 0.0])
    """

    ids: list[Any]
    reference_ids: list[Any]
    scores: np.ndarray
    threshold: float
    method: str
    row_ids: list[Any]
    nearest: np.ndarray
    reference_rows: int
    recall_estimate: float = 1.0
    zero_vector_ids: list[Any] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_parallel("match", ids=self.ids, reference_ids=self.reference_ids, scores=self.scores)

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        return (
            f"ReferenceMatches(rows={len(self.row_ids)}, reference_rows={self.reference_rows}, "
            f"method={self.method!r}, threshold={self.threshold}, matches={len(self)}, "
            f"rows_matched={len(self.matched_ids)}, recall_estimate={self.recall_estimate:.4g})"
        )

    @property
    def pairs(self) -> list[tuple[Any, Any, float]]:
        """The matches as ``(id, reference_id, score)``, score rounded to 6 decimals."""
        scores = np.round(self.scores.astype(np.float64), 6).tolist()
        return list(zip(self.ids, self.reference_ids, scores, strict=True))

    @property
    def matched_ids(self) -> list[Any]:
        """The ids of the rows with at least one match, input order."""
        hit = set(self.ids)
        return [i for i in self.row_ids if i in hit]

    def to_frame(self) -> Any:
        """The matches as a pandas DataFrame: ``id``, ``reference_id``, ``score``."""
        import pandas as pd

        return pd.DataFrame(
            {
                "id": pd.Series(self.ids, dtype=object),
                "reference_id": pd.Series(self.reference_ids, dtype=object),
                "score": pd.Series(np.round(self.scores.astype(np.float64), 6), dtype="float64"),
            }
        )

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_frame` as CSV to ``path`` (atomically); returns the path.

        >>> import numpy as np, tempfile, pathlib
        >>> m = find_reference_duplicates(np.eye(2), np.eye(2), threshold=0.9)
        >>> out = m.write_csv(pathlib.Path(tempfile.mkdtemp()) / REFERENCE_PAIRS_CSV)
        >>> out.read_text().splitlines()
        ['id,reference_id,score', '0,0,1.0', '1,1,1.0']
        """
        with atomic_path(path) as tmp:
            self.to_frame().to_csv(tmp, index=False)
        return Path(path)

    def summary(self) -> dict[str, Any]:
        """The headline counts, for logs and report pages."""
        return {
            "rows": len(self.row_ids),
            "reference_rows": self.reference_rows,
            "method": self.method,
            "threshold": self.threshold,
            "matches": len(self),
            "rows_matched": len(self.matched_ids),
            "reference_rows_matched": len(set(self.reference_ids)),
            "zero_vectors": len(self.zero_vector_ids),
            "recall_estimate": self.recall_estimate,
        }


# ----------------------------------------------------------------------------------------
# The entry point
# ----------------------------------------------------------------------------------------
def find_reference_duplicates(
    embeddings: Any,
    reference: Any,
    ids: Sequence[Hashable] | None = None,
    reference_ids: Sequence[Hashable] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    method: str = "auto",
    *,
    fingerprint: str | None = None,
    settings: SearchSettings | None = None,
    **search: Unpack[SearchOptions],
) -> ReferenceMatches:
    """Every pair (row of ``embeddings``, row of ``reference``) with cosine similarity at
    least ``threshold``.

    Args:
        embeddings: ``(n, d)`` array-like or ``h5py.Dataset``: the rows to check.
        reference: ``(m, d)`` array-like or ``h5py.Dataset``, an
            :class:`~embetter_core.store.EmbeddingStore`, or the path of a store's ``.h5``.
        ids: one unique id per row (default: row numbers).
        reference_ids: one unique id per reference row (default: a store's ids, else row
            numbers).
        threshold: the similarity a match needs, in (0, 1].
        method: ``"exact"``, ``"ann"`` or ``"auto"`` (exact up to
            :data:`AUTO_EXACT_MAX_PAIRS` comparisons).
        fingerprint: the encoder fingerprint of ``embeddings``; a reference store written
            by another encoder is refused (:class:`FingerprintMismatchError`).
        settings: the search settings (:class:`~embetter_core.dedupe.SearchSettings`, or
            its fields as keyword arguments), as for
            :func:`~embetter_core.dedupe.find_duplicates` (``nlist`` cells are made over the
            reference; the recall sample is of rows).

    Raises:
        DuplicateSearchError: bad parameters, ids, non-finite rows, or a reference of
            another dimension.
        FingerprintMismatchError: a reference store written by another encoder.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(500, 16)).astype(np.float32)
    >>> test = rng.normal(size=(40, 16)).astype(np.float32)
    >>> test[3] = train[17] + 0.01
    >>> find_reference_duplicates(test, train, threshold=0.95).pairs
    [(3, 17, 0.999969)]
    """
    settings = SearchSettings.of(settings, search)
    threshold, _ = _check_params(threshold, threshold, method)
    source, ref_matrix, store_ids, close = _open_reference(reference, fingerprint)
    try:
        matrix, n = _input_shape(embeddings)
        try:
            ref_matrix, m = _input_shape(ref_matrix)
        except DuplicateSearchError as err:
            raise DuplicateSearchError(f"{source}: {err}") from None
        d, dr = (int(matrix.shape[1]) if n else None), (int(ref_matrix.shape[1]) if m else None)
        if d is not None and dr is not None and d != dr:
            raise DuplicateSearchError(
                f"{source} has {dr} dimensions but the embeddings have {d}: the two were "
                "made by different encoders; embed the reference with this run's encoder"
            )
        ids_list = _check_ids(ids, n)
        if reference_ids is None:
            reference_ids = store_ids
        try:
            ref_list = _check_ids(reference_ids, m)
        except DuplicateSearchError as err:
            raise DuplicateSearchError(f"reference_ids: {err}") from None
        Q, bad, zero = _load_normalised(matrix, n, np.arange(n))
        _refuse_bad_rows(bad, ids_list, "embedding rows")
        R, bad_r, _ = _load_normalised(ref_matrix, m, np.arange(m))
        _refuse_bad_rows(bad_r, ref_list, f"rows of {source}")
    finally:
        close()

    chosen = "ann" if method == "partitioned" else method  # a reference search runs in memory
    if method == "auto":
        chosen = "exact" if n * m <= AUTO_EXACT_MAX_PAIRS else "ann"
    params = settings.report_params(method, reference=source)
    block = settings.block_size
    screen = np.float32(threshold - _SCREEN_SLACK)
    sample = None
    with _blas_limit(settings.blas_threads, with_faiss=chosen == "ann"):
        if n == 0 or m == 0:
            nearest = np.full(n, -np.inf, dtype=np.float32)
            qa = rb = np.empty(0, dtype=np.int64)
        elif chosen == "exact":
            nearest, _, qa, rb = _cross_search(
                Q, R, screen, block=block, n_jobs=settings.threads, limit=settings.max_candidates
            )
        else:
            params["nlist"] = cells = settings.cells(m)
            nearest, qa, rb = _ann_cross(Q, R, screen, nlist=cells, settings=settings)
        scores = _rescore_pairs(Q, R, qa, rb)
        keep = scores >= np.float32(threshold)
        qa, rb, scores = qa[keep], rb[keep], scores[keep]
        if chosen == "ann" and n and m:
            size, seed = settings.recall_sample, settings.seed
            sample = _cross_recall_sample(
                Q, R, qa, rb, threshold=threshold, size=size, seed=seed, block=block
            )
            nearest[sample.rows] = sample.nearest

    nearest[~np.isfinite(nearest)] = np.nan
    nearest[zero] = np.nan
    rank_q, _ = _canonical_order(ids_list)
    rank_r, _ = _canonical_order(ref_list)
    sort = np.lexsort((rank_r[rb], rank_q[qa], -scores))
    qa, rb = qa[sort], rb[sort]
    return ReferenceMatches(
        ids=[ids_list[i] for i in qa.tolist()],
        reference_ids=[ref_list[j] for j in rb.tolist()],
        scores=scores[sort],
        threshold=threshold,
        method=chosen,
        row_ids=ids_list,
        nearest=nearest,
        reference_rows=m,
        recall_estimate=1.0 if sample is None else sample.estimate(threshold),
        zero_vector_ids=[ids_list[r] for r in sorted(zero.tolist(), key=lambda r: rank_q[r])],
        params=params,
    )


def check_reference_store(
    path: str | os.PathLike[str], *, fingerprint: str | None = None, dim: int | None = None
) -> int:
    """Check, before any encoding, that the store at ``path`` can serve as a reference for
    embeddings of encoder ``fingerprint`` and dimension ``dim``; returns its row count.

    >>> import tempfile, pathlib, numpy as np
    >>> from embetter_core.store import EmbeddingStore
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.h5"
    >>> with EmbeddingStore.create(path, n=2, dim=3, fingerprint="enc-a") as w:
    ...     w.write(0, ["a", "b"], np.ones((2, 3)))
    >>> check_reference_store(path, fingerprint="enc-a", dim=3)
    2
    >>> check_reference_store(path, fingerprint="enc-b")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    embetter_core.errors.FingerprintMismatchError: reference store .../train.h5 was embedded \
by encoder 'enc-a', but this run's encoder is 'enc-b': ...
    """
    source, matrix, _, close = _open_reference(Path(path), fingerprint)
    try:
        if dim is not None and int(matrix.shape[1]) != int(dim):
            raise DuplicateSearchError(
                f"{source} has {matrix.shape[1]} dimensions but this run's encoder makes "
                f"{dim}: the two were made by different encoders"
            )
        return int(matrix.shape[0])
    finally:
        close()


# ----------------------------------------------------------------------------------------
# Input
# ----------------------------------------------------------------------------------------
def _open_reference(
    reference: Any, fingerprint: str | None
) -> tuple[str, Any, list[Any] | None, Callable[[], None]]:
    """``(description, matrix, ids or None, close)`` for an array, dataset, store or path."""
    from embetter_core.store.embedding_store import EmbeddingStore

    if isinstance(reference, str | os.PathLike):
        store = EmbeddingStore.open(reference)
        owned = True
    elif isinstance(reference, EmbeddingStore):
        store, owned = reference, False
    else:
        return "the reference", reference, None, lambda: None
    source = f"reference store {store.path}"
    try:
        stored = store.fingerprint
        if fingerprint is not None and stored != fingerprint:
            raise FingerprintMismatchError(
                f"{source} was embedded by encoder {stored!r}, but this run's encoder is "
                f"{fingerprint!r}: similarities across encoders mean nothing. Pass the "
                "reference corpus file instead (it is embedded with this run's encoder), or "
                "run with the reference's encoder"
            )
        ids = store.ids
    except BaseException:
        if owned:
            store.close()
        raise
    return source, store.dataset, ids, store.close if owned else lambda: None


# ----------------------------------------------------------------------------------------
# Engines
# ----------------------------------------------------------------------------------------
def _ann_cross(
    Q: np.ndarray,
    R: np.ndarray,
    screen: np.float32,
    *,
    nlist: int,
    settings: SearchSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows against the members of the reference cells they visit: (each row's best,
    matched rows, matched reference rows)."""
    block, limit = settings.block_size, settings.max_candidates
    centroids = _train_cells(R, nlist=nlist, seed=settings.seed)
    threads = settings.threads
    own, _, _ = _assign_cells(R, centroids, screen, nprobe=1, max_probe=1, n_jobs=threads)
    first, visit_rows, visit_cells = _assign_cells(
        Q, centroids, screen, nprobe=settings.nprobe, n_jobs=threads
    )
    rows = np.concatenate([np.arange(len(Q)), visit_rows])
    cells = np.concatenate([first, visit_cells])
    members = np.argsort(own, kind="stable")
    m_bounds = np.searchsorted(own[members], np.arange(nlist + 1))
    by_cell = np.argsort(cells, kind="stable")
    visitors = rows[by_cell]
    v_bounds = np.searchsorted(cells[by_cell], np.arange(nlist + 1))

    def cell_task(c: int) -> Callable[[], Any]:
        def task() -> Any:
            mem = members[m_bounds[c] : m_bounds[c + 1]]
            vis = visitors[v_bounds[c] : v_bounds[c + 1]]
            if not len(mem) or not len(vis):
                return vis, np.full(len(vis), -np.inf, dtype=np.float32), vis[:0], mem[:0]
            rmax, _, q, r = _cross_tiles(Q[vis], R[mem], screen, block=block)
            return vis, rmax, vis[q], mem[r]

        return task

    nearest = np.full(len(Q), -np.inf, dtype=np.float32)
    hits_q, hits_r = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    count = 0
    for vis, best, q, r in _run((cell_task(c) for c in range(nlist)), settings.threads):
        np.maximum.at(nearest, vis, best)
        count += len(q)
        if count > limit:
            raise DuplicateSearchError(
                f"more than max_candidates={limit} matches: raise the threshold or max_candidates"
            )
        hits_q.append(q)
        hits_r.append(r)
    return nearest, np.concatenate(hits_q), np.concatenate(hits_r)


def _cross_recall_sample(
    Q: np.ndarray,
    R: np.ndarray,
    qa: np.ndarray,
    rb: np.ndarray,
    *,
    threshold: float,
    size: int,
    seed: int,
    block: int,
) -> RecallSample:
    """Exact matches of a stratified sample of ``size`` rows (rows with a found match, rows
    without) against the whole reference, and which of them ``(qa, rb)`` holds."""
    n, m = len(Q), len(R)
    has = np.zeros(n, dtype=bool)
    has[qa] = True
    rows, weights = stratified_draw(has, size, sample_priority(Q, seed))
    screen = np.float32(threshold - _SCREEN_SLACK)
    nearest, _, pos, other = _cross_search(
        Q[rows], R, screen, block=block, n_jobs=1, limit=np.iinfo(np.int64).max
    )
    scores = _rescore_pairs(Q, R, rows[pos], other)
    keep = scores >= np.float32(threshold)
    found_keys = np.sort(qa * m + rb)
    keys = rows[pos[keep]] * m + other[keep]
    found = _in_sorted(found_keys, keys)
    return RecallSample(
        rows=rows,
        weights=weights,
        nearest=nearest,
        pair_row=pos[keep],
        other=other[keep],
        scores=scores[keep],
        found=found,
    )


__all__ = [
    "AUTO_EXACT_MAX_PAIRS",
    "REFERENCE_PAIRS_CSV",
    "ReferenceMatches",
    "check_reference_store",
    "find_reference_duplicates",
]
