"""find_duplicates_incremental: equal to a full run after additions, edits and deletions
(exact), the reused pairs and each searched row against its cells (ann), and a logged full
run, never a silently different report, when the state file is missing, corrupt or from
another setup."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from embetter_core import dedupe
from embetter_core.dedupe import (
    DedupeState,
    DuplicateReport,
    checks,
    decide,
    engines,
    find_duplicates,
    find_duplicates_incremental,
    state_path,
)
from embetter_core.dedupe import (
    cells as ann,
)
from embetter_core.errors import DedupeStateError

LOGGER = "embetter_core.dedupe.incremental"


def planted(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    """Random rows with near-duplicate groups of 2-12 rows (cosines both sides of 0.9)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    rows = rng.permutation(n)
    pos = 0
    for size in [12, 8, 8] + [3] * 20 + [2] * 60:
        if pos + size > n // 2:
            break
        centre = rng.standard_normal(d)
        sigma = rng.uniform(0.1, 0.45)
        X[rows[pos : pos + size]] = centre + sigma * rng.standard_normal((size, d))
        pos += size
    return X


def same_as_full(inc: DuplicateReport, full: DuplicateReport) -> None:
    """Everything a full run decides, compared field by field."""
    assert inc.ids == full.ids
    np.testing.assert_array_equal(inc.candidates.a, full.candidates.a)
    np.testing.assert_array_equal(inc.candidates.b, full.candidates.b)
    np.testing.assert_array_equal(inc.candidates.scores, full.candidates.scores)
    assert inc.pairs == full.pairs
    assert inc.clusters == full.clusters
    assert inc.removed == full.removed
    assert inc.selected == full.selected
    assert inc.exact_groups == full.exact_groups
    assert inc.zero_vector_ids == full.zero_vector_ids
    assert inc.method == full.method and inc.recall_estimate == full.recall_estimate
    for t in (inc.floor, (inc.floor + inc.threshold) / 2, 0.97):
        assert inc.rethreshold(t).removed == full.rethreshold(t).removed


def evolve(X, ids, texts, rng, *, add: int, edit: int, delete: int):
    """The next night's corpus: rows deleted (some in clusters), rows edited (some moved next
    to another row, so a pair appears), rows added (half near-copies of existing rows)."""
    n, d = X.shape
    in_pairs = sorted({i for a, b, _ in find_duplicates(X, threshold=0.8).pairs for i in (a, b)})
    gone = set(rng.choice(in_pairs, size=delete // 2, replace=False).tolist())
    rest = np.array(sorted(set(range(n)) - gone))
    gone |= set(rng.choice(rest, size=delete - len(gone), replace=False).tolist())
    keep = np.array([i for i in range(n) if i not in gone])
    X, ids, texts = X[keep].copy(), [ids[i] for i in keep], [texts[i] for i in keep]
    for row in rng.choice(len(X), size=edit, replace=False):
        if row % 2:
            X[row] = X[rng.integers(len(X))] + 0.2 * rng.standard_normal(d)
        else:
            X[row] = rng.standard_normal(d)
        texts[row] = texts[row] + " (edited)"
    new = rng.standard_normal((add, d)).astype(np.float32)
    near = rng.choice(len(X), size=add // 2, replace=False)
    new[: add // 2] = X[near] + rng.uniform(0.05, 0.4, (add // 2, 1)) * rng.standard_normal(
        (add // 2, d)
    )
    tag = rng.integers(1 << 40)  # new ids never reuse an old one
    new_ids = [f"row-{tag}-{k:04d}" for k in range(add)]
    new_texts = [texts[i] if k < 3 else f"text {tag} {k}" for k, i in enumerate(near)]
    new_texts += [f"text {tag} {k}" for k in range(len(new_texts), add)]
    # new rows interleaved with the old ones: input order, and so `first`, moves too
    order = rng.permutation(len(X) + add)
    X = np.vstack([X, new])[order]
    ids = [(ids + new_ids)[i] for i in order]
    texts = [(texts + new_texts)[i] for i in order]
    return X, ids, texts


@pytest.mark.parametrize("keep", ["first", "longest"])
def test_exact_incremental_equals_full_run_over_several_nights(tmp_path, caplog, keep) -> None:
    rng = np.random.default_rng(1)
    X = planted(1500, seed=1)
    X[5] = 0  # a zero vector stays one
    ids = [f"row-{i:05d}" for i in range(len(X))]
    texts = [f"text {i % 1400}" for i in range(len(X))]  # 100 exact-text duplicates
    state = state_path(tmp_path / "vectors.h5")
    kw = {"threshold": 0.9, "method": "exact", "keep": keep, "fingerprint": "enc-a"}
    with caplog.at_level(logging.INFO, logger=LOGGER):
        first = find_duplicates_incremental(X, state, ids, texts=texts, **kw)
    assert first.params["incremental"]["mode"] == "full" and state.exists()
    assert any("no state" in r.getMessage() for r in caplog.records)
    for night in range(3):
        X, ids, texts = evolve(X, ids, texts, rng, add=60, edit=15, delete=20)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=LOGGER):
            inc = find_duplicates_incremental(X, state, ids, texts=texts, **kw)
        assert not caplog.records  # nothing to say: the state was used
        full = find_duplicates(X, ids, texts=texts, threshold=0.9, method="exact", keep=keep)
        info = inc.params["incremental"]
        assert info["mode"] == "incremental", (night, info)
        assert info["fresh"] == 60 + 15 and info["edited"] == 15 and info["deleted"] == 20
        assert info["reused_pairs"] > 0 and info["rechecked"] > 0
        same_as_full(inc, full)
        assert len(inc.removed) > 50
        # nearest: the full run's value for searched rows and rows with a partner >= floor;
        # else an upper bound (a deleted nearest neighbour below the floor)
        near = np.nan_to_num(full.nearest, nan=-1)
        got = np.nan_to_num(inc.nearest, nan=-1)
        assert (got >= near - 1e-6).all()
        sure = near >= inc.floor
        np.testing.assert_allclose(got[sure], near[sure], atol=1e-6)
        assert np.isnan(inc.nearest[inc.ids.index("row-00005")])


def probe_pairs(
    Xc: np.ndarray, cells: dedupe.AnnCells, searched: np.ndarray, screen: np.float32
) -> dict[tuple[int, int], float]:
    """Brute force of the rule an incremental ann run searches by: each searched row (a
    boolean mask of canonical rows) against every member of its own cell and of its
    FRESH_PROBE * nprobe cells; the pairs (canonical, lo < hi) at ``screen`` and their
    float64 cosines."""
    from embetter_core.dedupe.incremental_ann import FRESH_PROBE

    look = np.flatnonzero(searched)
    *_, pr, pc = ann._assign_cells(
        Xc[look],
        cells.centroids,
        screen,
        nprobe=cells.nprobe,
        max_probe=cells.max_probe,
        probe=FRESH_PROBE * cells.nprobe,
    )
    out = {}
    X64 = Xc.astype(np.float64)
    for i, q in enumerate(look.tolist()):
        near = {int(cells.primary[q]), *pc[pr == i].tolist()}
        cols = np.flatnonzero(np.isin(cells.primary, list(near)))
        cols = cols[cols != q]
        sims = X64[cols] @ X64[q]
        for m, sim in zip(cols[sims >= screen].tolist(), sims[sims >= screen], strict=True):
            out[(min(q, m), max(q, m))] = float(sim)
    return out


def test_ann_incremental_is_the_reused_pairs_and_each_searched_rows_probes(tmp_path) -> None:
    """After additions, edits and deletions: the candidates are the last run's pairs of
    two unchanged rows, and the pairs of each new, edited or rechecked row with the
    members of its cell and of its FRESH_PROBE * nprobe nearest cells."""
    rng = np.random.default_rng(2)
    X0 = planted(4000, seed=2)
    ids0 = [f"row-{i:05d}" for i in range(len(X0))]
    texts = [f"text {i}" for i in range(len(X0))]
    state = tmp_path / "s.dedupe-state.npz"
    kw = {"threshold": 0.85, "method": "ann", "nlist": 40, "nprobe": 2}
    first = find_duplicates_incremental(X0, state, ids0, texts=texts, **kw)
    assert first.params["incremental"]["mode"] == "full"
    assert DedupeState.load(state).cells is not None
    X, ids, texts = evolve(X0, ids0, texts, rng, add=200, edit=40, delete=30)
    inc = find_duplicates_incremental(X, state, ids, texts=texts, **kw)
    info = inc.params["incremental"]
    assert info["mode"] == "incremental" and info["rechecked"] > 0
    assert inc.method == "ann" and inc.params["nlist"] == 40

    before = dict(zip(ids0, X0, strict=True))
    unchanged = {i for i, x in zip(ids, X, strict=True) if i in before and (before[i] == x).all()}
    old_pairs = {
        tuple(sorted((ids0[a], ids0[b])))
        for a, b in zip(first.candidates.a, first.candidates.b, strict=True)
    }
    reused = {p for p in old_pairs if p[0] in unchanged and p[1] in unchanged}
    lost = {i for p in old_pairs - reused for i in p if i in unchanged}  # rechecked
    assert len(lost) == info["rechecked"]
    rank, order = checks._canonical_order(ids)
    Xc, _, _ = checks._load_normalised(X, len(X), rank)
    cells = inc.candidates.cells.renumbered(rank)  # input rows -> search order
    searched = np.array([ids[r] not in unchanged or ids[r] in lost for r in order])
    found = np.array(sorted(probe_pairs(Xc, cells, searched, np.float32(inc.floor - 1e-4))))
    ok = engines._rescore(Xc, found[:, 0], found[:, 1]) >= inc.floor  # as the run scores
    probed = {tuple(sorted((ids[order[a]], ids[order[b]]))) for a, b in found[ok].tolist()}
    want = reused | probed
    pairs = zip(inc.candidates.a, inc.candidates.b, strict=True)
    got = {tuple(sorted((ids[a], ids[b]))) for a, b in pairs}
    assert got == want and len(got) > 100 and len(probed) > 50
    # ...and nearly all of an exact run's pairs, with a recall estimate saying so
    exact = find_duplicates(X, ids, threshold=0.85, method="exact")
    truth = {(a, b) for a, b, _ in exact.pairs}
    mine = {(a, b) for a, b, _ in inc.pairs}
    assert mine <= truth and len(mine) >= 0.97 * len(truth)
    assert 0.9 <= inc.recall_estimate <= 1.0
    sample = inc.candidates.recall
    assert sample is not None and len(sample.rows) > 400
    assert not set(np.asarray(ids)[sample.rows]) - set(ids)  # deleted rows left the sample


def test_state_written_during_the_decision_is_the_reports(tmp_path) -> None:
    """The incremental run hands its state to a thread before deciding the report: the
    file holds the returned report's candidates, nearest, cells and sample, and this
    input's hashes."""
    rng = np.random.default_rng(5)
    X0 = planted(3000, seed=5)
    ids0 = [f"row-{i:05d}" for i in range(len(X0))]
    state = tmp_path / "s.dedupe-state.npz"
    kw = {"threshold": 0.85, "method": "ann", "nlist": 30}
    find_duplicates_incremental(X0, state, ids0, **kw)
    X, ids, _ = evolve(X0, ids0, [""] * len(X0), rng, add=100, edit=20, delete=20)
    inc = find_duplicates_incremental(X, state, ids, **kw)
    assert inc.params["incremental"]["mode"] == "incremental"
    saved = DedupeState.load(state)
    assert saved.ids.tolist() == ids and saved.floor == inc.floor
    np.testing.assert_array_equal(saved.hashes, dedupe.row_hashes(X))
    for name in ("a", "b", "scores"):
        np.testing.assert_array_equal(getattr(saved, name), getattr(inc.candidates, name))
    np.testing.assert_array_equal(saved.nearest, inc.nearest)  # NaN where the report's are
    for name in ("primary", "visit_rows", "visit_cells"):
        np.testing.assert_array_equal(
            getattr(saved.cells, name), getattr(inc.candidates.cells, name)
        )
    np.testing.assert_array_equal(saved.recall.found, inc.candidates.recall.found)
    assert saved.placed_since_training == inc.params["incremental"]["fresh"]


def test_failed_decision_or_state_write_loses_nothing(tmp_path, monkeypatch, caplog) -> None:
    """A decision that raises after the state went to its thread: the error comes out,
    the state file is whole (no partial file) and the rerun reuses it. A state write that
    fails during an incremental run: the report is returned, the old state removed."""
    X0 = planted(1500, seed=6)
    ids0 = [f"row-{i:05d}" for i in range(len(X0))]
    X = np.vstack([X0, planted(60, seed=7)])
    ids = ids0 + [f"new-{i:03d}" for i in range(60)]
    state = tmp_path / "s.dedupe-state.npz"
    find_duplicates_incremental(X0, state, ids0, threshold=0.9)
    full = find_duplicates(X, ids, threshold=0.9)

    def broken(*args, **kwargs):
        raise RuntimeError("decision failed")

    with monkeypatch.context() as patch:
        patch.setattr(DuplicateReport, "_decided_from", broken)
        with pytest.raises(RuntimeError, match="decision failed"):
            find_duplicates_incremental(X, state, ids, threshold=0.9)
    assert [p.name for p in tmp_path.iterdir()] == [state.name]
    assert DedupeState.load(state).ids.tolist() == ids
    again = find_duplicates_incremental(X, state, ids, threshold=0.9)
    assert again.params["incremental"]["fresh"] == 0
    same_as_full(again, full)

    def no_space(self, path):
        raise OSError(28, "No space left on device")

    X2 = np.vstack([X, planted(40, seed=8)])
    ids2 = ids + [f"more-{i:03d}" for i in range(40)]
    monkeypatch.setattr(DedupeState, "save", no_space)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        inc = find_duplicates_incremental(X2, state, ids2, threshold=0.9)
    assert inc.params["incremental"]["mode"] == "incremental"
    same_as_full(inc, find_duplicates(X2, ids2, threshold=0.9))
    assert "not written (" in caplog.text and "No space left" in caplog.text
    assert not state.exists()  # never an older state against the new rows


def test_full_runs_over_a_grown_corpus_draw_nearly_the_same_recall_sample() -> None:
    """The draw keys on the rows' contents, so a full run after 2 % more rows (and in
    another row order) checks nearly the rows the last one did, and an incremental run's
    carried sample compares like for like with it; another seed draws other rows."""
    X = planted(5000, seed=4)
    ids = np.array([f"row-{i:05d}" for i in range(len(X))])
    kw = {"threshold": 0.85, "method": "ann", "nlist": 40, "recall_sample": 200}

    def drawn(rows: np.ndarray, **extra) -> set[str]:
        report = find_duplicates(X[rows], ids[rows].tolist(), **kw, **extra)
        return set(ids[rows][report.candidates.recall.rows])

    before = drawn(np.arange(4900))
    shuffled = np.random.default_rng(0).permutation(5000)
    after = drawn(shuffled)
    assert len(before) == len(after) == 200
    assert len(before & after) >= 180, len(before & after)
    assert len(before & drawn(np.arange(4900), seed=1)) < 120


def test_corrupt_state_falls_back_to_a_logged_full_run(tmp_path, caplog) -> None:
    X = planted(600, seed=3)
    ids = [f"row-{i:05d}" for i in range(len(X))]
    state = tmp_path / "v.dedupe-state.npz"
    find_duplicates_incremental(X, state, ids, threshold=0.9)
    full = find_duplicates(X, ids, threshold=0.9)
    data = bytearray(state.read_bytes())
    for bad in (bytes(data[: len(data) // 2]), b"not a state file", _flip_a_byte(data)):
        state.write_bytes(bad)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=LOGGER):
            report = find_duplicates_incremental(X, state, ids, threshold=0.9)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
        message = warnings[0].getMessage()
        assert str(state) in message and "full dedupe" in message
        assert "cannot be read" in message or "not valid" in message
        assert report.params["incremental"]["mode"] == "full"
        same_as_full(report, full)
        DedupeState.load(state)  # a good state was written again
        again = find_duplicates_incremental(X, state, ids, threshold=0.9)
        assert again.params["incremental"]["mode"] == "incremental"
        assert again.params["incremental"]["fresh"] == 0


def _flip_a_byte(data: bytearray) -> bytes:
    """A byte flipped inside the stored scores: the zip's CRC catches it."""
    out = bytearray(data)
    at = out.index(b"scores.npy") + 200
    out[at] ^= 0xFF
    return bytes(out)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"threshold": 0.8}, "floor 0.8"),
        ({"fingerprint": "clip-vit-b32"}, "encoder fingerprint 'minilm-l6@abc'"),
        ({"method": "ann", "nlist": 10}, "engine 'exact'"),
    ],
)
def test_state_of_another_setup_is_not_used(tmp_path, caplog, change, named) -> None:
    X = planted(800, seed=4)
    ids = [f"row-{i:05d}" for i in range(len(X))]
    state = tmp_path / "v.dedupe-state.npz"
    base = {"threshold": 0.9, "method": "exact", "fingerprint": "minilm-l6@abc"}
    find_duplicates_incremental(X, state, ids, **base)
    args = {**base, **change}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        report = find_duplicates_incremental(X, state, ids, **args)
    (record,) = caplog.records
    assert named in record.getMessage() and str(state) in record.getMessage()
    assert report.params["incremental"]["mode"] == "full"
    args.pop("fingerprint")
    same_as_full(report, find_duplicates(X, ids, **args))


def test_too_much_change_runs_in_full_and_says_why(tmp_path, caplog) -> None:
    X = planted(500, seed=5)
    ids = [f"row-{i:05d}" for i in range(len(X))]
    state = tmp_path / "v.dedupe-state.npz"
    find_duplicates_incremental(X, state, ids, threshold=0.9)
    X2 = np.vstack([X, planted(400, seed=6)])
    ids2 = ids + [f"new-{i}" for i in range(400)]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        report = find_duplicates_incremental(X2, state, ids2, threshold=0.9)
    assert "over max_fresh=0.3" in caplog.records[-1].getMessage()
    assert report.params["incremental"]["mode"] == "full"
    same_as_full(report, find_duplicates(X2, ids2, threshold=0.9))


def test_state_round_trips_and_inconsistent_files_are_refused(tmp_path) -> None:
    X = planted(700, seed=7)
    ids = [f"row-{i:05d}" for i in range(len(X))]
    path = tmp_path / "v.dedupe-state.npz"
    report = find_duplicates_incremental(X, path, ids, threshold=0.85, method="ann", nlist=20)
    state = DedupeState.load(path)
    assert state.ids.tolist() == ids and state.method == "ann" and state.floor == report.floor
    np.testing.assert_array_equal(state.a, report.candidates.a)
    np.testing.assert_array_equal(state.cells.primary, report.candidates.cells.primary)
    np.testing.assert_array_equal(state.recall.found, report.candidates.recall.found)
    with np.load(path) as data:
        arrays = dict(data)
    arrays["b"] = arrays["b"] + len(ids)  # rows that do not exist
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(
        DedupeStateError, match=r"v\.dedupe-state\.npz is not valid: candidate rows"
    ):
        DedupeState.load(path)


def test_real_minilm_texts_edited_between_runs(tmp_path, sentence_encoder) -> None:
    texts = [
        "Command-line tool to convert images between formats.",
        "A command line utility that converts images from one format to another.",
        "Library for reading and writing PNG files.",
        "Documentation for the PNG library.",
        "Python bindings for the PNG library.",
        "Fast JSON parser written in C.",
        "A fast C library for parsing JSON.",
        "Fonts for mathematical typesetting.",
    ]
    ids = [f"pkg-{i}" for i in range(len(texts))]
    state = tmp_path / "v.dedupe-state.npz"
    fp = sentence_encoder.fingerprint()
    kw = {"threshold": 0.8, "method": "exact", "fingerprint": fp, "max_fresh": 1.0}
    find_duplicates_incremental(sentence_encoder.transform(texts), state, ids, texts=texts, **kw)
    texts[7] = "Debug symbols for the PNG library."  # edited
    texts += ["Mathematical fonts for typesetting.", "Utility to convert image formats."]
    ids += ["pkg-8", "pkg-9"]
    del texts[2], ids[2]  # deleted
    vecs = sentence_encoder.transform(texts)
    inc = find_duplicates_incremental(vecs, state, ids, texts=texts, **kw)
    assert inc.params["incremental"]["mode"] == "incremental"
    assert inc.params["incremental"]["fresh"] == 3
    same_as_full(inc, find_duplicates(vecs, ids, texts=texts, threshold=0.8, method="exact"))
    assert inc.removed["pkg-9"][0] == "pkg-0"


def test_state_with_repeated_ids_falls_back_with_a_warning(tmp_path, caplog) -> None:
    X = planted(300, seed=8)
    ids = [f"row-{i:05d}" for i in range(len(X))]
    path = tmp_path / "v.dedupe-state.npz"
    find_duplicates_incremental(X, path, ids, threshold=0.9)
    with np.load(path) as data:
        arrays = dict(data)
    arrays["ids"][1] = arrays["ids"][0]
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        report = find_duplicates_incremental(X, path, ids, threshold=0.9)
    (record,) = caplog.records
    assert "ids repeat" in record.getMessage() and str(path) in record.getMessage()
    same_as_full(report, find_duplicates(X, ids, threshold=0.9))


# ----------------------------------------------------------------------------------------
# What the incremental run reuses: saved unit-norm scales, reused candidates merged in order,
# only the fresh rows' comparisons searched
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_saved_scales_remake_the_full_runs_rows_after_edits(tmp_path, dtype) -> None:
    """Unchanged rows are not normalised again: input row times saved scale. Rows rescaled
    (same direction, other norm), zeroed and un-zeroed between runs are fresh, and every
    score is still the full run's, bit for bit."""
    rng = np.random.default_rng(9)
    X = planted(900, seed=9) * rng.uniform(0.5, 40.0, (900, 1))  # norms far from 1
    X[[3, 4]] = 0  # zero vectors; 4 gets a value next night
    X = (X * 50).astype(dtype) if dtype == np.int16 else X.astype(dtype)
    ids = [f"row-{i:04d}" for i in range(len(X))]
    state = tmp_path / "v.dedupe-state.npz"
    kw = {"threshold": 0.9, "method": "exact"}
    find_duplicates_incremental(X, state, ids, **kw)
    saved = DedupeState.load(state)
    assert saved.input_dtype == ("float64" if dtype == np.float64 else "float32")
    assert (saved.scale[[3, 4]] == 0).all() and (saved.scale[5:] > 0).all()
    X = X.copy()
    X[10] = X[10] * 3  # same unit vector, other input: fresh, rescaled
    X[11] = 0  # zeroed
    X[4] = X[12]  # un-zeroed: now an exact copy of row 12
    X = np.delete(X, [20, 21], axis=0)
    ids = ids[:20] + ids[22:]
    inc = find_duplicates_incremental(X, state, ids, **kw)
    info = inc.params["incremental"]
    assert info["mode"] == "incremental" and info["fresh"] == 3 and info["deleted"] == 2
    same_as_full(inc, find_duplicates(X, ids, **kw))
    assert set(inc.zero_vector_ids) == {"row-0003", "row-0011"}
    assert ("row-0004", "row-0012", 1.0) in inc.pairs


def test_state_of_another_input_dtype_is_not_used(tmp_path, caplog) -> None:
    X = planted(300, seed=10)
    ids = [f"row-{i:04d}" for i in range(len(X))]
    state = tmp_path / "v.dedupe-state.npz"
    find_duplicates_incremental(X, state, ids, threshold=0.9)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        report = find_duplicates_incremental(X.astype(np.float64), state, ids, threshold=0.9)
    (record,) = caplog.records
    assert "input dtype 'float32', this run uses 'float64'" in record.getMessage()
    assert report.params["incremental"]["mode"] == "full"


@pytest.mark.parametrize("method", ["exact", "ann"])
def test_reused_and_new_candidates_merge_in_order_with_tied_scores(tmp_path, method) -> None:
    """Copies of rows tie at exactly the same scores; new copies interleave with reused pairs
    of equal score, and ids sort new rows in between old ones."""
    rng = np.random.default_rng(11)
    base = planted(1200, seed=11)
    X = np.vstack([base, base[:150], base[:40]]).astype(np.float32)  # 1, 2 copies: ties
    ids = [f"r{i * 2:05d}" for i in range(len(X))]  # even ids: new odd ids sort between
    state = tmp_path / "v.dedupe-state.npz"
    kw = {"threshold": 0.85, "method": method, "max_fresh": 0.5}
    if method == "ann":
        kw |= {"nlist": 30, "nprobe": 3, "retrain_share": 0.5}
    find_duplicates_incremental(X, state, ids, **kw)
    new = np.vstack([base[100:160], X[rng.choice(len(X), 40)]])  # more copies: more ties
    X2 = np.vstack([X, new])
    ids2 = ids + [f"r{rng.choice(len(ids)) * 2 + 1:05d}-{k}" for k in range(len(new))]
    order = rng.permutation(len(X2))
    X2, ids2 = X2[order], [ids2[i] for i in order]
    inc = find_duplicates_incremental(X2, state, ids2, **kw)
    assert inc.params["incremental"]["mode"] == "incremental"
    cand = inc.candidates
    s = cand.scores
    assert (s[:-1] >= s[1:]).all()
    rank = cand.rank
    tie = s[:-1] == s[1:]
    is_new = np.array(["-" in i for i in ids2])
    new_pair = is_new[cand.a] | is_new[cand.b]
    assert (tie & (new_pair[:-1] != new_pair[1:])).sum() > 20  # new pairs tie reused ones
    pairs = np.stack([rank[cand.a], rank[cand.b]], axis=1)
    later = (pairs[1:, 0] > pairs[:-1, 0]) | (
        (pairs[1:, 0] == pairs[:-1, 0]) & (pairs[1:, 1] > pairs[:-1, 1])
    )
    assert later[tie].all()  # ties in id order of (a, b)
    if method == "exact":
        same_as_full(inc, find_duplicates(X2, ids2, threshold=0.85, method="exact"))


@pytest.mark.parametrize("threaded", [False, True])
def test_fresh_search_compares_each_fresh_row_with_its_cells_members(
    threaded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """_search_fresh (one product per cell) against a brute force over the same cells and
    probes: pairs, and each row's best among the rows it met; a probed cell without
    members, cells whose members are all fresh and rows probing many cells included."""
    from embetter_core.dedupe import incremental_ann
    from embetter_core.dedupe.incremental_ann import _Probes, _search_fresh, _UnitRows

    monkeypatch.setattr(incremental_ann, "_THREADED_DOTS", 0 if threaded else 10**12)

    rng = np.random.default_rng(12)
    n, nlist = 600, 24
    X = planted(n, d=16, seed=12) * rng.uniform(0.2, 5.0, (n, 1)).astype(np.float32)
    X = X.astype(np.float32)
    rank, order = checks._canonical_order([f"id-{i}" for i in rng.permutation(n)])
    Xc, _, _ = checks._load_normalised(X, n, rank)
    screen = np.float32(0.7)
    primary, vr, vc = ann._assign_cells(
        Xc, ann._train_cells(Xc, nlist=nlist, seed=0), screen, nprobe=3
    )
    primary[primary == 5] = 6  # cell 5: no members
    cells = dedupe.AnnCells(np.zeros((nlist, 16), np.float32), primary, vr, vc, 3, 32)
    fresh = rng.random(n) < 0.1
    fresh[primary == 7] = True  # cell 7: every member fresh
    look = np.flatnonzero(fresh)
    probe_rows = np.repeat(look, 5)
    probe_cells = rng.integers(0, nlist, len(probe_rows))
    probe_cells[::7] = 5
    other = probe_cells != primary[probe_rows]
    probe_rows, probe_cells = probe_rows[other], probe_cells[other]
    pairs = {(r, c) for r, c in zip(probe_rows.tolist(), probe_cells.tolist(), strict=True)}
    probe_rows, probe_cells = (np.array(v) for v in zip(*sorted(pairs), strict=True))
    scale = np.empty(n, np.float32)
    for start in range(0, n, 100):
        norms, _ = checks._row_norms(X[start : start + 100])
        scale[start : start + 100] = checks._unit_scale(norms)
    rows = _UnitRows(X, scale, order)
    np.testing.assert_array_equal(rows[np.arange(n)], Xc)  # bit for bit the full run's rows
    probes = _Probes(probe_rows, probe_cells)
    lo, hi, near = _search_fresh(rows, cells, fresh, probes, screen, n_jobs=2, limit=10**6)

    want_pairs, want_near = set(), np.full(n, -np.inf)
    for q in look.tolist():
        cols = np.flatnonzero(np.isin(primary, [primary[q], *probe_cells[probe_rows == q]]))
        cols = cols[cols != q]
        sims = Xc[cols] @ Xc[q]
        if len(cols):
            want_near[q] = max(want_near[q], sims.max())
            np.maximum.at(want_near, cols, sims)
        want_pairs |= {(min(q, m), max(q, m)) for m in cols[sims >= screen].tolist()}
    assert set(zip(lo.tolist(), hi.tolist(), strict=True)) == want_pairs
    assert len(set(zip(lo.tolist(), hi.tolist(), strict=True))) == len(lo)  # each once
    assert (lo < hi).all() and len(lo) > 50
    np.testing.assert_allclose(near, want_near, atol=1e-5)
    assert np.isfinite(near).sum() > n // 2


def test_removal_order_and_exact_groups_helpers_match_their_simple_forms() -> None:
    """dedupe helpers made faster for the incremental run's report (they serve full runs
    too): the removal order against np.lexsort, the exact groups against pandas.factorize,
    ties and missing keys included."""
    import pandas as pd

    rng = np.random.default_rng(13)
    for trial in range(60):
        n, m = int(rng.integers(2, 100)), int(rng.integers(0, 400))
        later, earlier = rng.integers(0, n, m), rng.integers(0, n, m)
        values = np.array([1.0, 0.97, 0.9], np.float32) if trial % 2 else None
        s = rng.choice(values, m) if values is not None else rng.uniform(0.8, 1, m)
        s = np.sort(s.astype(np.float32))[::-1].copy()
        if trial % 5 == 0:
            s = rng.permutation(s)  # not in candidate order: np.lexsort itself
        got = decide._lexsort_by_later(later, earlier, s)
        want = np.lexsort((earlier, -s, later))
        key = np.stack([later, -s, earlier], axis=1)
        np.testing.assert_array_equal(key[got], key[want])
    ids = [f"id{i}" for i in range(50)]
    rank = np.argsort(rng.permutation(50))
    words = ["a", "b", "c", None, "a", "d", "b"]
    for keys in ([words[i % 7] for i in range(50)], [i % 6 for i in range(50)]):
        codes = pd.factorize(pd.Series(keys, dtype=object))[0]
        groups = decide._groups_by_key(keys, ids, rank)
        assert sorted(map(sorted, groups)) == sorted(
            sorted(ids[i] for i in np.flatnonzero(codes == c))
            for c in set(codes.tolist()) - {-1}
            if (codes == c).sum() > 1
        )
        assert [len(g) for g in groups] == sorted((len(g) for g in groups), reverse=True)
