"""find_duplicates / DuplicateReport: exactness, completeness, rethreshold, determinism,
bad inputs, the ann engine against exact, h5py input and real MiniLM vectors."""

from __future__ import annotations

import datetime
import math
import pickle
import warnings

import h5py
import numpy as np
import pytest

from embetter_core import dedupe
from embetter_core.dedupe import DuplicateReport, checks, find_duplicates
from embetter_core.dedupe import find as find_module
from embetter_core.dedupe import settings as settings_module
from embetter_core.errors import DuplicateSearchError


def planted(n: int, d: int = 48, seed: int = 0, big: int = 0, groups: list | None = None):
    """Random rows with planted near-duplicate groups (one of size ``big`` if given, first);
    the groups' rows are appended to ``groups`` when it is given."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    rows = rng.permutation(n)
    pos = 0
    sizes = ([big] if big else []) + [2] * 40 + [3] * 15 + [8] * 4
    for size in sizes:
        if pos + size > n // 2:
            break
        centre = rng.standard_normal(d)
        sigma = 0.15 if size == big else rng.uniform(0.05, 0.5)
        X[rows[pos : pos + size]] = centre + sigma * rng.standard_normal((size, d))
        if groups is not None:
            groups.append(set(rows[pos : pos + size].tolist()))
        pos += size
    return X


def brute_force(X: np.ndarray, threshold: float) -> tuple[dict[tuple[int, int], float], np.ndarray]:
    """All pairs >= threshold with scores, and each row's nearest similarity, in float64."""
    Xn = X.astype(np.float64)
    Xn /= np.linalg.norm(Xn, axis=1, keepdims=True)
    sims = Xn @ Xn.T
    np.fill_diagonal(sims, -np.inf)
    a, b = np.nonzero(np.triu(sims, 1) >= threshold)
    return {(int(i), int(j)): float(sims[i, j]) for i, j in zip(a, b, strict=True)}, sims.max(1)


def as_dict(report: DuplicateReport) -> dict[tuple, float]:
    return {(a, b): s for a, b, s in report.pairs}


def greedy_removals(report: DuplicateReport, order: list) -> dict:
    """The removals, decided in plain Python: ids in keep ``order``; each removed when it
    pairs with an already kept id (pointing at the best one), else kept."""
    partners: dict = {}
    for a, b, score in report.pairs:
        partners.setdefault(a, []).append((b, score))
        partners.setdefault(b, []).append((a, score))
    place = {i: k for k, i in enumerate(order)}
    kept: set = set()
    removed = {}
    for i in order:
        hits = [(-score, place[j], j, score) for j, score in partners.get(i, []) if j in kept]
        if hits:
            _, _, j, score = min(hits)
            removed[i] = (j, score)
        elif i in partners:
            kept.add(i)
    return removed


def same_report(r1: DuplicateReport, r2: DuplicateReport) -> None:
    assert r1.pairs == r2.pairs
    assert r1.clusters == r2.clusters
    assert r1.removed == r2.removed
    assert r1.exact_groups == r2.exact_groups
    assert r1.zero_vector_ids == r2.zero_vector_ids


# ----------------------------------------------------------------------------------------
# exact search
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("block_size", "n_jobs"), [(2048, 1), (64, 1), (50, 2)])
def test_exact_matches_brute_force(block_size: int, n_jobs: int) -> None:
    X = planted(1100, seed=1)
    truth, nearest = brute_force(X, 0.8)
    report = find_duplicates(X, threshold=0.8, method="exact", block_size=block_size, n_jobs=n_jobs)
    got = as_dict(report)
    assert len(truth) > 100
    assert set(got) == set(truth)
    assert max(abs(got[k] - truth[k]) for k in truth) < 1e-5
    np.testing.assert_allclose(report.nearest, nearest, atol=1e-5)
    assert report.method == "exact" and report.recall_estimate == 1.0
    scores = [s for _, _, s in report.pairs]
    assert scores == sorted(scores, reverse=True)
    assert all(a < b for a, b, _ in report.pairs)  # default ids: id_a sorts first


def test_clusters_and_removed_follow_the_pairs() -> None:
    X = planted(800, seed=2)
    report = find_duplicates(X, threshold=0.85, method="exact")
    # clusters are the connected components of the pairs (checked with a plain union-find)
    parent = list(range(report.n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, _ in report.pairs:
        parent[root(a)] = root(b)
    comps: dict[int, list[int]] = {}
    for i in range(report.n):
        comps.setdefault(root(i), []).append(i)
    expected = sorted((sorted(c) for c in comps.values() if len(c) > 1), key=lambda c: (-len(c), c))
    assert report.clusters == expected
    # rows in input order: each removed only for a kept row it pairs with, never by a chain
    assert report.removed == greedy_removals(report, list(range(report.n)))
    scores = as_dict(report)
    for member, (kept, score) in report.removed.items():
        assert kept not in report.removed and kept < member  # kept earlier, in input order
        assert score == scores[(kept, member)] >= 0.85
    kept_rows = set(report.selected)
    assert not [p for p in report.pairs if p[0] in kept_rows and p[1] in kept_rows]
    assert sum(len(c) - 1 for c in expected) - len(report.removed) > 0  # some keep 2+ rows
    assert len(report.selected) == report.n - len(report.removed)
    assert set(report.selected).isdisjoint(report.removed)


def test_500_row_cluster_is_found_whole_by_both_engines() -> None:
    groups: list[set[int]] = []
    X = planted(4000, seed=3, big=500, groups=groups)
    big_rows = groups[0]
    for method in ("exact", "ann"):
        report = find_duplicates(X, threshold=0.9, method=method)
        assert report.method == method
        largest = report.clusters[0]
        assert set(largest) == big_rows, method
        inside = [(a, b) for a, b, _ in report.pairs if a in big_rows and b in big_rows]
        assert len(inside) == 500 * 499 // 2, method
        assert sum(1 for r in report.removed.values() if r[0] == largest[0]) == 499


def test_no_chained_removal() -> None:
    # a ~ b ~ c at 0.95 each, a and c at cos 0.805: below the threshold, so c stays
    angle = math.acos(0.95)
    vecs = np.array([[math.cos(k * angle), math.sin(k * angle)] for k in range(3)])
    for floor in (0.85, 0.8):  # with or without the (a, c) pair among the candidates
        report = find_duplicates(vecs, ids=["a", "b", "c"], threshold=0.9, floor=floor)
        assert report.clusters == [["a", "b", "c"]]  # still one cluster, for display
        assert report.removed == {"b": ("a", pytest.approx(0.95, abs=1e-6))}
        assert report.selected == ["a", "c"]
    # kept first in input order: b, which removes both a and c (each its direct duplicate)
    middle = find_duplicates(vecs[[1, 0, 2]], ids=["b", "a", "c"], threshold=0.9)
    assert middle.selected == ["b"] and {k for k, _ in middle.removed.values()} == {"b"}
    # near enough, a removes c directly
    assert find_duplicates(vecs, threshold=0.8).removed[2] == (0, pytest.approx(0.805, abs=1e-3))


# ----------------------------------------------------------------------------------------
# rethreshold
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["exact", "ann"])
def test_rethreshold_up_and_down_equals_a_fresh_search(method: str) -> None:
    X = planted(1500, seed=4)
    report = find_duplicates(X, threshold=0.85, method=method, floor=0.7)
    for t in (0.95, 0.9, 0.8, 0.7):  # up, then down below the original threshold
        moved = report.rethreshold(t)
        fresh = find_duplicates(X, threshold=t, method=method, floor=0.7)
        same_report(moved, fresh)
        assert moved.threshold == t and moved.floor == 0.7
        assert moved.recall_estimate == fresh.recall_estimate
    assert (
        len(report.rethreshold(0.7).pairs) > len(report.pairs) > len(report.rethreshold(0.95).pairs)
    )
    with pytest.raises(DuplicateSearchError, match=r"floor=0\.7"):
        report.rethreshold(0.65)


def test_default_floor_is_below_threshold() -> None:
    report = find_duplicates(planted(300), threshold=0.9)
    assert report.floor == pytest.approx(0.8)
    assert report.rethreshold(0.8).threshold == 0.8


# ----------------------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["exact", "ann"])
def test_same_report_whatever_the_row_order(method: str) -> None:
    X = planted(1200, seed=5)
    X[100:106] = X[7]  # a tie: six identical copies, all pairs score the same
    X[300] = X[301] * 2  # another tie through scaling
    ids = [f"row-{i:04d}" for i in range(len(X))]
    # which rows are kept follows the keep rule: here a column that does not move with the rows
    stars = {i: (k * 7919) % 1201 for k, i in enumerate(ids)}  # no ties: a permutation
    base = find_duplicates(
        X,
        ids=ids,
        threshold=0.85,
        method=method,
        block_size=128,
        keep="column:s",
        keep_values=stars,
    )
    nearest = dict(zip(base.ids, base.nearest, strict=True))
    for seed in (1, 2):
        perm = np.random.default_rng(seed).permutation(len(X))
        other = find_duplicates(
            X[perm],
            ids=[ids[i] for i in perm],
            threshold=0.85,
            method=method,
            block_size=128,
            keep="column:s",
            keep_values=stars,
        )
        same_report(base, other)
        # keep="first" is input order: the permuted run keeps other rows, as it should
        first = other.rekeep("first")
        assert first.removed == greedy_removals(first, first.ids)
        assert other.recall_estimate == base.recall_estimate
        assert all(nearest[i] == v for i, v in zip(other.ids, other.nearest, strict=True))
    tied = [p for p in base.pairs if p[0] in ids[100:106] or p[0] == ids[7]]
    assert len(tied) == 21  # 7 copies
    assert tied == sorted(tied, key=lambda p: (-p[2], p[0], p[1]))


def test_ann_is_repeatable_and_threads_do_not_change_it(monkeypatch) -> None:
    from embetter_core.dedupe import cells

    X = planted(3000, seed=6)
    first = find_duplicates(X, threshold=0.8, method="ann", n_jobs=1)
    same_report(first, find_duplicates(X, threshold=0.8, method="ann", n_jobs=1))
    monkeypatch.setattr(cells, "_READ_BLOCK", 256)  # cells assigned in 12 blocks, threaded
    threaded = find_duplicates(X, threshold=0.8, method="ann", n_jobs=2, block_size=64)
    same_report(first, threaded)
    for name in ("primary", "visit_rows", "visit_cells"):
        np.testing.assert_array_equal(
            getattr(threaded.candidates.cells, name), getattr(first.candidates.cells, name)
        )
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    centroids = first.candidates.cells.centroids
    one = cells._assign_cells(unit, centroids, np.float32(0.7), nprobe=2, probe=5)
    two = cells._assign_cells(unit, centroids, np.float32(0.7), nprobe=2, probe=5, n_jobs=2)
    assert len(one) == len(two) == 5 and len(one[3]) > len(one[1]) >= len(X)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------
# ann against exact
# ----------------------------------------------------------------------------------------
def test_ann_agrees_with_exact() -> None:
    X = planted(5000, d=64, seed=7, big=200)
    exact = find_duplicates(X, threshold=0.85, method="exact")
    ann = find_duplicates(X, threshold=0.85, method="ann", recall_sample=400)
    e, a = as_dict(exact), as_dict(ann)
    assert set(a) <= set(e)  # ann never invents a pair
    assert len(set(a) & set(e)) / len(e) >= 0.99
    assert all(a[k] == e[k] for k in a)  # the same score, bit for bit
    assert ann.method == "ann" and ann.params["nlist"] > 1
    assert 0.95 <= ann.recall_estimate <= 1.0
    # nearest: never above the exact value, and equal for rows that have a duplicate
    both = np.isfinite(ann.nearest)
    assert np.all(ann.nearest[both] <= exact.nearest[both] + 1e-6)
    dup_rows = sorted({i for pair in e for i in pair})
    np.testing.assert_allclose(ann.nearest[dup_rows], exact.nearest[dup_rows], atol=1e-5)


def test_auto_picks_exact_below_the_crossover_and_ann_above(monkeypatch) -> None:
    X = planted(600, seed=8)
    report = find_duplicates(X, threshold=0.9)
    assert report.method == "exact" and report.params["requested_method"] == "auto"
    monkeypatch.setattr(settings_module, "AUTO_EXACT_MAX_ROWS", 500)
    assert find_duplicates(X, threshold=0.9).method == "ann"


# ----------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------
def test_h5py_dataset_gives_the_same_report(tmp_path, monkeypatch) -> None:
    X = planted(1000, seed=9)
    path = tmp_path / "store.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("embeddings", data=X, chunks=(100, X.shape[1]))
    monkeypatch.setattr(checks, "_READ_BLOCK", 256)  # several blocks
    with h5py.File(path, "r") as f:
        from_file = find_duplicates(f["embeddings"], threshold=0.85, method="exact")
    same_report(from_file, find_duplicates(X, threshold=0.85, method="exact"))


def test_exact_groups_from_texts_or_identical_vectors() -> None:
    X = planted(50, seed=10)
    X[10] = X[3]
    X[20] = X[3]
    X[30] = 0.0
    X[31] = 0.0
    texts = [f"text {i}" for i in range(50)]
    texts[5] = texts[40] = "same"
    by_vectors = find_duplicates(X, threshold=0.9)
    assert by_vectors.exact_groups == [[3, 10, 20]]  # zero rows are not a group
    by_texts = find_duplicates(X, threshold=0.9, texts=texts)
    assert by_texts.exact_groups == [[5, 40]]
    mapping = {i: t for i, t in enumerate(texts)}
    assert find_duplicates(X, threshold=0.9, texts=mapping).exact_groups == [[5, 40]]


def test_exact_text_groups_match_grouping_by_equality() -> None:
    """Grouping by hash first (then by key where hashes are shared) gives the groups that
    comparing the keys gives: str and bytes of equal hash apart, None never a group."""
    from embetter_core.dedupe.decide import _groups_by_key

    rng = np.random.default_rng(3)
    pool = [f"t{i}" for i in range(300)] + [b"t1", b"t2", None, "", "t1 "]
    keys = [pool[i] for i in rng.integers(0, len(pool), 2000)]
    ids = [f"r{i}" for i in range(len(keys))]
    want: dict = {}
    for row, key in enumerate(keys):
        if key is not None:
            want.setdefault((type(key), key), []).append(ids[row])
    expected = sorted((g for g in want.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))
    got = _groups_by_key(keys, ids, np.arange(len(keys)))
    assert sorted(got, key=lambda g: (-len(g), g[0])) == expected
    assert [len(g) for g in got] == sorted((len(g) for g in got), reverse=True)
    assert not any(keys[int(g[0][1:])] is None for g in got)


def test_real_minilm_vectors(sentence_encoder, texts) -> None:
    more = [*texts, "A quick embedding cache for text corpora.", "Bananas are yellow."]
    vecs = sentence_encoder.transform(more)
    report = find_duplicates(vecs, ids=[f"t{i}" for i in range(len(more))], texts=more)
    assert report.exact_groups == [["t0", "t3"]]
    assert report.pairs[0][:2] == ("t0", "t3") and report.pairs[0][2] == pytest.approx(1.0)
    assert report.clusters == [["t0", "t3", "t5"]]
    assert "t6" in report.selected and "t5" in report.removed


# ----------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------
def test_nan_and_inf_rows_are_named() -> None:
    X = planted(30)
    X[4, 2] = np.nan
    X[17, 0] = np.inf
    with pytest.raises(DuplicateSearchError, match=r"2 embedding rows.*'b4' \(row 4\).*'b17'"):
        find_duplicates(X, ids=[f"b{i}" for i in range(30)])


def test_zero_vectors_match_nothing_and_are_listed() -> None:
    X = planted(40)
    X[[5, 9]] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero warning
        report = find_duplicates(X, threshold=0.5, floor=0.01, method="exact")
    assert report.zero_vector_ids == [5, 9]
    assert not [p for p in report.pairs if {p[0], p[1]} & {5, 9}]
    assert np.isnan(report.nearest[[5, 9]]).all() and np.isfinite(report.nearest[0])


@pytest.mark.parametrize("shape", [(0, 8), (1, 8), (0,)])
def test_zero_or_one_row_gives_an_empty_report(shape) -> None:
    report = find_duplicates(np.ones(shape, dtype=np.float32))
    assert report.pairs == [] and report.clusters == [] and report.removed == {}
    assert report.n == (shape[0]) and report.nearest.shape == (shape[0],)
    assert report.to_frame().shape[0] == shape[0]


def test_ids_of_the_wrong_length() -> None:
    with pytest.raises(DuplicateSearchError, match="ids has length 3 but embeddings have 5 rows"):
        find_duplicates(np.ones((5, 4)), ids=["a", "b", "c"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"embeddings": np.ones((2, 3, 4))}, r"2-D .* got shape \(2, 3, 4\)"),
        ({"embeddings": np.array([["a", "b"]])}, "numeric"),
        ({"ids": ["x", "y", "x", "z"]}, r"'x' is at positions 0 and 2"),
        ({"threshold": 1.5}, r"threshold must be in \(0, 1\]"),
        ({"threshold": 0.9, "floor": 0.95}, "floor must be"),
        ({"method": "fast"}, "method must be one of"),
        ({"texts": ["a"]}, "texts has 1 entries but there are 4 rows"),
        ({"texts": {0: "a"}}, "texts has no entry for 3 ids"),
    ],
)
def test_bad_arguments(kwargs, message) -> None:
    args = {"embeddings": np.eye(4), **kwargs}
    with pytest.raises(DuplicateSearchError, match=message):
        find_duplicates(**args)


def test_str_ids_checked_in_their_sorted_array() -> None:
    """All-str ids: repeats found in the sorted array (the canonical order's) and named
    from the list; ids NumPy's str array cannot tell apart (a trailing NUL) are unique."""
    from embetter_core.dedupe.checks import _canonical_order, _ids_in_order

    ids = [f"id-{i}" for i in np.random.default_rng(0).permutation(500)]
    values, array, rank, order = _ids_in_order(ids, 500)
    assert values == ids and array.tolist() == ids
    want_rank, want_order = _canonical_order(ids)
    np.testing.assert_array_equal(rank, want_rank)
    np.testing.assert_array_equal(order, want_order)
    with pytest.raises(DuplicateSearchError, match=r"'id-7' is at positions \d+ and 500"):
        _ids_in_order([*ids, "id-7"], 501)
    values, array, rank, _ = _ids_in_order(["b", "a", "a\x00"], 3)
    assert values == ["b", "a", "a\x00"] and array is None and sorted(rank.tolist()) == [0, 1, 2]
    report = find_duplicates(np.eye(3), ids=["b", "a", "a\x00"])
    assert report.ids == ["b", "a", "a\x00"]


def test_too_many_candidates_is_a_clear_error() -> None:
    with pytest.raises(DuplicateSearchError, match="max_candidates=10"):
        find_duplicates(np.ones((20, 4)), max_candidates=10)


# ----------------------------------------------------------------------------------------
# frames, summary, pickling
# ----------------------------------------------------------------------------------------
def test_frames_summary_and_pickle() -> None:
    X = planted(300, seed=11)
    X[0] = 0
    report = find_duplicates(X, ids=[f"r{i}" for i in range(300)], threshold=0.85)
    frame = report.to_frame()
    assert list(frame.columns) == [
        "id", "kept", "duplicate_of", "score", "cluster", "exact_group", "nearest", "zero_vector",
    ]  # fmt: skip
    assert (~frame["kept"]).sum() == len(report.removed)
    assert frame.loc[frame["id"] == "r0", "zero_vector"].item()
    pairs = report.pairs_frame()
    assert list(pairs.columns) == ["id_a", "id_b", "score"] and len(pairs) == len(report.pairs)
    summary = report.summary()
    assert summary["pairs"] == len(report.pairs) and summary["zero_vectors"] == 1
    assert summary["kept"] + summary["removed"] == 300
    again = pickle.loads(pickle.dumps(report))
    same_report(again, report)
    same_report(again.rethreshold(0.9), report.rethreshold(0.9))


# ----------------------------------------------------------------------------------------
# candidates: the report decided again from what the search kept
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["exact", "ann"])
def test_report_from_its_candidates_equals_the_search(method: str) -> None:
    X = planted(1500, seed=14)
    ids = [f"c{i:04d}" for i in np.random.default_rng(0).permutation(len(X))]
    report = find_duplicates(X, ids=ids, threshold=0.85, method=method, floor=0.7)
    cand = report.candidates
    assert len(cand) >= len(report.pairs) > 50
    assert cand.floor == 0.7 and cand.scores.dtype == np.float32
    assert np.all(cand.scores[:-1] >= cand.scores[1:]) and np.all(cand.scores >= 0.7)
    assert np.all(cand.rank[cand.a] < cand.rank[cand.b])  # id_a sorts before id_b
    head = len(report.pairs)
    got = [(ids[a], ids[b]) for a, b in zip(cand.a[:head], cand.b[:head], strict=True)]
    assert got == [(a, b) for a, b, _ in report.pairs]
    assert (cand.recall is None) == (method == "exact")
    if method == "ann":
        assert cand.recall.estimate(0.85) == report.recall_estimate
        assert len(cand.recall.rows) <= 500 and cand.recall.found.dtype == bool
        assert cand.recall.weights.sum() == pytest.approx(1500)  # each stands for its stratum
    for t in (0.85, 0.75):
        rebuilt = DuplicateReport.from_candidates(
            ids, cand, t, method=method, nearest=report.nearest, params=report.params
        )
        same_report(rebuilt, report.rethreshold(t))
        assert rebuilt.recall_estimate == report.rethreshold(t).recall_estimate
    with pytest.raises(DuplicateSearchError, match=r"floor=0\.7"):
        DuplicateReport.from_candidates(ids, cand, 0.65)
    with pytest.raises(ValueError, match="candidates.rank has 1500 rows but there are 2 ids"):
        DuplicateReport.from_candidates(["x", "y"], cand, 0.9)


def test_candidates_built_by_hand() -> None:
    # rank orders the pairs' ids and clusters; the kept rows follow the input order
    cand = dedupe.Candidates(
        a=np.array([2, 1]),
        b=np.array([1, 0]),
        scores=np.array([0.98, 0.95], dtype=np.float32),
        rank=np.array([2, 1, 0]),
        floor=0.9,
    )
    report = DuplicateReport.from_candidates(["c", "b", "a"], cand, 0.9)
    assert report.pairs == [("a", "b", 0.98), ("b", "c", 0.95)]
    assert report.clusters == [["a", "b", "c"]]
    assert report.removed == {"b": ("c", 0.95)}  # c first (input order); a pairs only with b
    assert report.recall_estimate == 1.0 and np.isnan(report.nearest).all()
    assert report.keep_pairs([False, True]).clusters == [["b", "c"]]
    assert report.rekeep("last").removed == {"b": ("a", 0.98)}
    with pytest.raises(ValueError, match="one entry per pair"):
        dedupe.Candidates(
            a=np.array([0]), b=np.array([1, 2]), scores=np.ones(1), rank=None, floor=1
        )


# ----------------------------------------------------------------------------------------
# keep rules
# ----------------------------------------------------------------------------------------
def keep_fixture():
    """Rows 0-4 identical (one cluster, every pair at 1.0), row 5 unrelated."""
    X = np.zeros((6, 4), dtype=np.float32)
    X[:5, 0] = 1.0
    X[5, 1] = 1.0
    ids = ["e", "d", "c", "b", "a", "z"]  # id order is not input order
    texts = ["xx", "xxxx", "x", "xxxx", "x", "unrelated"]
    return X, ids, texts


@pytest.mark.parametrize(
    ("keep", "values", "kept"),
    [
        ("first", None, "e"),  # input order, not id order ("a")
        ("last", None, "a"),
        ("longest", None, "d"),  # d and b tie at 4 characters: the first wins
        ("shortest", None, "c"),  # c and a tie at 1
        ("column:stars", [3, 9, None, 9, 1, 0], "d"),  # highest; d and b tie
        ("column:stars:desc", ["3", "9", "", "9.0", "1", "0"], "d"),  # strings from a CSV
        ("column:stars:asc", [3, 9, None, 9, 1, 0], "a"),  # lowest; None is never preferred
        ("column:stars:asc", [None, None, 4, None, None, 0], "c"),
        ("column:day", ["2024-01-02", "2024-01-03", "2023-12-31", None, "2024-01-03", "x"], "d"),
        ("column:day:asc", ["2024-01-02", "2024-01-03", "2023-12-31", None, "", "x"], "c"),
    ],
)
def test_keep_rules(keep, values, kept) -> None:
    X, ids, texts = keep_fixture()
    if values is not None:
        values = values[:5] + ([0] if "stars" in keep else ["2020-01-01"])
    report = find_duplicates(X, ids=ids, texts=texts, threshold=0.9, keep=keep, keep_values=values)
    assert report.clusters == [["a", "b", "c", "d", "e"]]  # id order, whatever the rule
    assert sorted(report.selected) == sorted([kept, "z"])
    assert {k for k, _ in report.removed.values()} == {kept}
    assert str(report.keep) == str(dedupe.KeepRule.parse(keep)) == report.summary()["keep"]
    # the same decision made again from the candidates, and kept by rethreshold / keep_pairs
    plain = find_duplicates(X, ids=ids, threshold=0.9, texts=texts)
    again = plain.rekeep(keep, values if values is not None else texts)
    same_report(again, report)
    assert report.rethreshold(0.95).removed == report.removed
    assert report.keep_pairs([True] * len(report.pairs)).removed == report.removed


def test_keep_rule_chooses_per_cluster_without_chains() -> None:
    # a ~ b ~ c (a, c far apart), keep the longest: b kept, a and c both removed for b
    angle = math.acos(0.95)
    vecs = np.array([[math.cos(k * angle), math.sin(k * angle)] for k in range(3)])
    report = find_duplicates(vecs, ids=["a", "b", "c"], threshold=0.9, keep="longest",
                             keep_values=["aa", "bbbb", "ccc"])  # fmt: skip
    assert report.selected == ["b"]
    assert report.removed == {"c": ("b", pytest.approx(0.95)), "a": ("b", pytest.approx(0.95))}
    # shortest: a first, then c (not a duplicate of a), then b: a duplicate of both, best a
    report = report.rekeep("shortest", {"a": "a", "b": "bbb", "c": "cc"})
    assert report.selected == ["a", "c"] and report.removed["b"][0] == "a"


@pytest.mark.parametrize("shape", ["random", "chain", "star"])
def test_no_chain_decision_equals_the_one_by_one_loop(shape) -> None:
    rng = np.random.default_rng({"random": 1, "chain": 2, "star": 3}[shape])
    n = 3000
    if shape == "random":  # many small clusters: decided in rounds
        a = rng.integers(0, n, 6000)
        b = np.clip(a + rng.integers(1, 6, 6000), 0, n - 1)
    elif shape == "chain":  # one round per link: the fallback loop
        a = np.arange(n - 1)
        b = a + 1
    else:
        a = np.zeros(n - 1, dtype=np.int64)
        b = np.arange(1, n)
    keep = a != b
    key = np.unique(np.minimum(a, b)[keep] * n + np.maximum(a, b)[keep])
    scores = np.round(rng.uniform(0.9, 1.0, len(key)), 2).astype(np.float32)  # ties
    order = np.lexsort((key, -scores))
    cand = dedupe.Candidates(
        a=key[order] // n, b=key[order] % n, scores=scores[order], rank=np.arange(n), floor=0.9
    )
    for rule, values in (("first", None), ("column:v", rng.permutation(n))):
        report = DuplicateReport.from_candidates(
            list(range(n)), cand, 0.9, keep=rule, keep_values=values
        )
        order_ids = np.argsort(report.keep_rank).tolist()
        assert report.removed == greedy_removals(report, order_ids)
        assert len(report.removed) >= (n - 1 if (shape, rule) == ("star", "first") else 1)


def test_rekeep_does_not_search_again(monkeypatch) -> None:
    X = planted(600, seed=15)
    report = find_duplicates(X, threshold=0.85)

    def no_search(*args, **kwargs):
        raise AssertionError("searched again")

    monkeypatch.setattr(find_module, "_exact_search", no_search)
    monkeypatch.setattr(find_module, "_ann_search", no_search)
    last = report.rekeep("last")
    assert last.removed == greedy_removals(last, last.ids[::-1])
    assert last.removed != report.removed and last.pairs == report.pairs
    assert last.kept_mask.tolist() == [i not in last.removed for i in last.ids]
    assert last.rethreshold(0.9).keep == last.keep
    assert pickle.loads(pickle.dumps(last)).removed == last.removed


def test_removed_frame() -> None:
    X, ids, texts = keep_fixture()
    X[2, 1] = 0.3  # "c" is a near-duplicate, not an identical row
    texts[3] = texts[0]  # "b" has the same text as the kept "e"
    report = find_duplicates(X, ids=ids, threshold=0.9, texts=texts)
    frame = report.removed_frame(texts)
    assert list(frame.columns) == ["id", "kept_id", "similarity", "cluster", "exact"]
    assert frame["id"].tolist() == ["d", "c", "b", "a"]  # input order
    assert set(frame["kept_id"]) == {"e"} and frame["cluster"].tolist() == [0] * 4
    assert frame["exact"].tolist() == [False, False, True, False]
    assert frame["similarity"].notna().all()
    assert frame.loc[frame["id"] == "c", "similarity"].item() == pytest.approx(1 / 1.044, 1e-3)
    # without texts: the exact-duplicate groups decide (here identical texts, from find_duplicates)
    assert report.removed_frame()["exact"].tolist() == [False, False, True, False]
    by_vectors = find_duplicates(X, ids=ids, threshold=0.9)
    assert by_vectors.removed_frame()["exact"].tolist() == [True, False, True, True]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep": "biggest"}, r"keep rule 'biggest' is not one of first, last, longest"),
        ({"keep": "column:"}, r"keep rule 'column:' is not one of"),
        ({"keep": "column:stars:up"}, r"needs the rows' values: pass keep_values"),
        ({"keep": 3}, "keep must be a rule name"),
        ({"keep": "longest"}, r"keep='longest' needs the rows' texts"),
        ({"keep": "longest", "keep_values": [1, 2]}, "keep_values has 2 entries but there are 6"),
        ({"keep": "column:s", "keep_values": {"e": 1}}, "keep_values has no entry for 5 ids"),
        (
            {"keep": "column:s", "keep_values": [1, 2, "x", 4, 5, 6]},
            r"column 's' is not numeric "
            r"or dates: row 2 holds 'x'",
        ),  # fmt: skip
        ({"keep": "column:s", "keep_values": [None] * 6}, "column 's' holds no values"),
        (
            {"keep": "column:s", "keep_values": [1, datetime.date(2024, 1, 1), 2, 3, 4, 5]},
            "column 's' mixes numbers and dates: row 1",
        ),  # fmt: skip
    ],
)
def test_bad_keep_rules_fail_before_the_search(monkeypatch, kwargs, message) -> None:
    X, ids, _ = keep_fixture()

    def no_search(*args, **kw):
        raise AssertionError("searched")

    monkeypatch.setattr(find_module, "_exact_search", no_search)
    with pytest.raises(DuplicateSearchError, match=message):
        find_duplicates(X, ids=ids, threshold=0.9, **kwargs)


def test_ann_recall_estimate_without_a_sample_is_nan() -> None:
    X = planted(400, seed=12)
    report = find_duplicates(X, threshold=0.85, method="ann", recall_sample=0)
    assert math.isnan(report.recall_estimate)
    assert report.pairs == find_duplicates(X, threshold=0.85, method="exact").pairs


def test_other_dtypes_give_the_same_pairs() -> None:
    X = planted(300, seed=13)
    base = as_dict(find_duplicates(X, threshold=0.85))

    def close(report: DuplicateReport) -> bool:
        got = as_dict(report)
        return set(got) == set(base) and all(abs(got[k] - base[k]) < 1e-5 for k in got)

    assert close(find_duplicates(X.astype(np.float64), threshold=0.85))
    # float64 rows too large for float32 are normalised before narrowing, not flagged as inf
    assert close(find_duplicates(X.astype(np.float64) * 1e300, threshold=0.85))
    ints = np.rint(X * 1000).astype(np.int32)
    assert set(as_dict(find_duplicates(ints, threshold=0.85))) == set(base)
