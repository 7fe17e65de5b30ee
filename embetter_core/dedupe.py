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

import itertools
import math
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from embetter_core.errors import DuplicateSearchError
from embetter_core.keep import KeepRule, align_values

if TYPE_CHECKING:
    from embetter_core.reference import ReferenceMatches

#: The default cosine threshold, picked on the Debian corpus (``benchmarks.dedupe_quality``,
#: all 63,482 rows): the per-row decision (no chained removals) scores its best removal F1 at
#: 0.82 (0.660; 0.653 at 0.85, where the connected-component rule peaked; see BENCHMARKS.md).
DEFAULT_THRESHOLD = 0.82
#: Up to this many rows ``method="auto"`` runs the exact engine: ann is faster above about
#: 8-10k rows here (``python -m benchmarks.dedupe --crossover ...``, see BENCHMARKS.md).
AUTO_EXACT_MAX_ROWS = 10_000
METHODS = ("auto", "exact", "ann")
#: Candidates are screened this far below the floor in float32, then rescored exactly.
_SCREEN_SLACK = 1e-4
_READ_BLOCK = 65_536


# ----------------------------------------------------------------------------------------
# What a search found, and the report made from it
# ----------------------------------------------------------------------------------------
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


@dataclass(frozen=True, eq=False, repr=False)
class AnnCells:
    """The k-means cells an ``"ann"`` search compared rows within, kept so that an
    incremental run (:mod:`embetter_core.incremental`) places new rows in the same cells.

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


@dataclass(eq=False, repr=False)
class DuplicateReport:
    """What :func:`find_duplicates` found: pairs, clusters, and what to keep.

    Attributes:
        ids: the row ids, in input order.
        threshold: the cosine similarity a pair needs to count as a duplicate.
        method: the engine that ran, ``"exact"`` or ``"ann"``.
        pairs: ``(id_a, id_b, score)`` with ``score >= threshold``, highest score first; ties
            are ordered by id, and ``id_a`` sorts before ``id_b``.
        clusters: connected components of the pairs, largest first (ties by first id); each
            lists its ids in id order. A cluster may keep several rows (see ``removed``).
        removed: for each removed row, ``id -> (kept id, score)``: the kept row it matches
            best among the kept rows it is a near-duplicate of, and their cosine (always
            ``>= threshold``). Rows are decided in keep order: a cluster's row is removed
            when it forms a pair with a row kept before it, else kept.
        exact_groups: groups of ids with identical texts (or, without texts, bitwise
            identical vectors), largest first.
        nearest: each row's best neighbour similarity, input order (float32). NaN for zero
            vectors and for ``n < 2``; for ``"ann"`` it is the best among the rows it
            compared with (the true one whenever that neighbour lies in a probed cell).
        recall_estimate: share of the pairs at ``threshold`` that were found: 1.0 for
            exact; for ann estimated from an exact check of ``recall_sample`` rows (NaN when
            that sample holds no pair).
        zero_vector_ids: ids of all-zero rows; they match nothing.
        floor: the lowest threshold ``rethreshold`` accepts (candidates are kept down to it).
        candidates: every pair scored down to ``floor`` (:class:`Candidates`), from which
            ``pairs``, ``clusters`` and ``removed`` are decided.
        params: the search settings.
        keep: the :class:`~embetter_core.keep.KeepRule` that ordered the rows.
        keep_rank: each row's place in keep order (int64, input order of rows); ties of the
            rule are in input order.

    >>> import numpy as np
    >>> vecs = np.array([[1, 0], [0.96, 0.28], [0, 1], [0, 0]], dtype=np.float32)
    >>> report = find_duplicates(vecs, ids=["a", "b", "c", "d"], threshold=0.9)
    >>> report.pairs
    [('a', 'b', 0.96)]
    >>> report.removed, report.zero_vector_ids
    ({'b': ('a', 0.96)}, ['d'])
    >>> report.rethreshold(0.97).pairs
    []
    >>> report.rekeep("last").removed
    {'a': ('b', 0.96)}
    """

    ids: list[Any]
    threshold: float
    method: str
    pairs: list[tuple[Any, Any, float]]
    clusters: list[list[Any]]
    removed: dict[Any, tuple[Any, float]]
    exact_groups: list[list[Any]]
    nearest: np.ndarray
    recall_estimate: float
    zero_vector_ids: list[Any]
    floor: float
    candidates: Candidates
    params: dict[str, Any] = field(default_factory=dict)
    keep: KeepRule = field(default_factory=KeepRule)
    keep_rank: np.ndarray | None = None

    @classmethod
    def from_candidates(
        cls,
        ids: Sequence[Hashable],
        candidates: Candidates,
        threshold: float,
        *,
        method: str = "exact",
        nearest: np.ndarray | None = None,
        exact_groups: list[list[Any]] | None = None,
        zero_vector_ids: list[Any] | None = None,
        params: dict[str, Any] | None = None,
        keep: str | KeepRule | None = "first",
        keep_values: Sequence[Any] | Mapping[Hashable, Any] | None = None,
    ) -> DuplicateReport:
        """The report at ``threshold`` (down to ``candidates.floor``): pairs, clusters and
        removals decided from ``candidates`` with the keep rule ``keep`` (see
        :func:`find_duplicates`). ``nearest`` defaults to NaN for every row.
        See :class:`Candidates` for an example."""
        ids = list(ids)
        threshold = _check_threshold(threshold, candidates.floor)
        if len(candidates.rank) != len(ids):
            raise ValueError(
                f"candidates.rank has {len(candidates.rank)} rows but there are {len(ids)} ids"
            )
        rule, keep_rank = _keep_order(keep, keep_values, ids)
        return cls._decided_from(
            ids,
            candidates,
            threshold,
            rule,
            keep_rank,
            method=method,
            nearest=nearest,
            exact_groups=exact_groups,
            zero_vector_ids=zero_vector_ids,
            params=params,
        )

    @classmethod
    def _decided_from(
        cls,
        ids: list[Any],
        candidates: Candidates,
        threshold: float,
        rule: KeepRule,
        keep_rank: np.ndarray,
        *,
        method: str,
        nearest: np.ndarray | None,
        exact_groups: list[list[Any]] | None,
        zero_vector_ids: list[Any] | None,
        params: dict[str, Any] | None,
    ) -> DuplicateReport:
        pairs, clusters, removed = _decide(ids, candidates, threshold, keep_rank)
        return cls(
            ids=ids,
            threshold=threshold,
            method=method,
            pairs=pairs,
            clusters=clusters,
            removed=removed,
            exact_groups=[] if exact_groups is None else exact_groups,
            nearest=np.full(len(ids), np.nan, np.float32) if nearest is None else nearest,
            recall_estimate=candidates.recall_estimate(threshold),
            zero_vector_ids=[] if zero_vector_ids is None else list(zero_vector_ids),
            floor=candidates.floor,
            candidates=candidates,
            params=dict(params or {}),
            keep=rule,
            keep_rank=keep_rank,
        )

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"DuplicateReport(n={s['rows']}, method={s['method']!r}, "
            f"threshold={s['threshold']}, pairs={s['pairs']}, clusters={s['clusters']}, "
            f"removed={s['removed']}, recall_estimate={s['recall_estimate']:.4g})"
        )

    @property
    def n(self) -> int:
        """The number of rows searched."""
        return len(self.ids)

    @property
    def selected(self) -> list[Any]:
        """The ids that remain after removing duplicates, in input order."""
        return [i for i in self.ids if i not in self.removed]

    @property
    def kept_mask(self) -> np.ndarray:
        """One bool per row, input order: False for the removed rows (e.g. for
        :func:`embetter_core.store.write_kept`)."""
        return np.fromiter((i not in self.removed for i in self.ids), dtype=bool, count=self.n)

    def rethreshold(self, threshold: float) -> DuplicateReport:
        """The report at another threshold (up, or down to ``floor``), from kept candidates.

        >>> import numpy as np
        >>> vecs = np.array([[1, 0], [0.95, 0.31], [0, 1]], dtype=np.float32)
        >>> report = find_duplicates(vecs, threshold=0.99, floor=0.9)
        >>> len(report.pairs), len(report.rethreshold(0.94).pairs)
        (0, 1)
        """
        return self._decided(self.candidates, _check_threshold(threshold, self.floor))

    def keep_pairs(self, keep: Sequence[bool]) -> DuplicateReport:
        """The report with only the pairs where ``keep`` is true (one flag per pair, in
        ``pairs`` order), clusters and removals recomputed; e.g. to keep only the pairs a
        :class:`~embetter_core.model.DifferenceClassifier` calls duplicates.

        >>> import numpy as np
        >>> vecs = np.array([[1, 0], [0.99, 0.14], [0.98, 0.2]], dtype=np.float32)
        >>> report = find_duplicates(vecs, threshold=0.95)
        >>> len(report.pairs), report.clusters
        (3, [[0, 1, 2]])
        >>> report.keep_pairs([True, False, False]).clusters
        [[1, 2]]
        """
        flags = np.asarray(keep, dtype=bool)
        if flags.shape != (len(self.pairs),):
            raise ValueError(
                f"keep has {flags.size} flags but the report has {len(self.pairs)} pairs"
            )
        mask = np.ones(len(self.candidates), dtype=bool)
        mask[: len(flags)] = flags  # the pairs are the first candidates, in the same order
        return self._decided(self.candidates.select(mask), self.threshold)

    def rekeep(
        self,
        keep: str | KeepRule,
        keep_values: Sequence[Any] | Mapping[Hashable, Any] | None = None,
    ) -> DuplicateReport:
        """The report with the rows kept by another rule (see :func:`find_duplicates`'s
        ``keep``), from the kept candidates: no new search. ``keep_values``: the rule's
        values (texts for ``longest`` / ``shortest``, a column's values for ``column:``),
        one per row in input order or a mapping id -> value.

        >>> import numpy as np
        >>> vecs = np.array([[1, 0], [0.99, 0.14], [0, 1]], dtype=np.float32)
        >>> report = find_duplicates(vecs, ids=["a", "b", "c"], threshold=0.95)
        >>> report.selected, report.rekeep("longest", ["x", "xyz", "xy"]).selected
        (['a', 'c'], ['b', 'c'])
        >>> report.rekeep("column:stars:asc", {"a": 5, "b": 1, "c": 9}).removed
        {'a': ('b', 0.990148)}
        """
        rule, keep_rank = _keep_order(keep, keep_values, self.ids)
        return self._decided(self.candidates, self.threshold, rule, keep_rank)

    def _decided(
        self,
        candidates: Candidates,
        threshold: float,
        keep: KeepRule | None = None,
        keep_rank: np.ndarray | None = None,
    ) -> DuplicateReport:
        """This report with pairs, clusters and removals decided again from ``candidates``
        (with another keep order when given)."""
        if keep is None:
            keep, keep_rank = self.keep, self.keep_rank
        pairs, clusters, removed = _decide(self.ids, candidates, threshold, keep_rank)
        return replace(
            self,
            keep=keep,
            keep_rank=keep_rank,
            threshold=threshold,
            pairs=pairs,
            clusters=clusters,
            removed=removed,
            recall_estimate=candidates.recall_estimate(threshold),
            zero_vector_ids=list(self.zero_vector_ids),
            candidates=candidates,
            params=dict(self.params),
        )

    def pairs_frame(self) -> Any:
        """The pairs as a pandas DataFrame with columns id_a, id_b, score."""
        import pandas as pd

        return pd.DataFrame(self.pairs, columns=["id_a", "id_b", "score"])

    def to_frame(self) -> Any:
        """One row per input row (input order) as a pandas DataFrame.

        Columns: ``id``, ``kept`` (False for removed rows), ``duplicate_of`` (kept id or
        None), ``score`` (similarity to it), ``cluster`` (index into ``clusters`` or -1),
        ``exact_group`` (index into ``exact_groups`` or -1), ``nearest``, ``zero_vector``.
        """
        import pandas as pd

        cluster_of = {i: c for c, members in enumerate(self.clusters) for i in members}
        group_of = {i: g for g, members in enumerate(self.exact_groups) for i in members}
        zero = set(self.zero_vector_ids)
        dup = [self.removed.get(i) for i in self.ids]
        return pd.DataFrame(
            {
                "id": self.ids,
                "kept": [d is None for d in dup],
                "duplicate_of": [None if d is None else d[0] for d in dup],
                "score": [math.nan if d is None else d[1] for d in dup],
                "cluster": [cluster_of.get(i, -1) for i in self.ids],
                "exact_group": [group_of.get(i, -1) for i in self.ids],
                "nearest": self.nearest,
                "zero_vector": [i in zero for i in self.ids],
            }
        )

    def removed_frame(self, texts: Sequence[str] | Mapping[Hashable, str] | None = None) -> Any:
        """One row per removed row (input order) as a pandas DataFrame: ``id``, ``kept_id``
        (the kept row it duplicates), ``similarity`` (their cosine), ``cluster`` (index into
        ``clusters``) and ``exact``: whether the two texts are identical (with ``texts``, a
        sequence in row order or a mapping id -> text holding at least the removed and kept
        rows), else whether the two rows share an exact-duplicate group (``exact_groups``).

        >>> import numpy as np
        >>> vecs = np.array([[1, 0], [1, 0], [0.96, 0.28]], dtype=np.float32)
        >>> report = find_duplicates(vecs, ids=["a", "b", "c"], threshold=0.9)
        >>> report.removed_frame(texts=["cat", "cat", "cats"]).to_dict("list")
        ... # doctest: +NORMALIZE_WHITESPACE
        {'id': ['b', 'c'], 'kept_id': ['a', 'a'], 'similarity': [1.0, 0.96],
         'cluster': [0, 0], 'exact': [True, False]}
        """
        import pandas as pd

        cluster_of = {i: c for c, members in enumerate(self.clusters) for i in members}
        group_of = {i: g for g, members in enumerate(self.exact_groups) for i in members}
        text_of: Mapping[Hashable, str] = {}
        if isinstance(texts, Mapping):
            text_of = texts
        elif texts is not None:
            text_of = dict(zip(self.ids, align_values(texts, self.ids, name="texts"), strict=True))

        def exact(a: Any, b: Any) -> bool:
            if a in text_of and b in text_of:
                return bool(text_of[a] == text_of[b])
            return a in group_of and group_of[a] == group_of.get(b)

        rows = [(i, *self.removed[i]) for i in self.ids if i in self.removed]
        return pd.DataFrame(
            {
                "id": [r[0] for r in rows],
                "kept_id": [r[1] for r in rows],
                "similarity": pd.Series([r[2] for r in rows], dtype="float64"),
                "cluster": pd.Series([cluster_of[r[0]] for r in rows], dtype="int64"),
                "exact": pd.Series([exact(r[0], r[1]) for r in rows], dtype="bool"),
            }
        )

    def summary(self) -> dict[str, Any]:
        """The headline counts, for logs and report pages."""
        return {
            "rows": self.n,
            "method": self.method,
            "threshold": self.threshold,
            "keep": str(self.keep),
            "pairs": len(self.pairs),
            "clusters": len(self.clusters),
            "largest_cluster": max((len(c) for c in self.clusters), default=0),
            "removed": len(self.removed),
            "kept": self.n - len(self.removed),
            "exact_duplicate_groups": len(self.exact_groups),
            "exact_duplicate_rows": sum(len(g) for g in self.exact_groups),
            "zero_vectors": len(self.zero_vector_ids),
            "recall_estimate": self.recall_estimate,
        }


# ----------------------------------------------------------------------------------------
# The entry point
# ----------------------------------------------------------------------------------------
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
            (highest / lowest value), or a :class:`~embetter_core.keep.KeepRule`. Rows are
            taken in that order (ties in input order); each is kept unless it is a
            near-duplicate of a row already kept.
        keep_values: the rule's values, one per row (input order) or a mapping id -> value:
            texts or lengths for ``longest`` / ``shortest`` (default: ``texts``), numbers or
            dates for ``column:`` (see :func:`embetter_core.keep.keep_values_for` to read
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
            path): return the :class:`~embetter_core.reference.ReferenceMatches` of each row
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
        from embetter_core.reference import find_reference_duplicates  # avoids an import cycle

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


# ----------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------
def _check_params(
    threshold: float,
    floor: float | None,
    method: str,
    nprobe: int,
    n_jobs: int,
    block_size: int,
) -> tuple[float, float]:
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise DuplicateSearchError(f"threshold must be in (0, 1], got {threshold}")
    floor = max(threshold - 0.1, threshold / 2) if floor is None else float(floor)
    if not 0.0 < floor <= threshold:
        raise DuplicateSearchError(f"floor must be in (0, threshold={threshold}], got {floor}")
    if method not in METHODS:
        raise DuplicateSearchError(f"method must be one of {METHODS}, got {method!r}")
    for name, value in (("nprobe", nprobe), ("n_jobs", n_jobs), ("block_size", block_size)):
        if int(value) < 1:
            raise DuplicateSearchError(f"{name} must be >= 1, got {value}")
    return threshold, floor


def _input_shape(embeddings: Any) -> tuple[Any, int]:
    """Return a sliceable 2-D matrix (ndarray or h5py Dataset) and its row count."""
    if _is_h5_dataset(embeddings):
        matrix = embeddings
    else:
        try:
            matrix = np.asarray(embeddings)
        except (TypeError, ValueError) as exc:
            raise DuplicateSearchError(f"embeddings must be a 2-D numeric array: {exc}") from None
        if matrix.ndim == 1 and matrix.size == 0:
            matrix = matrix.reshape(0, 0)
    if len(matrix.shape) != 2:
        raise DuplicateSearchError(
            f"embeddings must be 2-D (n rows, d dims), got shape {tuple(matrix.shape)}"
        )
    dtype = np.dtype(matrix.dtype)
    if dtype.kind not in "fiub":
        raise DuplicateSearchError(f"embeddings must be numeric, got dtype {dtype}")
    if matrix.shape[0] > 0 and matrix.shape[1] == 0:
        raise DuplicateSearchError("embeddings have 0 dimensions")
    return matrix, int(matrix.shape[0])


def _is_h5_dataset(obj: Any) -> bool:
    return type(obj).__module__.startswith("h5py") and hasattr(obj, "shape")


def _check_ids(ids: Sequence[Hashable] | None, n: int) -> list[Any]:
    if ids is None:
        return list(range(n))
    values = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    if len(values) != n:
        raise DuplicateSearchError(
            f"ids has length {len(values)} but embeddings have {n} rows; give one id per row"
        )
    try:
        if len(set(values)) == n:  # the common case, fast; else find and name the repeat
            return values
    except TypeError:  # an unhashable id, named below
        pass
    seen: dict[Any, int] = {}
    for pos, value in enumerate(values):
        try:
            first = seen.setdefault(value, pos)
        except TypeError:
            raise DuplicateSearchError(
                f"id at position {pos} is unhashable ({type(value).__name__})"
            ) from None
        if first != pos:
            raise DuplicateSearchError(
                f"ids must be unique: {value!r} is at positions {first} and {pos}"
            )
    return values


def _check_texts(
    texts: Sequence[str] | Mapping[Hashable, str] | None, ids: list[Any]
) -> list[str] | None:
    return None if texts is None else align_values(texts, ids, name="texts")


def _canonical_order(ids: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``order``: input rows sorted by id; ``rank``: each input row's place in that order."""
    n = len(ids)
    if all(isinstance(i, str) for i in ids):
        order = np.argsort(np.array(ids, dtype=str), kind="stable")
    elif all(isinstance(i, int | float | np.integer | np.floating) for i in ids):
        order = np.argsort(np.array(ids), kind="stable")
    else:  # mixed types: by type name, then text
        order = np.array(
            sorted(range(n), key=lambda i: (type(ids[i]).__name__, str(ids[i]))), dtype=np.int64
        )
    order = order.astype(np.int64, copy=False)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank, order


def _keep_setup(
    keep: str | KeepRule | None,
    keep_values: Sequence[Any] | Mapping[Hashable, Any] | None,
    texts: list[str] | None,
    ids: list[Any],
) -> tuple[KeepRule, Sequence[Any] | Mapping[Hashable, Any] | None, np.ndarray]:
    """The keep rule, its values (``longest`` / ``shortest`` default to ``texts``) and each
    row's place in keep order; a bad rule or value fails here, before any work."""
    rule = KeepRule.parse(keep)
    if keep_values is None and rule.kind in ("longest", "shortest"):
        keep_values = texts
    rule, keep_rank = _keep_order(rule, keep_values, ids)
    return rule, keep_values, keep_rank


def _refuse_bad_rows(bad: np.ndarray, ids: list[Any], what: str = "embedding rows") -> None:
    """Raise naming up to ten of the rows ``bad`` (positions in ``ids``) that hold NaN or
    inf."""
    if len(bad):
        shown = ", ".join(f"{ids[r]!r} (row {r})" for r in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise DuplicateSearchError(f"{len(bad)} {what} contain NaN or inf: {shown}{more}")


def _load_normalised(
    matrix: Any, n: int, rank: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-norm float32 rows in canonical order; zero and non-finite rows stay zero.

    Returns the matrix, the input rows with NaN / inf and the all-zero input rows.
    """
    d = int(matrix.shape[1]) if n else 0
    X = np.empty((n, d), dtype=np.float32)
    in_order = bool(np.array_equal(rank, np.arange(n)))
    wide = np.dtype(matrix.dtype) == np.float64  # normalise float64 input before narrowing
    bad: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    zero: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    for start in range(0, n, _READ_BLOCK):
        chunk = np.asarray(matrix[start : start + _READ_BLOCK])
        for sub in range(0, len(chunk), 8192):  # cache-sized pieces
            first = start + sub
            block = chunk[sub : sub + 8192]
            if not wide:
                block = block.astype(np.float32, copy=False)
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                bad.append(np.flatnonzero(~finite) + first)
                block = np.where(finite[:, None], block, 0)
            if wide:  # scale first: squares of huge float64 values overflow
                peak = np.abs(block).max(axis=1)
                block = block / np.where(peak > 0, peak, 1.0)[:, None]
            norms, is_zero = _row_norms(block)
            if is_zero.any():
                zero.append(np.flatnonzero(is_zero & finite) + first)
            if wide:
                unit = (block / norms[:, None]).astype(np.float32)
            else:
                unit = block * _unit_scale(norms)[:, None]
            if in_order:
                X[first : first + len(block)] = unit
            else:
                X[rank[first : first + len(block)]] = unit
    return X, np.concatenate(bad), np.concatenate(zero)


def _row_norms(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's norm (float64; 1 for an all-zero row, which stays zero) and which rows are
    all zero."""
    norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
    is_zero = norms == 0
    norms[is_zero] = 1.0
    return norms, is_zero


def _unit_scale(norms: np.ndarray) -> np.ndarray:
    """The float32 factors that make float32 rows unit-norm: ``block * scale[:, None]`` (an
    incremental run keeps them, so that it remakes the same unit rows)."""
    return (1.0 / norms).astype(np.float32)


def _identical_rows(matrix: Any, cand: Candidates, ids: list[Any]) -> list[list[Any]]:
    """Groups of bitwise identical rows. Identical rows score 1, so only the rows of
    candidate pairs scoring ~1 are read back and hashed."""
    import hashlib

    near = cand.scores >= np.float32(0.9999)
    rows = np.unique(np.concatenate([cand.a[near], cand.b[near]]))
    if not len(rows):
        return []
    raw = np.asarray(matrix[rows.tolist()] if _is_h5_dataset(matrix) else matrix[rows])
    keys: list[Any] = [None] * len(ids)
    for row, values in zip(rows.tolist(), np.ascontiguousarray(raw), strict=True):
        keys[row] = hashlib.blake2b(values.tobytes(), digest_size=16).digest()
    return _groups_by_key(keys, ids, cand.rank)


# ----------------------------------------------------------------------------------------
# The engines
# ----------------------------------------------------------------------------------------
class _blas_limit:
    """Limit BLAS threads (threadpoolctl) and, for ann, faiss's OpenMP threads inside the
    block; restore both after."""

    def __init__(self, threads: int | None, with_faiss: bool = False) -> None:
        self.threads = threads
        self.with_faiss = with_faiss
        self._ctx: Any = None
        self._faiss_threads: int | None = None

    def __enter__(self) -> None:
        if self.threads is None:
            return
        from threadpoolctl import threadpool_limits

        self._ctx = threadpool_limits(limits=int(self.threads), user_api="blas")
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
            raise DuplicateSearchError(
                f"more than max_candidates={self.limit} candidate pairs above the floor: "
                "raise the threshold or the floor, or raise max_candidates"
            )
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


def _ann_search(
    X: np.ndarray,
    screen: np.float32,
    *,
    nlist: int,
    nprobe: int,
    block: int,
    n_jobs: int,
    limit: int,
    seed: int,
    niter: int = 10,
    train_per_cell: int = 32,
    max_probe: int = 32,
) -> _Found:
    """Cluster-blocked exact search: each row against the members of its nearest cells
    (:func:`_train_cells`, :func:`_assign_cells`, :func:`_search_cells`)."""
    centroids = _train_cells(X, nlist=nlist, seed=seed, niter=niter, train_per_cell=train_per_cell)
    primary, visit_rows, visit_cells = _assign_cells(
        X, centroids, screen, nprobe=nprobe, max_probe=max_probe
    )
    cells = AnnCells(
        centroids, primary, visit_rows, visit_cells, nprobe=nprobe, max_probe=max_probe
    )
    return _search_cells(X, cells, screen, block=block, n_jobs=n_jobs, limit=limit)


# ----------------------------------------------------------------------------------------
# Building blocks for searches across row sets: reference search (embetter_core.reference)
# and incremental runs (embetter_core.incremental), and the ann engine's cells
# ----------------------------------------------------------------------------------------
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
            raise DuplicateSearchError(
                f"more than max_candidates={limit} candidate pairs above the floor: "
                "raise the threshold or the floor, or raise max_candidates"
            )
        hits_q.append(q)
        hits_m.append(m + j0)
    return rowmax, colmax, np.concatenate(hits_q), np.concatenate(hits_m)


def _train_cells(
    X: np.ndarray, *, nlist: int, seed: int, niter: int = 10, train_per_cell: int = 32
) -> np.ndarray:
    """Spherical k-means centres (``nlist x d`` float32), trained on a sample of rows."""
    import faiss

    n, d = X.shape
    rng = np.random.default_rng(seed)
    train_n = min(n, max(train_per_cell * nlist, 10_000))
    train = X[np.sort(rng.choice(n, size=train_n, replace=False))]
    kmeans = faiss.Kmeans(
        d,
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
    X: np.ndarray, centroids: np.ndarray, screen: np.float32, *, nprobe: int, max_probe: int = 32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's primary (nearest) cell, and the further cells it visits: its next
    ``nprobe - 1`` cells and also (up to ``max_probe`` in all) every cell whose centroid is
    at least ``screen`` similar to it, so a dense cluster that k-means splits over many cells
    is still searched whole. Returns ``(primary, visit_rows, visit_cells)``."""
    import faiss

    nlist, d = centroids.shape
    n = len(X)
    nprobe = min(nprobe, nlist)
    wide = min(nlist, max(nprobe, max_probe))
    primary = np.empty(n, dtype=np.int64)
    visit_rows, visit_cells = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    cells = faiss.IndexFlatIP(d)
    cells.add(centroids)
    for start in range(0, n, _READ_BLOCK):
        rows = X[start : start + _READ_BLOCK]
        top_s, top = cells.search(rows, nprobe)  # best first
        more = np.flatnonzero(top_s[:, -1] >= screen)  # may have more cells above `screen`
        if len(more) and wide > nprobe:
            more_s, more_top = cells.search(rows[more], wide)
            top_s = np.pad(top_s, ((0, 0), (0, wide - nprobe)), constant_values=-np.inf)
            top = np.pad(top, ((0, 0), (0, wide - nprobe)), constant_values=-1)
            top_s[more], top[more] = more_s, more_top
        primary[start : start + len(top)] = top[:, 0]
        visit = top_s[:, 1:] >= screen
        visit[:, : nprobe - 1] = True
        r, k = np.nonzero(visit)
        visit_rows.append(r + start)
        visit_cells.append(top[r, k + 1].astype(np.int64))
    return primary, np.concatenate(visit_rows), np.concatenate(visit_cells)


def _search_cells(
    X: np.ndarray,
    cells: AnnCells,
    screen: np.float32,
    *,
    block: int,
    n_jobs: int,
    limit: int,
    fresh: np.ndarray | None = None,
) -> _Found:
    """Cluster-blocked exact search: every row against the members of its own cell and of
    the cells it visits (so a cell's members meet its members and its visitors).

    ``fresh``: a boolean mask of rows; when given, only the pairs with a fresh row are
    searched (the comparisons a full search over these cells makes that involve a fresh
    row), and ``nearest`` holds each row's best among the fresh rows it met (every row it
    met, for fresh rows).
    """
    n = len(X)
    nlist = len(cells.centroids)
    primary = cells.primary
    members = np.argsort(primary, kind="stable")  # each cell's members in row order
    m_bounds = np.searchsorted(primary[members], np.arange(nlist + 1))
    by_cell = np.argsort(cells.visit_cells, kind="stable")
    visitors = cells.visit_rows[by_cell]
    v_bounds = np.searchsorted(cells.visit_cells[by_cell], np.arange(nlist + 1))
    cols = 4 * block

    def cell_task(c: int) -> Callable[[], Any]:
        def task() -> Any:
            mem = members[m_bounds[c] : m_bounds[c + 1]]
            queries = np.concatenate([mem, visitors[v_bounds[c] : v_bounds[c + 1]]])
            best = np.full(len(queries), -np.inf, dtype=np.float32)
            hits_a, hits_b = [], []
            # query blocks: the members first (their own upper triangle), then the visitors
            starts = [*range(0, len(mem), block), *range(len(mem), len(queries), block)]
            for j0 in range(0, len(mem), cols):
                Xm = X[mem[j0 : j0 + cols]]
                for i0 in starts:
                    i1 = min(i0 + block, len(mem) if i0 < len(mem) else len(queries))
                    diag = (i0 - j0) if i0 < len(mem) else None
                    rmax, cmax, r, cc = _tile(X[queries[i0:i1]], Xm, screen, diag)
                    np.maximum(best[i0:i1], rmax, out=best[i0:i1])
                    # column maxima: each member's best among these queries (this covers the
                    # masked lower triangle of the members' own block)
                    span = slice(j0, j0 + len(cmax))
                    np.maximum(best[span], cmax, out=best[span])
                    hits_a.append(queries[r + i0])
                    hits_b.append(mem[cc + j0])
            return [queries], [best], hits_a, hits_b

        return task

    def fresh_task(c: int) -> Callable[[], Any]:
        assert fresh is not None

        def task() -> Any:
            mem = members[m_bounds[c] : m_bounds[c + 1]]
            vis = visitors[v_bounds[c] : v_bounds[c + 1]]
            new_mem, new_vis, old_mem = mem[fresh[mem]], vis[fresh[vis]], mem[~fresh[mem]]
            rows, best, hits_a, hits_b = [], [], [], []
            if len(new_mem):  # fresh members against every member and visitor
                met = np.concatenate([mem, vis])
                own = np.searchsorted(mem, new_mem)
                rmax, cmax, q, m = _cross_tiles(
                    X[new_mem], X[met], screen, block=block, self_cols=own
                )
                rows += [new_mem, met]
                best += [rmax, cmax]
                hits_a.append(new_mem[q])
                hits_b.append(met[m])
            if len(new_vis) and len(old_mem):  # fresh visitors against the other members
                rmax, cmax, q, m = _cross_tiles(X[new_vis], X[old_mem], screen, block=block)
                rows += [new_vis, old_mem]
                best += [rmax, cmax]
                hits_a.append(new_vis[q])
                hits_b.append(old_mem[m])
            return rows, best, hits_a, hits_b

        return task

    if fresh is None:
        tasks = (cell_task(c) for c in range(nlist))
    else:
        visited = cells.visit_cells[fresh[cells.visit_rows]]
        touched = np.unique(np.concatenate([primary[fresh], visited]))
        tasks = (fresh_task(int(c)) for c in touched)
    nearest = np.full(n, -np.inf, dtype=np.float32)
    found = _Collector(limit)
    for rows, best, hits_a, hits_b in _run(tasks, n_jobs):
        for r, b in zip(rows, best, strict=True):
            np.maximum.at(nearest, r, b)
        for a, b in zip(hits_a, hits_b, strict=True):
            found.add(a, b)
    return _Found(*found.result(unique=True), nearest, cells)


def _rescore(X: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Each pair's cosine from its two rows alone (float64 sum, float32 result)."""
    out = np.empty(len(lo), dtype=np.float32)
    step = 8192  # small chunks stay in cache
    for s in range(0, len(lo), step):
        a = X[lo[s : s + step]].astype(np.float64)
        b = X[hi[s : s + step]].astype(np.float64)
        out[s : s + step] = np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0)
    return out


def _recall_sample(
    X: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, floor: float, size: int, seed: int, block: int
) -> RecallSample:
    """Exact neighbours (>= floor) of a stratified sample of ``size`` rows, and which of
    them the candidates ``(lo, hi)`` hold, to estimate ann recall."""
    n = len(X)
    rng = np.random.default_rng(seed + 1)
    has = np.zeros(n, dtype=bool)
    has[lo] = True
    has[hi] = True
    rows_parts = [np.empty(0, dtype=np.int64)]
    weight_parts = [np.empty(0, dtype=np.float64)]
    strata = [np.flatnonzero(has), np.flatnonzero(~has)]
    for k, stratum in enumerate(strata):
        share = size - size // 2 if k == 0 else size // 2
        take = min(len(stratum), share)
        if take:
            rows_parts.append(np.sort(rng.choice(stratum, size=take, replace=False)))
            weight_parts.append(np.full(take, len(stratum) / take))
    rows = np.concatenate(rows_parts)
    weights = np.concatenate(weight_parts)
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
    pos = np.searchsorted(cand_keys, keys)
    found = (pos < len(cand_keys)) & (cand_keys[np.minimum(pos, len(cand_keys) - 1)] == keys)
    return RecallSample(
        rows=rows,
        weights=weights,
        nearest=nearest,
        pair_row=sample_pos[keep],
        other=other[keep],
        scores=scores[keep],
        found=found,
    )


# ----------------------------------------------------------------------------------------
# From candidates to a decision
# ----------------------------------------------------------------------------------------
def _check_threshold(threshold: float, floor: float) -> float:
    threshold = float(threshold)
    if not floor <= threshold <= 1.0:
        raise DuplicateSearchError(
            f"threshold {threshold} is outside [{floor}, 1]: candidates were kept "
            f"down to floor={floor}; run find_duplicates again with floor <= {threshold}"
        )
    return threshold


def _keep_order(
    keep: str | KeepRule | None,
    keep_values: Sequence[Any] | Mapping[Hashable, Any] | None,
    ids: list[Any],
) -> tuple[KeepRule, np.ndarray]:
    """The keep rule, and each row's place in its order."""
    rule = KeepRule.parse(keep)
    values = None if keep_values is None else align_values(keep_values, ids)
    return rule, rule.rank(values, n=len(ids))


def _decide(
    ids: list[Any], cand: Candidates, threshold: float, keep_rank: np.ndarray | None
) -> tuple[list[tuple[Any, Any, float]], list[list[Any]], dict[Any, tuple[Any, float]]]:
    """The pairs at ``threshold``, their clusters (connected components, members in id
    order), and the removed rows: rows taken in ``keep_rank`` order (None: input order),
    each removed when it pairs with a row kept before it, pointing at the best such row."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(ids)
    rank = cand.rank
    take = cand.scores >= np.float32(threshold)
    a, b, s = cand.a[take], cand.b[take], cand.scores[take]
    id_arr = np.empty(n, dtype=object)
    id_arr[:] = ids
    scores = np.round(s.astype(np.float64), 6)
    pairs = list(zip(id_arr[a].tolist(), id_arr[b].tolist(), scores.tolist(), strict=True))

    clusters: list[list[Any]] = []
    removed: dict[Any, tuple[Any, float]] = {}
    if len(a):
        graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
        sizes = np.bincount(labels)
        rows = np.flatnonzero(sizes[labels] > 1)
        rows = rows[np.lexsort((rank[rows], labels[rows]))]
        starts = np.flatnonzero(np.r_[True, labels[rows][1:] != labels[rows][:-1]])
        groups = np.split(rows, starts[1:])
        groups.sort(key=lambda g: (-len(g), rank[g[0]]))
        clusters = [id_arr[g].tolist() for g in groups]
        if keep_rank is None:
            keep_rank = np.arange(n, dtype=np.int64)
        gone, kept_by, score = _remove_in_keep_order(n, a, b, s, keep_rank)
        removed = dict(
            zip(
                id_arr[gone].tolist(),
                zip(id_arr[kept_by].tolist(), np.round(score, 6).tolist(), strict=True),
                strict=True,
            )
        )
    return pairs, clusters, removed


def _remove_in_keep_order(
    n: int, a: np.ndarray, b: np.ndarray, scores: np.ndarray, keep_rank: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy removal over the pair graph: rows in ``keep_rank`` order, each removed when it
    pairs with an already kept row, else kept. Returns the removed rows (in keep order),
    for each the kept row it pairs with best (ties: the earliest in keep order), and that
    pair's score.

    A row's fate depends only on its partners earlier in keep order, so rows are decided in
    rounds, all at once: removed as soon as an earlier partner is kept, kept once every
    earlier partner is removed. Rounds stop when a round decides few rows (a long chain needs
    one round per link); the rest are decided one by one, in keep order.
    """
    # each pair seen from its later row (in keep order): only an earlier row can be kept
    # before it; per later row, its earlier partners best score first, ties in keep order
    early = keep_rank[a] < keep_rank[b]
    later = np.where(early, b, a)
    earlier = np.where(early, a, b)
    order = _lexsort_by_later(keep_rank[later], keep_rank[earlier], scores)
    later, earlier, pair_scores = later[order], earlier[order], scores[order]

    undecided, kept, removed = 0, 1, 2
    state = np.full(n, kept, dtype=np.int8)
    state[later] = undecided  # a row with no earlier partner is kept
    open_pairs = np.arange(len(later))
    while len(open_pairs):
        left = open_pairs[state[later[open_pairs]] == undecided]
        rows = np.unique(later[left])
        if len(rows) < 64:
            break
        partner = state[earlier[left]]
        has_kept = np.zeros(n, dtype=bool)
        has_kept[later[left[partner == kept]]] = True
        waits = np.zeros(n, dtype=bool)
        waits[later[left[partner == undecided]]] = True
        state[rows[has_kept[rows]]] = removed
        state[rows[~has_kept[rows] & ~waits[rows]]] = kept
        open_pairs = left
        if (state[rows] != undecided).sum() < len(rows) // 8:  # slow progress: a long chain
            break
    left = open_pairs[state[later[open_pairs]] == undecided]
    if len(left):  # the rest, one by one in keep order
        bounds = np.flatnonzero(np.r_[True, later[left][1:] != later[left][:-1], True])
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            row = int(later[left[lo]])
            hit = state[earlier[left[lo:hi]]] == kept
            state[row] = removed if hit.any() else kept

    # each removed row's best kept partner: the first such pair of its (sorted) run
    take = np.flatnonzero((state[later] == removed) & (state[earlier] == kept))
    first = take[np.r_[True, later[take][1:] != later[take][:-1]]] if len(take) else take
    return later[first], earlier[first], pair_scores[first].astype(np.float64)


def _lexsort_by_later(
    later_rank: np.ndarray, earlier_rank: np.ndarray, scores: np.ndarray
) -> np.ndarray:
    """``np.lexsort((earlier_rank, -scores, later_rank))``, 4x faster when the scores come
    sorted descending (candidate order): one sort of (later rank, position) keys, which are
    unique, then each run of equal later rank and score put in ``earlier_rank`` order."""
    m = len(scores)
    if m < 2 or int(later_rank.max()) >= 2**62 // m or not (scores[:-1] >= scores[1:]).all():
        return np.lexsort((earlier_rank, -scores, later_rank))
    order = np.argsort(later_rank.astype(np.int64) * m + np.arange(m))
    rank, score = later_rank[order], scores[order]
    tie = (rank[1:] == rank[:-1]) & (score[1:] == score[:-1])
    if tie.any():
        at = np.flatnonzero(np.r_[tie, False] | np.r_[False, tie])
        run = np.cumsum(np.r_[True, ~tie])[at]
        order[at] = order[at[np.lexsort((earlier_rank[order[at]], run))]]
    return order


def _groups_by_key(keys: list[Any], ids: list[Any], rank: np.ndarray) -> list[list[Any]]:
    """Groups (size >= 2) of ids sharing a key (None never groups), in id order; largest
    first, ties by first id."""
    import pandas as pd

    kinds = set(map(type, keys))
    if kinds <= {str, bytes, type(None)}:  # texts, digests: a dict, 5x faster than factorize
        first: dict[Any, int] = {}  # a key's first row names its group
        codes = np.fromiter(
            map(first.setdefault, keys, itertools.count()), dtype=np.int64, count=len(keys)
        )
        if None in first:
            codes[codes == first[None]] = -1
    else:
        codes = np.asarray(pd.factorize(pd.Series(keys, dtype=object))[0])  # None -> -1
    rows = np.flatnonzero(codes >= 0)
    rows = rows[np.bincount(codes[rows])[codes[rows]] > 1]  # keys held by several rows
    rows = rows[np.lexsort((rank[rows], codes[rows]))]
    starts = np.flatnonzero(np.r_[True, codes[rows][1:] != codes[rows][:-1]])
    sizes = np.diff(np.r_[starts, len(rows)])
    starts, sizes = starts[sizes > 1], sizes[sizes > 1]
    groups = []
    for k in np.lexsort((rank[rows[starts]], -sizes)).tolist():
        groups.append([ids[r] for r in rows[starts[k] : starts[k] + sizes[k]].tolist()])
    return groups


__all__ = [
    "AUTO_EXACT_MAX_ROWS",
    "DEFAULT_THRESHOLD",
    "Candidates",
    "DuplicateReport",
    "DuplicateSearchError",
    "RecallSample",
    "find_duplicates",
]
