"""A default floor that would overflow max_candidates is raised (never a failure); a given
floor raises the error naming the floor that would fit (issue 22, item 1)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from embetter_core.dedupe import find_duplicates, find_duplicates_incremental
from embetter_core.errors import CandidateOverflowError

THRESHOLD = 0.97  # default floor 0.87


def _crowded(n: int = 400, seed: int = 0) -> np.ndarray:
    """Random directions in 3-D: pair similarities are uniform on [-1, 1], so about 6.5 %
    of the pairs lie above the default floor and 1.5 % above the threshold."""
    return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)


def _pairs_above(X: np.ndarray, t: float) -> int:
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = U @ U.T
    return int((np.triu(S, 1) >= t).sum())


@pytest.mark.parametrize("method", ["exact", "ann"])
def test_default_floor_is_raised_to_fit(method: str, caplog: pytest.LogCaptureFixture) -> None:
    X = _crowded()
    limit = 3000
    assert _pairs_above(X, 0.87) > limit > 2 * _pairs_above(X, THRESHOLD)
    with caplog.at_level(logging.WARNING, logger="embetter_core.dedupe.floors"):
        report = find_duplicates(X, threshold=THRESHOLD, method=method, max_candidates=limit)
    assert 0.87 < report.floor < THRESHOLD
    assert report.params["floor_raised_from"] == pytest.approx(0.87)
    assert len(report.candidates) <= limit
    assert "raised the floor to" in caplog.text
    full = find_duplicates(X, threshold=THRESHOLD, method="exact")
    if method == "exact":  # the pairs at the threshold are all there
        assert report.pairs == full.pairs
    assert report.rethreshold(report.floor).pairs  # rethreshold goes down to the new floor


def test_partitioned_default_floor_is_raised_like_ann(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """The out-of-core engine too, its input read from an HDF5 dataset: the raised floor,
    and then the same candidates as ann at that floor."""
    import h5py

    X = _crowded()
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["x"] = X
    kw = {"threshold": THRESHOLD, "max_candidates": 3000, "memory_budget": "1GiB"}
    with h5py.File(tmp_path / "v.h5", "r") as f, caplog.at_level(logging.WARNING):
        report = find_duplicates(f["x"], method="partitioned", **kw)
    assert 0.87 < report.floor < THRESHOLD
    assert report.params["floor_raised_from"] == pytest.approx(0.87)
    assert report.params["engine"] == "partitioned"
    assert "raised the floor to" in caplog.text
    ann = find_duplicates(X, method="ann", **kw)
    assert ann.floor == report.floor
    assert report.candidates.scores.tolist() == ann.candidates.scores.tolist()
    with pytest.raises(CandidateOverflowError, match=r"above floor=0\.87: floor=0\.9\d+ would"):
        find_duplicates(X, method="partitioned", floor=0.87, **kw)


def test_given_floor_names_the_floor_that_fits() -> None:
    X = _crowded()
    with pytest.raises(CandidateOverflowError, match=r"above floor=0\.87: floor=0\.9\d+ would"):
        find_duplicates(X, threshold=THRESHOLD, floor=0.87, method="exact", max_candidates=3000)


def test_overflow_at_the_threshold_still_fails() -> None:
    X = _crowded()
    with pytest.raises(CandidateOverflowError, match="raise the threshold or max_candidates"):
        find_duplicates(X, threshold=THRESHOLD, method="exact", max_candidates=100)


def test_incremental_keeps_the_raised_floor(tmp_path) -> None:
    X = _crowded(440)
    state = tmp_path / "s.npz"
    first = find_duplicates_incremental(
        X[:400], state, threshold=THRESHOLD, method="exact", max_candidates=3000
    )
    assert first.floor > 0.87
    second = find_duplicates_incremental(
        X, state, threshold=THRESHOLD, method="exact", max_candidates=3000
    )
    assert second.params["incremental"]["mode"] == "incremental"
    assert second.floor == first.floor
    full = find_duplicates(X, threshold=THRESHOLD, floor=first.floor, method="exact")
    assert second.pairs == full.pairs
