"""find_reference_duplicates / find_duplicates(reference=...): complete matches against brute
force for both engines (no top-k cap), order independence, a store from an earlier run as the
reference, and the refusals: another encoder, another dimension, non-finite rows, bad ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embetter_core.dedupe import ReferenceMatches, check_reference_store, find_reference_duplicates
from embetter_core.errors import DuplicateSearchError, FingerprintMismatchError
from embetter_core.store import EmbeddingStore


def planted(n: int = 700, m: int = 2500, d: int = 32, seed: int = 0):
    """Rows and a reference with planted matches: 60 rows copy a reference row with noise
    (cosines both sides of 0.9), and row 0 sits in the middle of 300 tight reference rows."""
    rng = np.random.default_rng(seed)
    R = rng.standard_normal((m, d)).astype(np.float32)
    X = rng.standard_normal((n, d)).astype(np.float32)
    centre = rng.standard_normal(d)
    big = min(300, m // 5)
    R[:big] = centre + 0.1 * rng.standard_normal((big, d))
    X[0] = centre
    for row in range(1, min(61, n // 3)):
        source = big + (7 * row) % (m - big)
        X[row] = R[source] + rng.uniform(0.05, 0.6) * rng.standard_normal(d)
    return X, R


def brute_force(X: np.ndarray, R: np.ndarray, threshold: float):
    """All (row, reference row) pairs >= threshold with scores, and each row's best, float64."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Rn = R / np.linalg.norm(R, axis=1, keepdims=True)
    sims = Xn.astype(np.float64) @ Rn.astype(np.float64).T
    a, b = np.nonzero(sims >= threshold)
    return {(int(i), int(j)): sims[i, j] for i, j in zip(a, b, strict=True)}, sims.max(axis=1)


def as_dict(matches: ReferenceMatches) -> dict[tuple, float]:
    return {(i, j): s for i, j, s in matches.pairs}


@pytest.mark.parametrize(("block_size", "n_jobs"), [(1024, 1), (64, 2)])
def test_exact_matches_brute_force(block_size: int, n_jobs: int) -> None:
    X, R = planted()
    truth, best = brute_force(X, R, 0.9)
    matches = find_reference_duplicates(
        X, R, threshold=0.9, method="exact", block_size=block_size, n_jobs=n_jobs
    )
    got = as_dict(matches)
    assert len(truth) > 300
    assert set(got) == set(truth)
    assert max(abs(got[k] - truth[k]) for k in truth) < 1e-5
    np.testing.assert_allclose(matches.nearest, best, atol=1e-5)
    # no top-k cap: row 0 lists every one of the 300 reference rows around it
    assert sum(1 for i, _ in got if i == 0) == 300
    assert matches.method == "exact" and matches.recall_estimate == 1.0
    scores = matches.scores.tolist()
    assert scores == sorted(scores, reverse=True)
    assert matches.summary()["rows_matched"] == len({i for i, _ in truth})


def test_ann_is_complete_on_clustered_data_and_says_so() -> None:
    X, R = planted(seed=1)
    truth, best = brute_force(X, R, 0.9)
    matches = find_reference_duplicates(X, R, threshold=0.9, method="ann", nlist=40)
    assert matches.method == "ann" and matches.params["nlist"] == 40
    assert set(as_dict(matches)) == set(truth)
    assert sum(1 for i, _ in as_dict(matches) if i == 0) == 300
    assert matches.recall_estimate == 1.0
    # the best similarity is exact wherever the best reference row was compared
    found = np.isclose(matches.nearest, best, atol=1e-5)
    assert found[list({i for i, _ in truth})].all()


def test_ann_probing_every_cell_is_exact_and_recall_is_measured() -> None:
    rng = np.random.default_rng(2)
    R = rng.standard_normal((3000, 24)).astype(np.float32)
    X = R[:400] + 0.9 * rng.standard_normal((400, 24)).astype(np.float32)  # spread out
    truth, _ = brute_force(X, R, 0.75)
    every = find_reference_duplicates(X, R, threshold=0.75, method="ann", nlist=30, nprobe=30)
    assert set(as_dict(every)) == set(truth) and every.recall_estimate == 1.0
    one = find_reference_duplicates(
        X, R, threshold=0.75, method="ann", nlist=30, nprobe=1, recall_sample=400
    )
    recall = len(set(as_dict(one)) & set(truth)) / len(truth)
    assert set(as_dict(one)) <= set(truth)
    assert recall < 1.0  # one cell per row misses matches here...
    assert abs(one.recall_estimate - recall) < 0.02  # ...and the estimate says how many


def test_results_do_not_depend_on_row_order() -> None:
    X, R = planted(seed=3)
    ids = [f"row-{i}" for i in range(len(X))]
    ref_ids = [f"ref-{j}" for j in range(len(R))]
    base = find_reference_duplicates(X, R, ids=ids, reference_ids=ref_ids, threshold=0.85)
    px = np.random.default_rng(0).permutation(len(X))
    pr = np.random.default_rng(1).permutation(len(R))
    shuffled = find_reference_duplicates(
        X[px],
        R[pr],
        ids=[ids[i] for i in px],
        reference_ids=[ref_ids[j] for j in pr],
        threshold=0.85,
    )
    assert shuffled.pairs == base.pairs
    near = dict(zip(base.row_ids, base.nearest.tolist(), strict=True))
    again = [near[i] for i in shuffled.row_ids]
    np.testing.assert_allclose(shuffled.nearest, again, atol=1e-6)  # BLAS order: last bit


def test_zero_rows_and_empty_inputs() -> None:
    X = np.array([[1, 0], [0, 0], [0.6, 0.8]], dtype=np.float32)
    R = np.array([[1, 0], [0, 0]], dtype=np.float32)
    matches = find_reference_duplicates(X, R, ids=["a", "z", "c"], threshold=0.5)
    assert matches.pairs == [("a", 0, 1.0), ("c", 0, 0.6)]
    assert matches.zero_vector_ids == ["z"]
    assert np.isnan(matches.nearest[1])
    empty = find_reference_duplicates(X, np.empty((0, 2)), threshold=0.5)
    assert len(empty) == 0 and empty.reference_rows == 0 and np.isnan(empty.nearest).all()


def test_write_csv_round_trips(tmp_path) -> None:
    X, R = planted(n=80, m=400, seed=4)
    matches = find_reference_duplicates(
        X, R, ids=[f"r{i}" for i in range(80)], reference_ids=[f"t{j}" for j in range(400)]
    )
    out = matches.write_csv(tmp_path / "out" / "reference_pairs.csv")
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["id", "reference_id", "score"]
    assert len(frame) == len(matches) > 0
    assert list(zip(frame["id"], frame["reference_id"], strict=True)) == [
        (i, j) for i, j, _ in matches.pairs
    ]
    assert not list(tmp_path.joinpath("out").glob("*.partial"))


# ----------------------------------------------------------------------------------------
# A store from an earlier run as the reference, and refusals
# ----------------------------------------------------------------------------------------
def write_store(path, ids, vectors, fingerprint="enc-a"):
    with EmbeddingStore.create(
        path, n=len(ids), dim=vectors.shape[1], fingerprint=fingerprint
    ) as w:
        w.write(0, ids, vectors)
    return path


def test_store_reference_uses_its_ids(tmp_path) -> None:
    X, R = planted(n=100, m=600, seed=5)
    ref_ids = [f"train-{j}" for j in range(len(R))]
    path = write_store(tmp_path / "train.h5", ref_ids, R)
    from_store = find_reference_duplicates(X, path, threshold=0.9, fingerprint="enc-a")
    from_array = find_reference_duplicates(X, R, reference_ids=ref_ids, threshold=0.9)
    assert from_store.pairs == from_array.pairs and len(from_store) > 0
    assert from_store.params["reference"] == f"reference store {path}"
    with EmbeddingStore.open(path) as store:  # an open store works too, and stays open
        assert find_reference_duplicates(X, store, threshold=0.9).pairs == from_array.pairs
        assert len(store.ids) == 600
    assert check_reference_store(path, fingerprint="enc-a", dim=32) == 600


def test_store_from_another_encoder_is_refused_naming_both(tmp_path) -> None:
    X, R = planted(n=20, m=50, seed=6)
    path = write_store(tmp_path / "train.h5", [f"t{j}" for j in range(50)], R, "minilm@rev1")
    for call in (
        lambda: find_reference_duplicates(X, path, fingerprint="clip@rev2"),
        lambda: check_reference_store(path, fingerprint="clip@rev2"),
    ):
        with pytest.raises(FingerprintMismatchError) as err:
            call()
        msg = str(err.value)
        assert "minilm@rev1" in msg and "clip@rev2" in msg and str(path) in msg


def test_another_dimension_is_refused(tmp_path) -> None:
    X, R = planted(n=20, m=50, seed=7)
    with pytest.raises(DuplicateSearchError, match="has 16 dimensions but the embeddings have 32"):
        find_reference_duplicates(X, R[:, :16])
    path = write_store(tmp_path / "narrow.h5", [f"t{j}" for j in range(50)], R[:, :16])
    with pytest.raises(DuplicateSearchError, match=r"narrow\.h5 has 16 dimensions.* makes 32"):
        check_reference_store(path, dim=32)
    with pytest.raises(DuplicateSearchError, match=r"narrow\.h5 has 16 dimensions"):
        find_reference_duplicates(X, path)


def test_bad_reference_rows_and_ids_are_named() -> None:
    X, R = planted(n=20, m=50, seed=8)
    R[7, 3] = np.nan
    ref_ids = [f"t{j}" for j in range(50)]
    with pytest.raises(DuplicateSearchError, match=r"1 rows of the reference contain NaN.*'t7'"):
        find_reference_duplicates(X, R, reference_ids=ref_ids)
    R[7, 3] = 0
    with pytest.raises(DuplicateSearchError, match="reference_ids: ids must be unique: 't1'"):
        find_reference_duplicates(X, R, reference_ids=["t1"] * 50)
    with pytest.raises(DuplicateSearchError, match="reference_ids: ids has length 3"):
        find_reference_duplicates(X, R, reference_ids=["a", "b", "c"])


def test_find_duplicates_with_a_reference_is_deprecated_and_delegates() -> None:
    from embetter_core.dedupe import find_duplicates

    X, R = planted(n=200, m=900, seed=9)
    ids = [f"r{i}" for i in range(len(X))]
    with pytest.warns(DeprecationWarning, match=r"call embetter_core\.dedupe\.find_reference_dup"):
        via = find_duplicates(X, ids=ids, reference=R, threshold=0.9, method="exact")
    direct = find_reference_duplicates(X, R, ids=ids, threshold=0.9, method="exact")
    assert isinstance(via, ReferenceMatches)
    assert via.pairs == direct.pairs and len(via) > 0


def test_every_entry_point_takes_the_search_settings_as_keywords_or_one_object() -> None:
    from embetter_core.dedupe import SearchSettings, find_duplicates

    X, R = planted(n=300, m=400, seed=4)
    settings = SearchSettings(nprobe=2, nlist=8, seed=5)
    by_object = find_reference_duplicates(X, R, threshold=0.9, method="ann", settings=settings)
    by_keywords = find_reference_duplicates(
        X, R, threshold=0.9, method="ann", nprobe=2, nlist=8, seed=5
    )
    assert by_object.pairs == by_keywords.pairs and by_object.params == by_keywords.params
    assert by_object.params["nprobe"] == 2 and by_object.params["seed"] == 5
    report = find_duplicates(X, threshold=0.9, method="ann", settings=settings, seed=6)
    assert report.params["seed"] == 6 and report.params["nlist"] == 8  # keywords win
    with pytest.raises(TypeError, match="unexpected keyword argument 'nprobes'"):
        find_duplicates(X, threshold=0.9, nprobes=3)
    with pytest.raises(DuplicateSearchError, match="block_size must be >= 1, got 0"):
        find_reference_duplicates(X, R, block_size=0)
