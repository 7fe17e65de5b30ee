"""find_duplicates / DuplicateReport: exactness, completeness, rethreshold, determinism,
bad inputs, the ann engine against exact, h5py input and real MiniLM vectors."""

from __future__ import annotations

import math
import pickle
import warnings

import h5py
import numpy as np
import pytest

from embetter_core import dedupe
from embetter_core.dedupe import DuplicateReport, DuplicateSearchError, find_duplicates


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
    # one kept per cluster (the smallest id); every other member removed, pointing at it
    assert len(report.removed) == sum(len(c) - 1 for c in expected)
    scores = as_dict(report)
    for cluster in report.clusters:
        for member in cluster[1:]:
            kept, score = report.removed[member]
            assert kept == cluster[0]
            if (kept, member) in scores:
                assert score == scores[(kept, member)]
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


def test_chain_member_reports_its_direct_score_or_nan() -> None:
    angle = math.acos(0.95)
    vecs = np.array([[math.cos(k * angle), math.sin(k * angle)] for k in range(3)])
    far = find_duplicates(vecs, ids=["a", "b", "c"], threshold=0.9, floor=0.85)
    assert far.clusters == [["a", "b", "c"]]
    assert far.removed["b"] == ("a", pytest.approx(0.95, abs=1e-6))
    assert far.removed["c"][0] == "a" and math.isnan(far.removed["c"][1])  # cos = 0.805
    near = find_duplicates(vecs, ids=["a", "b", "c"], threshold=0.9, floor=0.8)
    assert near.removed["c"][1] == pytest.approx(math.cos(2 * angle), abs=1e-6)


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
    base = find_duplicates(X, ids=ids, threshold=0.85, method=method, block_size=128)
    nearest = dict(zip(base.ids, base.nearest, strict=True))
    for seed in (1, 2):
        perm = np.random.default_rng(seed).permutation(len(X))
        other = find_duplicates(
            X[perm], ids=[ids[i] for i in perm], threshold=0.85, method=method, block_size=128
        )
        same_report(base, other)
        assert other.recall_estimate == base.recall_estimate
        assert all(nearest[i] == v for i, v in zip(other.ids, other.nearest, strict=True))
    tied = [p for p in base.pairs if p[0] in ids[100:106] or p[0] == ids[7]]
    assert len(tied) == 21  # 7 copies
    assert tied == sorted(tied, key=lambda p: (-p[2], p[0], p[1]))


def test_ann_is_repeatable_and_threads_do_not_change_it() -> None:
    X = planted(3000, seed=6)
    first = find_duplicates(X, threshold=0.8, method="ann")
    same_report(first, find_duplicates(X, threshold=0.8, method="ann"))
    same_report(first, find_duplicates(X, threshold=0.8, method="ann", n_jobs=2, block_size=64))


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
    monkeypatch.setattr(dedupe, "AUTO_EXACT_MAX_ROWS", 500)
    assert find_duplicates(X, threshold=0.9).method == "ann"


# ----------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------
def test_h5py_dataset_gives_the_same_report(tmp_path, monkeypatch) -> None:
    X = planted(1000, seed=9)
    path = tmp_path / "store.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("embeddings", data=X, chunks=(100, X.shape[1]))
    monkeypatch.setattr(dedupe, "_READ_BLOCK", 256)  # several blocks
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
        ({"texts": ["a"]}, "texts has length 1 but embeddings have 4 rows"),
        ({"texts": {0: "a"}}, "texts has no entry for 3 ids"),
    ],
)
def test_bad_arguments(kwargs, message) -> None:
    args = {"embeddings": np.eye(4), **kwargs}
    with pytest.raises(DuplicateSearchError, match=message):
        find_duplicates(**args)


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
    # c joins through b; the kept row follows rank (id order), not the input position
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
    assert report.removed["b"] == ("a", 0.98) and math.isnan(report.removed["c"][1])
    assert report.recall_estimate == 1.0 and np.isnan(report.nearest).all()
    assert report.keep_pairs([False, True]).clusters == [["b", "c"]]
    with pytest.raises(ValueError, match="one entry per pair"):
        dedupe.Candidates(
            a=np.array([0]), b=np.array([1, 2]), scores=np.ones(1), rank=None, floor=1
        )


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
