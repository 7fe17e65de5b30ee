"""From candidates to a decision: the pairs at a threshold, their clusters (connected
components), and the rows removed in keep order (a row is removed only for a kept row it
directly duplicates, never through a chain); also the exact-duplicate groups.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from embetter_core.dedupe.keep import KeepRule, align_values
from embetter_core.dedupe.pair_list import PairList
from embetter_core.errors import DuplicateSearchError

if TYPE_CHECKING:
    pass
from embetter_core.dedupe.candidates import Candidates


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
) -> tuple[PairList, list[list[Any]], dict[Any, tuple[Any, float]]]:
    """The pairs at ``threshold``, their clusters (connected components, members in id
    order), and the removed rows: rows taken in ``keep_rank`` order (None: input order),
    each removed when it pairs with a row kept before it, pointing at the best such row."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(ids)
    rank = cand.rank
    a, b, s = _at_threshold(cand, threshold)
    id_arr = np.empty(n, dtype=object)
    id_arr[:] = ids
    pairs = PairList(id_arr, a, b, s)  # tuples made as they are read

    clusters: list[list[Any]] = []
    removed: dict[Any, tuple[Any, float]] = {}
    if len(a):
        graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
        del graph
        sizes = np.bincount(labels)
        rows = np.flatnonzero(sizes[labels] > 1)
        rows = rows[np.lexsort((rank[rows], labels[rows]))]
        starts = np.flatnonzero(np.r_[True, labels[rows][1:] != labels[rows][:-1]])
        ends = np.r_[starts[1:], len(rows)]
        by = np.lexsort((rank[rows[starts]], starts - ends))  # largest first, then first id
        flat = id_arr[rows].tolist()  # slices of one list: no array per cluster
        clusters = [flat[s:e] for s, e in zip(starts[by].tolist(), ends[by].tolist(), strict=True)]
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


def decision_counts(
    cand: Candidates, thresholds: Sequence[float], keep_rank: np.ndarray | None
) -> list[dict[str, float | int]]:
    """What :func:`_decide` would decide at each of ``thresholds`` (each at least
    ``cand.floor``), as counts only: ``pairs``, ``clusters``, ``removed`` and ``kept`` rows.
    The same pair mask, components and keep-order removal, without building id lists (a
    few ms per threshold at 100,000s of pairs).

    >>> import numpy as np
    >>> cand = Candidates(a=np.array([0, 1]), b=np.array([1, 2]), rank=np.arange(3),
    ...     scores=np.array([0.97, 0.91], dtype=np.float32), floor=0.9)
    >>> counts = decision_counts(cand, [0.9, 0.95], None)
    >>> [(c["threshold"], c["pairs"], c["clusters"], c["removed"]) for c in counts]
    [(0.9, 2, 1, 1), (0.95, 1, 1, 1)]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(cand.rank)
    if keep_rank is None:
        keep_rank = np.arange(n, dtype=np.int64)
    out: list[dict[str, float | int]] = []
    descending = _is_descending(cand.scores)
    for threshold in thresholds:
        threshold = _check_threshold(threshold, cand.floor)
        a, b, s = _at_threshold(cand, threshold, descending)
        clusters = removed = 0
        if len(a):
            graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
            _, labels = connected_components(graph, directed=False)
            clusters = int((np.bincount(labels) > 1).sum())
            removed = len(_remove_in_keep_order(n, a, b, s, keep_rank)[0])
        out.append(
            {
                "threshold": threshold,
                "pairs": len(a),
                "clusters": clusters,
                "removed": removed,
                "kept": n - removed,
            }
        )
    return out


def _is_descending(scores: np.ndarray) -> bool:
    return bool(len(scores) < 2 or (scores[:-1] >= scores[1:]).all())


def _at_threshold(
    cand: Candidates, threshold: float, descending: bool | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates' ``(a, b, scores)`` scoring at least ``threshold``: a prefix (views, no
    copies) when they come best first, as a search's do."""
    scores = cand.scores
    if _is_descending(scores) if descending is None else descending:
        k = len(scores) - int(np.searchsorted(scores[::-1], np.float32(threshold), side="left"))
        return cand.a[:k], cand.b[:k], scores[:k]
    take = scores >= np.float32(threshold)
    return cand.a[take], cand.b[take], scores[take]


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
    # rows, ranks and pair positions as int32 where they fit: half the bytes of a pair (10M
    # pairs at 5M rows), the arrays freed as soon as they are used
    small = _index_dtype(n)
    rank = keep_rank.astype(small, copy=False)
    a, b = a.astype(small), b.astype(small)
    early = rank[a] < rank[b]
    later = np.where(early, b, a)
    earlier = np.where(early, a, b)
    del a, b, early
    order = _lexsort_by_later(rank[later], rank[earlier], scores)
    later, earlier, pair_scores = later[order], earlier[order], scores[order]
    del order

    undecided, kept, removed = 0, 1, 2
    state = np.full(n, kept, dtype=np.int8)
    state[later] = undecided  # a row with no earlier partner is kept
    open_pairs = np.arange(len(later), dtype=_index_dtype(len(later)))
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
    return (
        later[first].astype(np.int64),
        earlier[first].astype(np.int64),
        pair_scores[first].astype(np.float64),
    )


def _index_dtype(n: int) -> type:
    """int32 for indices below ``n`` when they fit, else int64."""
    return np.int32 if n < 2**31 else np.int64


def _lexsort_by_later(
    later_rank: np.ndarray, earlier_rank: np.ndarray, scores: np.ndarray
) -> np.ndarray:
    """``np.lexsort((earlier_rank, -scores, later_rank))``, 4x faster when the scores come
    sorted descending (candidate order): one sort of (later rank, position) keys, which are
    unique, then each run of equal later rank and score put in ``earlier_rank`` order."""
    m = len(scores)
    if m < 2 or int(later_rank.max()) >= 2**62 // m or not (scores[:-1] >= scores[1:]).all():
        return np.lexsort((earlier_rank, -scores, later_rank))
    keys = later_rank.astype(np.int64)
    keys *= m
    keys += np.arange(m)
    order = np.argsort(keys)
    del keys
    rank, score = later_rank[order], scores[order]
    tie = (rank[1:] == rank[:-1]) & (score[1:] == score[:-1])
    if tie.any():
        at = np.flatnonzero(np.r_[tie, False] | np.r_[False, tie])
        run = np.cumsum(np.r_[True, ~tie])[at]
        order[at] = order[at[np.lexsort((earlier_rank[order[at]], run))]]
    return order


def _codes_by_hash(keys: list[Any]) -> np.ndarray:
    """Each key's group code: the row of its first occurrence (-1 for None). Rows are
    grouped by Python's (cached) hash in pandas' hash table, and only the rows whose hash
    another row shares are grouped by key in a dict, which splits any hash collision: at
    1M mostly distinct texts 0.08 s against 0.27 s for one dict over all keys (a 1M-entry
    dict misses the cache), the same for 64k.

    >>> _codes_by_hash(["a", "b", "a", None, None, b"a"]).tolist()
    [0, 1, 0, -1, -1, 5]
    """
    import pandas as pd

    n = len(keys)
    by_hash = pd.factorize(np.fromiter(map(hash, keys), dtype=np.int64, count=n))[0]
    shared = np.flatnonzero(np.bincount(by_hash)[by_hash] > 1)  # ascending rows
    codes = np.arange(n, dtype=np.int64)  # a key no other row's hash matches: its own row
    first: dict[Any, int] = {}  # a key's first row names its group
    at = shared.tolist()
    codes[shared] = np.fromiter(
        map(first.setdefault, [keys[r] for r in at], at), dtype=np.int64, count=len(at)
    )
    if None in first:
        codes[codes == first[None]] = -1
    return codes


def _groups_by_key(keys: list[Any], ids: list[Any], rank: np.ndarray) -> list[list[Any]]:
    """Groups (size >= 2) of ids sharing a key (None never groups), in id order; largest
    first, ties by first id."""
    import pandas as pd

    kinds = set(map(type, keys))
    if kinds <= {str, bytes, type(None)}:  # texts, digests
        codes = _codes_by_hash(keys)
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
