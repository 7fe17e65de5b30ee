"""Two-stage dedupe: a fast encoder finds the candidate rows, a better one decides.

A static model searches all rows at a low, recall-oriented threshold; only the rows that
appear in one of its pairs are encoded again with the second encoder (e.g. all-MiniLM-L6-v2)
and searched among themselves at that encoder's threshold. A row in no first-stage pair is
in no final pair. Wherever near-duplicates are a minority of the rows this costs a fraction
of encoding everything with the second encoder, at close to its quality
(``python -m benchmarks.dedupe_quality --rescore`` measures both).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from embetter_core.dedupe.candidates import Candidates
from embetter_core.dedupe.find import find_duplicates
from embetter_core.dedupe.keep import KeepRule
from embetter_core.dedupe.results import DuplicateReport

__all__ = ["candidate_rows", "find_duplicates_two_stage", "rescore_report"]


def candidate_rows(report: DuplicateReport) -> np.ndarray:
    """Positions (input order, ascending) of the rows in at least one pair of ``report``.

    >>> import numpy as np
    >>> vecs = np.array([[1, 0], [0.96, 0.28], [0, 1]], dtype=np.float32)
    >>> candidate_rows(find_duplicates(vecs, threshold=0.9)).tolist()
    [0, 1]
    """
    cand = report.candidates
    at = cand.scores >= report.threshold
    return np.unique(np.concatenate([cand.a[at], cand.b[at]])).astype(np.int64)


def rescore_report(
    first: DuplicateReport,
    rows: Sequence[int] | np.ndarray,
    vectors: Any,
    threshold: float,
    *,
    method: str = "exact",
    floor: float | None = None,
) -> DuplicateReport:
    """The report over all of ``first``'s rows, decided by the second-stage ``vectors``.

    Args:
        first: the first stage's report over every row.
        rows: the rows to decide (usually :func:`candidate_rows` of ``first``), ascending.
        vectors: the second encoder's vectors of ``rows``, one per row, in that order.
        threshold: the second encoder's duplicate threshold.
        method: the second search's engine (``"exact"``: the rows are few).
        floor: as :func:`~embetter_core.dedupe.find_duplicates`'s.

    The result keeps ``first``'s ids, keep rule and order, exact groups and zero rows;
    pairs, clusters and removals come from the second search (``rethreshold`` works down to
    its floor, within the first stage's rows). ``nearest`` is the second encoder's for
    ``rows`` and NaN elsewhere.

    >>> import numpy as np
    >>> fast = np.array([[1, 0], [0.96, 0.28], [0.8, 0.6], [0, 1]], dtype=np.float32)
    >>> first = find_duplicates(fast, ids=list("abcd"), threshold=0.9)
    >>> first.pairs
    [('a', 'b', 0.96), ('b', 'c', 0.936)]
    >>> better = np.array([[1, 0], [0.8, 0.6], [0, 1]], dtype=np.float32)  # rows a, b, c
    >>> rescore_report(first, [0, 1, 2], better, threshold=0.75).pairs
    [('a', 'b', 0.8)]
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= len(first.ids))):
        raise ValueError(f"rows must be positions 0..{len(first.ids) - 1} of the first report")
    if np.any(np.diff(rows) <= 0):
        raise ValueError("rows must be ascending and unique")
    if len(vectors) != len(rows):
        raise ValueError(f"got {len(vectors)} vectors for {len(rows)} rows; one per row")
    sub_ids = [first.ids[i] for i in rows]
    second = find_duplicates(vectors, ids=sub_ids, threshold=threshold, method=method, floor=floor)
    found = second.candidates
    candidates = Candidates(
        a=rows[found.a],
        b=rows[found.b],
        scores=found.scores,
        rank=first.candidates.rank,
        floor=found.floor,
        recall=None if found.recall is None else found.recall.renumbered(rows),
    )
    nearest = np.full(len(first.ids), np.nan, dtype=np.float32)
    nearest[rows] = second.nearest
    zero = set(first.zero_vector_ids) | set(second.zero_vector_ids)
    rule = first.keep if isinstance(first.keep, KeepRule) else KeepRule.parse(first.keep)
    return DuplicateReport._decided_from(
        first.ids,
        candidates,
        threshold,
        rule,
        first.keep_rank if first.keep_rank is not None else np.arange(len(first.ids)),
        method=second.method,
        nearest=nearest,
        exact_groups=first.exact_groups,
        zero_vector_ids=[i for i in first.ids if i in zero],
        params={
            **second.params,
            "first_stage": {
                "method": first.method,
                "threshold": first.threshold,
                "rows": int(len(rows)),
                **first.params,
            },
        },
    )


def find_duplicates_two_stage(
    texts: Sequence[str],
    fast: Any,
    precise: Any,
    *,
    candidate_threshold: float,
    threshold: float,
    ids: Sequence[Hashable] | None = None,
    keep: str | KeepRule | None = "first",
    keep_values: Sequence[Any] | Mapping[Hashable, Any] | None = None,
    method: str = "auto",
) -> DuplicateReport:
    """Near-duplicates of ``texts``: ``fast`` (e.g. a ``StaticEncoder``) searches every row at
    ``candidate_threshold``; ``precise`` (e.g. a ``SentenceEncoder``) encodes only the rows in
    its pairs and decides at ``threshold``. Both are encoders with ``transform``.

    >>> from embetter_core import SentenceEncoder, StaticEncoder
    >>> texts = ["apt package manager", "the apt package manager", "a photo editor"]
    >>> report = find_duplicates_two_stage(
    ...     texts, StaticEncoder(), SentenceEncoder(), candidate_threshold=0.8, threshold=0.82
    ... )
    >>> report.removed
    {1: (0, 0.95...)}
    """
    texts = list(texts)
    first = find_duplicates(
        fast.transform(texts),
        ids=ids,
        threshold=candidate_threshold,
        method=method,
        texts=texts,
        keep=keep,
        keep_values=keep_values,
        floor=candidate_threshold,  # only the rows at it are used: search no lower
    )
    rows = candidate_rows(first)
    vectors = precise.transform([texts[i] for i in rows]) if len(rows) else np.zeros((0, 1))
    return rescore_report(first, rows, vectors, threshold)
