""":class:`DuplicateReport`: the pairs, clusters and removals decided from a search's
candidates at a threshold, with a keep rule; re-decided at another threshold or keep rule
without searching again.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from embetter_core.dedupe.keep import KeepRule, align_values

if TYPE_CHECKING:
    pass
from embetter_core.dedupe.candidates import Candidates
from embetter_core.dedupe.decide import _check_threshold, _decide, _keep_order, decision_counts


@dataclass(eq=False, repr=False)
class DuplicateReport:
    """What :func:`find_duplicates` found: pairs, clusters, and what to keep.

    Attributes:
        ids: the row ids, in input order.
        threshold: the cosine similarity a pair needs to count as a duplicate.
        method: the engine that ran, ``"exact"`` or ``"ann"``.
        pairs: ``(id_a, id_b, score)`` with ``score >= threshold``, highest score first; ties
            are ordered by id, and ``id_a`` sorts before ``id_b``. A read-only sequence (a search
            gives a :class:`~embetter_core.dedupe.pair_list.PairList`, equal to the list).
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
        keep: the :class:`~embetter_core.dedupe.keep.KeepRule` that ordered the rows.
        keep_rank: each row's place in keep order (int64, input order of rows); ties of the
            rule are in input order.

    >>> from embetter_core.dedupe import find_duplicates
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
    pairs: Sequence[tuple[Any, Any, float]]  # a PairList from a search: tuples made as read
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

        >>> from embetter_core.dedupe import find_duplicates
        >>> import numpy as np
        >>> vecs = np.array([[1, 0], [0.95, 0.31], [0, 1]], dtype=np.float32)
        >>> report = find_duplicates(vecs, threshold=0.99, floor=0.9)
        >>> len(report.pairs), len(report.rethreshold(0.94).pairs)
        (0, 1)
        """
        return self._decided(self.candidates, _check_threshold(threshold, self.floor))

    def counts_at(self, thresholds: Sequence[float]) -> list[dict[str, float | int]]:
        """The headline counts ``rethreshold(t)`` would give at each threshold (``pairs``,
        ``clusters``, ``removed``, ``kept``), without building each report: the same
        decision, a few ms per threshold. E.g. for a page's threshold slider.

        >>> from embetter_core.dedupe import find_duplicates
        >>> import numpy as np
        >>> vecs = np.array([[1, 0], [0.95, 0.31], [0, 1]], dtype=np.float32)
        >>> report = find_duplicates(vecs, threshold=0.99, floor=0.9)
        >>> [(c["threshold"], c["pairs"], c["removed"]) for c in report.counts_at([0.9, 0.99])]
        [(0.9, 1, 1), (0.99, 0, 0)]
        """
        return decision_counts(self.candidates, thresholds, self.keep_rank)

    def keep_pairs(self, keep: Sequence[bool]) -> DuplicateReport:
        """The report with only the pairs where ``keep`` is true (one flag per pair, in
        ``pairs`` order), clusters and removals recomputed; e.g. to keep only the pairs a
        :class:`~embetter_core.difference.model.DifferenceClassifier` calls duplicates.

        >>> from embetter_core.dedupe import find_duplicates
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

        >>> from embetter_core.dedupe import find_duplicates
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

        return pd.DataFrame(list(self.pairs), columns=["id_a", "id_b", "score"])

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

        >>> from embetter_core.dedupe import find_duplicates
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
