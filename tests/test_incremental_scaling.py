"""The incremental run's shortcuts at scale: rows appended to the state's (ids matched by one
list comparison), a state file with narrow integers, clusters built by slicing one list;
each gives what the general path gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embetter_core.dedupe import DedupeState, decide, find_duplicates, find_duplicates_incremental
from embetter_core.dedupe.candidates import Candidates
from embetter_core.dedupe.incremental import _state_rows
from tests.test_incremental import planted, same_as_full


def test_appended_ids_match_as_the_general_lookup_does() -> None:
    state_ids = np.array([f"id-{i:03d}" for i in range(50)])
    appended = state_ids.tolist() + ["new-1", "new-0"]
    rows = _state_rows(state_ids, appended, Path("s.npz"))
    assert rows.tolist() == list(range(50)) + [-1, -1]
    moved = appended[::-1]  # not a prefix: the dictionary path
    rows = _state_rows(state_ids, moved, Path("s.npz"))
    assert rows.tolist() == [-1, -1] + list(range(49, -1, -1))


@pytest.mark.parametrize("method", ["exact", "ann"])
def test_appended_rows_give_the_full_runs_report(tmp_path, method) -> None:
    X = planted(900, seed=3)
    rng = np.random.default_rng(3)
    X[850:] = X[rng.choice(850, size=50)] + 0.1 * rng.standard_normal((50, X.shape[1]))
    ids = [f"row-{i:04d}" for i in range(len(X))]
    path = tmp_path / "v.dedupe-state.npz"
    kw = {"threshold": 0.85, "method": method, "nlist": 16}
    find_duplicates_incremental(X[:850], path, ids[:850], **kw)
    inc = find_duplicates_incremental(X, path, ids, **kw)
    info = inc.params["incremental"]
    assert (info["mode"], info["fresh"], info["unchanged"]) == ("incremental", 50, 850)
    if method == "exact":
        same_as_full(inc, find_duplicates(X, ids, **kw))
    else:  # the full run's pairs with a new row (ann misses none at this size)
        new_pairs = {p[:2] for p in find_duplicates(X, ids, **kw).pairs if p[1] >= "row-085"}
        assert new_pairs and new_pairs <= {p[:2] for p in inc.pairs}


def test_state_file_keeps_rows_and_cells_in_narrow_integers(tmp_path) -> None:
    X = planted(700, seed=7)
    ids = [f"row-{i:05d}" for i in range(len(X))]
    path = tmp_path / "v.dedupe-state.npz"
    report = find_duplicates_incremental(X, path, ids, threshold=0.85, method="ann", nlist=20)
    with np.load(path) as data:
        assert data["a"].dtype == np.int16 and data["cells_visit_cells"].dtype == np.int16
    state = DedupeState.load(path)
    assert state.a.dtype == state.cells.visit_rows.dtype == np.int64
    np.testing.assert_array_equal(state.a, report.candidates.a)
    np.testing.assert_array_equal(state.b, report.candidates.b)
    np.testing.assert_array_equal(state.cells.visit_rows, report.candidates.cells.visit_rows)
    np.testing.assert_array_equal(state.cells.primary, report.candidates.cells.primary)


def test_clusters_are_largest_first_then_by_first_id() -> None:
    rng = np.random.default_rng(5)
    n = 400
    a = rng.integers(0, n, 300)
    b = rng.integers(0, n, 300)
    a, b = np.minimum(a, b)[a != b], np.maximum(a, b)[a != b]
    rank = rng.permutation(n)
    cand = Candidates(a=a, b=b, scores=np.ones(len(a), np.float32), rank=rank, floor=0.5)
    ids = [f"r{i}" for i in range(n)]
    _, clusters, _ = decide._decide(ids, cand, 0.9, None)
    # the simple form: union the pairs, members by rank, sort by (-size, first member's rank)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        parent[root(x)] = root(y)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    simple = [sorted(g, key=lambda r: rank[r]) for g in groups.values() if len(g) > 1]
    simple.sort(key=lambda g: (-len(g), rank[g[0]]))
    assert clusters == [[ids[r] for r in g] for g in simple]
    assert len(clusters) > 10
