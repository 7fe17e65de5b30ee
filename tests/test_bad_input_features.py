# ruff: noqa: E501 -- the outcome table below is markdown, one row a line
"""Bad input for the features added since ``test_bad_input.py`` (issue 22, item 4).

The same table style as ``test_bad_input.py``: each :class:`~tests.test_bad_input.Case` builds
its input under a temporary folder and does what the user did; ``error=None`` cases assert
the safe outcome themselves (a result equal to a full run, a file kept as it was). Most
rows run at the library or task level in milliseconds; what only the command line does
(``kill -9`` of a run, two runs at once) is in the slow tests below the table, a few CLI
runs against the session's Prefect server.

Outcomes of the adversarial pass (issue 22, item 4):

| feature | case | outcome |
|---|---|---|
| --incremental | state truncated, empty, another corpus's, from another encoder / dimension, deleted | pass as-is: logged full run, equal to a full run |
| --incremental | rows edited, deleted, added, reordered; texts or keep values changed (exact, ann) | pass as-is: equal to a full run |
| --incremental | the state path is a folder | fixed: was a full search then ``IsADirectoryError`` (the result lost); now refused before any work |
| --incremental | kill -9 while embedding, after the store is committed, after the new state is written (before the report); rerun | pass as-is: the rerun equals a clean full run (slow test) |
| --incremental | two runs on one output at once | pass as-is: both finish; the next run equals a full run (slow test) |
| --reference | store of another encoder / dimension | pass as-is: refused, naming the store and both encoders / dimensions |
| --reference | truncated .h5 | pass as-is: refused naming the file (``StoreError``) |
| --reference | empty reference (0 rows) | pass as-is: no matches, no error |
| --reference | ids overlapping the input's; the input as its own reference | pass as-is: every row matches itself at 1.0, ids kept apart |
| --rescore | every refused combination (itself, static, --backend modal, --incremental, --reference) | pass as-is: refused on the command line before any output exists |
| --rescore | kill -9 after the first rescore chunk, rerun | pass as-is: the rerun equals a run never killed (slow test) |
| --keep column: | missing column, non-numeric, empty, mixed numbers and dates, booleans, ``1,5`` | pass as-is: refused naming --keep, the file, the column and the row |
| --keep column: | NaN / blank values; ties; several date formats; time zones | pass as-is: missing values last, ties in input order, dates by instant |
| --keep column: | ``01/02/2024`` beside ``13/01/2024`` | fixed: the first was read month first, the second day first (a wrong order, silently); now a column read day first when one date can only be |
| --keep column: | ``13/01/2024`` beside ``01/13/2024`` | fixed: now refused, naming both rows |
| --keep longest | emoji and combining characters | pass as-is: length in code points (``"e\\u0301"`` is 2), documented |
| --write-deduplicated | the input itself, a path under a file | pass as-is: refused before any work, the input untouched |
| --write-deduplicated | an existing file | pass as-is: replaced atomically |
| --write-deduplicated | an unwritable folder | pass as-is (as non-root: refused before any work; as root permissions do not bind, the row checks a read-only mount) |
| --write-deduplicated | .csv / .csv.gz / .parquet / .jsonl / .jsonl.gz round trips | pass as-is: every column, dtype, leading-zero id, newline and quote kept |
| full disk | the store (--output) | fixed: was HDF5's ``RuntimeError`` (errno 28 inside, and a half-closed HDF5 file that crashed the process later); now refused when the store is created (``DiskFullError``: the file, the MB needed and free), the old store kept, no temp file left; a disk that fills during the writing (another writer) gets ``DiskFullError`` naming the temp file |
| full disk | the cache (--cache-dir) | fixed: was ``sqlite3.OperationalError: database or disk is full``; now ``DiskFullError`` naming the folder; cached vectors kept |
| full disk | the report folder, the dedupe state | pass as-is: ``OSError`` ENOSPC, no partial file at the final path (state: logged, next run full) |
| library | NaN / inf rows | pass as-is: refused naming the rows |
| library | zero rows; float64; non-contiguous; huge / tiny values | pass as-is |
| library | rows of only subnormal float32 values | fixed: 1 / norm overflowed float32 (NaN scores, two identical rows not paired); now zero vectors |
| library | 1-D array, complex / object dtype | pass as-is: refused with the shape / dtype |
| library | duplicate, unhashable ids, ``1`` beside ``1.0`` | pass as-is: refused naming the positions |
| library | NaN ids | fixed: were accepted (NaN != NaN); now refused naming the position |
| library | thresholds 0, > 1, negative, NaN, inf; floor 0 / NaN / above the threshold | pass as-is: refused naming the value |
| library | threshold 1 | pass as-is: identical rows only |

Full disk rows use a 2 MiB tmpfs (``mount -t tmpfs``) when the test runs as root and the
kernel allows it, else they are skipped; the error class is also checked with an injected
``OSError(ENOSPC)``, which runs everywhere.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from embetter_core.dedupe import DuplicateReport, find_duplicates, find_duplicates_incremental
from embetter_core.errors import (
    CorpusError,
    DiskFullError,
    DuplicateSearchError,
    FingerprintMismatchError,
    MissingColumnError,
    OutputNotWritableError,
    StoreError,
)
from tests.test_bad_input import Case as BadInputCase


@dataclass(frozen=True)
class Case(BadInputCase):
    """A row of the table: as in ``test_bad_input.py``, but a case must succeed unless it
    names its error."""

    error: type[BaseException] | None = None


# -- builders -------------------------------------------------------------------------------
RNG_SEED = 22


def vectors(n: int = 60, dim: int = 16, seed: int = RNG_SEED) -> np.ndarray:
    """``n`` random rows and, after them, noisy copies of the first half (so pairs exist)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, dim)).astype(np.float32)
    return np.vstack([base, base[: n // 2] + 0.15 * rng.normal(size=(n // 2, dim))]).astype(
        np.float32
    )


def row_ids(n: int) -> list[str]:
    return [f"r{i:03d}" for i in range(n)]


def same_result(a: DuplicateReport, b: DuplicateReport) -> None:
    assert a.pairs == b.pairs
    assert a.removed == b.removed
    assert a.clusters == b.clusters
    assert a.exact_groups == b.exact_groups


SEARCH = {
    "exact": {"threshold": 0.9, "method": "exact"},
    "ann": {"threshold": 0.9, "method": "ann", "nlist": 4, "nprobe": 4},
}


def night_two(X: np.ndarray, ids: list[str]) -> tuple[np.ndarray, list[str]]:
    """The next night's rows: one edited, one made a copy of another, two deleted, three
    added (copies of old rows plus a little noise)."""
    X2 = X.copy()
    X2[3] += 0.5
    X2[40] = X2[7]
    keep = [i for i in range(len(X)) if i not in (10, 50)]
    return np.vstack([X2[keep], X[5:8] + 0.01]), [ids[i] for i in keep] + ["n1", "n2", "n3"]


def incremental_after(
    folder: Path,
    method: str,
    spoil: Callable[[Path], Any] = lambda state: None,
    **kwargs: Any,
) -> tuple[DuplicateReport, DuplicateReport]:
    """Night one writes the state, ``spoil(state)`` does what the user did to it, night two
    runs incrementally: returns night two's report and a full run's of the same rows."""
    X, kw = vectors(), SEARCH[method]
    ids = row_ids(len(X))
    state = folder / "e.dedupe-state.npz"
    find_duplicates_incremental(X, state, ids, **kw)
    spoil(state)
    X2, ids2 = night_two(X, ids)
    inc = find_duplicates_incremental(X2, state, ids2, **kw, **kwargs)
    return inc, find_duplicates(X2, ids2, **kw)


def equal_to_full(method: str, spoil: Callable[[Path], Any], mode: str) -> Callable[[Path], None]:
    """A case's ``run``: night two equals a full run, in ``mode`` (incremental or full)."""

    def run(folder: Path) -> None:
        inc, full = incremental_after(folder, method, spoil)
        assert inc.params["incremental"]["mode"] == mode, inc.params["incremental"]
        same_result(inc, full)

    return run


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def another_corpus(state: Path) -> None:
    """The state of another corpus (same ids, other vectors) copied over this one's."""
    other = np.random.default_rng(7).normal(size=(88, 16)).astype(np.float32)
    ids = [*[i for i in row_ids(90) if i not in ("r010", "r050")], "n1", "n2", "n3"][:88]
    find_duplicates_incremental(other, state.with_name("other.npz"), ids, threshold=0.9)
    shutil.copy(state.with_name("other.npz"), state)


def half_another_corpus(state: Path) -> None:
    """A state whose rows are this corpus's first half and another corpus's second half
    under the same ids: only the changed rows may be reused as they were."""
    X = vectors()
    X[82:] = np.random.default_rng(8).normal(size=(len(X) - 82, 16))
    find_duplicates_incremental(X, state, row_ids(len(X)), threshold=0.9, method="exact")


def another_encoder(folder: Path) -> None:
    inc, full = incremental_after(folder, "exact", fingerprint="other-encoder")
    info = inc.params["incremental"]
    assert info["mode"] == "full" and "encoder fingerprint" in info["reason"], info
    same_result(inc, full)


def reordered(method: str) -> Callable[[Path], None]:
    def run(folder: Path) -> None:
        X, kw = vectors(), SEARCH[method]
        ids, state = row_ids(len(X)), folder / "s.npz"
        find_duplicates_incremental(X, state, ids, **kw)
        perm = np.random.default_rng(1).permutation(len(X))
        shuffled = [ids[i] for i in perm]
        inc = find_duplicates_incremental(X[perm], state, shuffled, **kw)
        assert inc.params["incremental"]["mode"] == "incremental"
        same_result(inc, find_duplicates(X[perm], shuffled, **kw))

    return run


def texts_and_keep_values_changed(method: str) -> Callable[[Path], None]:
    """Vectors unchanged, the texts (exact groups) and the keep column changed."""

    def run(folder: Path) -> None:
        X, kw = vectors(), SEARCH[method]
        ids, state = row_ids(len(X)), folder / "s.npz"
        texts, values = [f"t{i}" for i in range(len(X))], list(range(len(X)))
        keep = "column:v"
        find_duplicates_incremental(X, state, ids, texts=texts, keep=keep, keep_values=values, **kw)
        texts[1] = texts[0]
        args = {"texts": texts, "keep": keep, "keep_values": values[::-1], **kw}
        inc = find_duplicates_incremental(X, state, ids, **args)
        assert inc.params["incremental"]["mode"] == "incremental"
        same_result(inc, find_duplicates(X, ids, **args))

    return run


def state_is_a_folder(folder: Path) -> None:
    (folder / "state").mkdir()
    find_duplicates_incremental(vectors(), folder / "state", row_ids(90), threshold=0.9)


# -- reference ------------------------------------------------------------------------------
def store_of(path: Path, X: np.ndarray, ids: list[str], fingerprint: str = "enc-a") -> Path:
    from embetter_core.store import EmbeddingStore

    with EmbeddingStore.create(path, n=len(X), dim=X.shape[1], fingerprint=fingerprint) as w:
        w.write(0, ids, X)
    return path


def reference_check(folder: Path, spoil: Callable[[Path], Any] = lambda p: None, **kw: Any) -> int:
    from embetter_core.dedupe import check_reference_store

    X = vectors()
    path = store_of(folder / "ref.h5", X, row_ids(len(X)))
    spoil(path)
    return check_reference_store(path, **kw)


def reference_of_itself(folder: Path) -> None:
    """The input as its own reference (a store of the same rows, the same ids): each row
    matches itself at 1.0; the pairs name the row and the reference row apart."""
    from embetter_core.dedupe import find_reference_duplicates

    X = vectors()
    ids = row_ids(len(X))
    path = store_of(folder / "self.h5", X, ids)
    matches = find_reference_duplicates(X, path, ids, threshold=0.9, fingerprint="enc-a")
    assert {(a, b) for a, b, _ in matches.pairs} >= {(i, i) for i in ids}
    self_scores = [s for a, b, s in matches.pairs if a == b]
    assert len(self_scores) == len(ids) and min(self_scores) == pytest.approx(1.0, abs=1e-5)
    exact = find_reference_duplicates(X, X, ids, ids, threshold=0.9, method="exact")
    assert sorted(matches.pairs) == sorted(exact.pairs)


def empty_reference(folder: Path) -> None:
    from embetter_core.dedupe import find_reference_duplicates

    for empty in (np.zeros((0, 16), np.float32), np.zeros((0, 0), np.float32)):
        matches = find_reference_duplicates(vectors(), empty, threshold=0.9)
        assert matches.pairs == [] and matches.matched_ids == []


# -- keep -----------------------------------------------------------------------------------
def keep_column(folder: Path, values: list[Any], column: str = "v") -> list[Any]:
    from embetter_core.corpus import keep_values_for, read_corpus

    path = folder / "c.csv"
    texts = [f"text {i}" for i in range(len(values))]
    pd.DataFrame({"text": texts, "v": values}).to_csv(path, index=False)
    return keep_values_for(f"column:{column}", read_corpus(path))


ONES = np.ones((3, 4), dtype=np.float32)  # three rows, all duplicates of each other


def kept_of(keep: str = "column:v", **kw: Any) -> list[Any]:
    report = find_duplicates(ONES, ids=["a", "b", "c"], threshold=0.9, keep=keep, **kw)
    return report.selected


def expect(got: Any, want: Any) -> None:
    assert got == want, f"{got!r} != {want!r}"


# -- write-deduplicated ---------------------------------------------------------------------
HOSTILE = pd.DataFrame(
    {
        "id": ["007", "0010", "x", "y"],
        "text": [
            'he said "hi",\nthen left',
            "line1\r\nline2",
            "a,b;c\ttab",
            "caf\u00e9 \U0001f600",
        ],
        "n": [1, 2, 3, 4],
        "f": [1.5, None, 2.5, 3.0],
        "b": [True, False, True, None],
        "s": ["", None, "z", "0"],
    }
)


def round_trip(name: str) -> Callable[[Path], None]:
    """Write the hostile frame as ``name``, drop row ``x``: every other row, column, dtype
    (Parquet) and cell as it was; ids with leading zeros read back as the same strings."""

    def run(folder: Path) -> None:
        from embetter_core.corpus import read_corpus, write_deduplicated

        source, out = folder / name, folder / f"out_{name}"
        if ".csv" in name:
            HOSTILE.to_csv(source, index=False)
        elif name.endswith(".parquet"):
            HOSTILE.to_parquet(source)
        else:
            HOSTILE.to_json(source, orient="records", lines=True, force_ascii=False)
        done = write_deduplicated(source, ["x"], out, id_column="id")
        assert (done.rows, done.removed) == (3, 1)
        if ".csv" in name:
            a, b = (pd.read_csv(p, dtype=str, keep_default_na=False) for p in (source, out))
            assert out.read_bytes()[:2] == b"\x1f\x8b" if name.endswith(".gz") else True
        elif name.endswith(".parquet"):
            a, b = pd.read_parquet(source), pd.read_parquet(out)
            assert a.dtypes.equals(b.dtypes)
        else:
            a, b = (pd.read_json(p, lines=True, dtype=False) for p in (source, out))
        pd.testing.assert_frame_equal(a[a["id"] != "x"].reset_index(drop=True), b)
        assert list(read_corpus(out, id_column="id").ids) == ["007", "0010", "y"]

    return run


def dedupe_csv(folder: Path, out: Path | str) -> Any:
    from embetter_core.corpus import write_deduplicated

    source = folder / "c.csv"
    if not source.exists():
        HOSTILE.to_csv(source, index=False)
    return write_deduplicated(source, ["x"], out, id_column="id")


def input_unchanged(folder: Path) -> None:
    HOSTILE.to_csv(folder / "expected.csv", index=False)
    assert (folder / "c.csv").read_bytes() == (folder / "expected.csv").read_bytes()


def over_an_existing_file(folder: Path) -> None:
    (folder / "old.csv").write_text("stale,content\n1,2\n")
    assert dedupe_csv(folder, folder / "old.csv").rows == 3
    assert pd.read_csv(folder / "old.csv", dtype=str)["id"].tolist() == ["007", "0010", "y"]


# -- full disk ------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root and a kernel that allows it), else the test is skipped."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def injected_full_disk(folder: Path) -> None:
    """A full disk seen as an ``OSError(ENOSPC)``, HDF5's wrapped errno or SQLite's
    ``SQLITE_FULL``: each becomes a :class:`DiskFullError` naming the file."""
    from embetter_core.files import named_if_disk_full

    full = sqlite3.OperationalError("database or disk is full")
    hdf5 = RuntimeError("Can't close dataset (file write failed: errno = 28, error message)")
    for err in (OSError(errno.ENOSPC, "No space left on device"), hdf5, full):
        match = r"no space left on device writing the x /a/b"
        with pytest.raises(DiskFullError, match=match), named_if_disk_full("/a/b", "the x", "-"):
            raise err
    with pytest.raises(ValueError, match="other"), named_if_disk_full("/a/b", "the x", "-"):
        raise ValueError("other")  # other errors pass unchanged


# -- library --------------------------------------------------------------------------------
def with_row(value: float, row: int = 2) -> np.ndarray:
    X = vectors()
    X[row, 0] = value
    return X


def zero_and_identical_rows(folder: Path) -> None:
    X = vectors()
    X[[6, 7]] = 0
    report = find_duplicates(X, ids=row_ids(len(X)), threshold=0.9)
    assert report.zero_vector_ids == ["r006", "r007"]
    assert not {"r006", "r007"} & {i for p in report.pairs for i in p[:2]}


def subnormal_rows(folder: Path) -> None:
    """Rows of only subnormal float32 values (norm < 1 / float32 max) are zero vectors, in
    a full and an incremental run alike, and the other rows' pairs are the usual ones."""
    X = vectors()
    ids = row_ids(len(X))
    plain = find_duplicates(X, ids=ids, threshold=0.9)
    X[[3, 70]] = X[[3, 70]] * np.float32(1e-42)
    with np.errstate(over="raise", invalid="raise"):  # no overflow, no NaN on the way
        report = find_duplicates(X, ids=ids, threshold=0.9)
    assert report.zero_vector_ids == ["r003", "r070"]
    assert report.pairs == [p for p in plain.pairs if not {"r003", "r070"} & set(p[:2])]
    find_duplicates_incremental(vectors(), folder / "s.npz", ids, threshold=0.9)
    inc = find_duplicates_incremental(X, folder / "s.npz", ids, threshold=0.9)
    assert inc.params["incremental"]["mode"] == "incremental"
    same_result(inc, report)


def like_float32(transform: Callable[[np.ndarray], Any]) -> Callable[[Path], None]:
    def run(folder: Path) -> None:
        X = vectors()
        ids = row_ids(len(X))
        same_result(find_duplicates(transform(X), ids=ids), find_duplicates(X, ids=ids))

    return run


def threshold_one(folder: Path) -> None:
    X = vectors()
    X[40] = X[7]
    expect(find_duplicates(X, ids=row_ids(len(X)), threshold=1.0).pairs, [("r007", "r040", 1.0)])


def _cases() -> list[Case]:
    X = vectors()
    ids = row_ids(len(X))
    dup = find_duplicates
    return [
        # -- --incremental: the state file ----------------------------------------------
        *(
            Case(f"incremental-{method}-{name}", equal_to_full(method, spoil, mode))
            for method in ("exact", "ann")
            for name, spoil, mode in [
                ("rows-edited-deleted-added", lambda s: None, "incremental"),
                ("state-truncated", truncate, "full"),
                ("state-empty-file", lambda s: s.write_bytes(b""), "full"),
                ("state-deleted", lambda s: s.unlink(), "full"),
                ("state-of-another-corpus", another_corpus, "full"),
            ]
        ),
        Case(
            "incremental-state-half-another-corpus",
            equal_to_full("exact", half_another_corpus, "incremental"),
        ),
        Case("incremental-state-of-another-encoder", another_encoder),
        Case("incremental-exact-rows-reordered", reordered("exact")),
        Case("incremental-ann-rows-reordered", reordered("ann")),
        Case(
            "incremental-exact-texts-and-keep-values-changed",
            texts_and_keep_values_changed("exact"),
        ),
        Case("incremental-ann-texts-and-keep-values-changed", texts_and_keep_values_changed("ann")),
        Case(
            "incremental-state-path-is-a-folder",
            state_is_a_folder,
            DuplicateSearchError,
            ("state", "is a folder"),
        ),
        # -- --reference ----------------------------------------------------------------
        Case(
            "reference-store-of-another-encoder",
            lambda d: reference_check(d, fingerprint="enc-b"),
            FingerprintMismatchError,
            ("ref.h5", "'enc-a'", "'enc-b'"),
        ),
        Case(
            "reference-store-of-another-dimension",
            lambda d: reference_check(d, fingerprint="enc-a", dim=384),
            DuplicateSearchError,
            ("ref.h5", "16 dimensions", "384"),
        ),
        Case(
            "reference-store-truncated",
            lambda d: reference_check(d, truncate),
            StoreError,
            ("ref.h5",),
        ),
        Case("reference-empty", empty_reference),
        Case("reference-is-the-input-itself", reference_of_itself),
        # -- --keep column: / longest ---------------------------------------------------
        Case(
            "keep-column-missing",
            lambda d: keep_column(d, [1, 2], column="stars"),
            MissingColumnError,
            ("--keep", "c.csv", "'stars' not found", "'text', 'v'"),
        ),
        Case(
            "keep-column-not-numeric",
            lambda d: keep_column(d, ["1", "abc", "3"]),
            DuplicateSearchError,
            ("--keep", "c.csv", "column 'v' is not numeric or dates: row 1 holds 'abc'"),
        ),
        Case(
            "keep-column-empty",
            lambda d: keep_column(d, [None, None]),
            DuplicateSearchError,
            ("c.csv", "column 'v' holds no values"),
        ),
        Case(
            "keep-column-numbers-and-dates",
            lambda d: keep_column(d, ["3", "2024-01-01"]),
            DuplicateSearchError,
            ("column 'v'", "row 1 holds '2024-01-01'"),
        ),
        Case(
            "keep-column-booleans",
            lambda d: keep_column(d, ["True", "False"]),
            DuplicateSearchError,
            ("row 0 holds 'True'",),
        ),
        Case(
            "keep-column-decimal-comma",
            lambda d: keep_column(d, ["1,5", "2"]),
            DuplicateSearchError,
            ("row 0 holds '1,5'",),
        ),
        Case(
            "keep-column-dates-in-both-orders",
            lambda d: keep_column(d, ["13/01/2024", "01/13/2024"]),
            DuplicateSearchError,
            ("column 'v'", "day-first and month-first", "row 0 holds '13/01/2024'", "row 1"),
        ),
        Case(
            "keep-column-day-first-dates-read-day-first",
            lambda d: expect(kept_of(keep_values=["01/02/2024", "13/01/2024", None]), ["a"]),
        ),
        Case(
            "keep-column-several-date-formats",
            lambda d: expect(
                kept_of(keep_values=["2024-01-05", "Jan 3 2024", "2024-01-06T10:00:00Z"]),
                ["c"],
            ),
        ),
        Case(
            "keep-column-time-zones-compare-instants",
            lambda d: expect(
                kept_of(
                    keep_values=[
                        "2024-01-01T00:00:00Z",
                        "2024-01-01T00:00:00+05:00",
                        "2023-12-31T20:00:00-05:00",
                    ],
                ),
                ["c"],
            ),
        ),
        Case(
            "keep-column-nan-and-blank-go-last",
            lambda d: (
                expect(keep_column(d, [1.0, float("nan"), 3.0]), ["1.0", "", "3.0"]),
                expect(kept_of(keep_values=[float("nan"), "", 1]), ["c"]),
            ),
        ),
        Case(
            "keep-column-ties-in-input-order",
            lambda d: (
                expect(kept_of(keep_values=[5, 5, 1]), ["a"]),
                expect(kept_of(keep="column:v:asc", keep_values=[5, 1, 1]), ["b"]),
            ),
        ),
        Case(
            "keep-longest-counts-code-points",
            lambda d: expect(
                kept_of(
                    keep="longest",
                    texts=["e\u0301e\u0301", "\u00e9\u00e9\u00e9", "\U0001f468\u200d\U0001f469"],
                ),
                ["a"],  # 4 code points (2 shown), 3, and 3 (one emoji shown)
            ),
        ),
        # -- --write-deduplicated -------------------------------------------------------
        *(
            Case(f"write-deduplicated-round-trip-{name}", round_trip(name))
            for name in ("c.csv", "c.csv.gz", "c.parquet", "c.jsonl", "c.jsonl.gz")
        ),
        Case(
            "write-deduplicated-over-the-input",
            lambda d: dedupe_csv(d, d / "c.csv"),
            CorpusError,
            ("c.csv is the input corpus itself",),
            then=input_unchanged,
        ),
        Case(
            "write-deduplicated-under-a-file",
            lambda d: dedupe_csv(d, d / "c.csv" / "out.csv"),
            OutputNotWritableError,
            ("c.csv/out.csv",),
            then=input_unchanged,
        ),
        Case("write-deduplicated-over-an-existing-file", over_an_existing_file),
        # -- full disk (injected; the tmpfs rows are tests below) -----------------------
        Case("full-disk-errors-name-the-file", injected_full_disk),
        # -- the library ----------------------------------------------------------------
        Case(
            "library-nan-row",
            lambda d: dup(with_row(np.nan), ids=ids),
            DuplicateSearchError,
            ("1 embedding rows contain NaN or inf: 'r002' (row 2)",),
        ),
        Case(
            "library-inf-row",
            lambda d: dup(with_row(-np.inf, 5), ids=ids),
            DuplicateSearchError,
            ("'r005' (row 5)",),
        ),
        Case("library-zero-rows", zero_and_identical_rows),
        Case("library-subnormal-rows-are-zero-vectors", subnormal_rows),
        Case("library-float64-as-float32", like_float32(lambda X: X.astype(np.float64))),
        Case("library-fortran-order", like_float32(np.asfortranarray)),
        Case("library-strided-view", like_float32(lambda X: np.repeat(X, 2, axis=1)[:, ::2])),
        Case("library-list-of-lists", like_float32(lambda X: X.tolist())),
        Case("library-huge-values", like_float32(lambda X: X.astype(np.float64) * 1e200)),
        Case(
            "library-1-d-array",
            lambda d: dup(X[0]),
            DuplicateSearchError,
            ("must be 2-D", "(16,)"),
        ),
        Case(
            "library-complex-dtype",
            lambda d: dup(X.astype(np.complex64)),
            DuplicateSearchError,
            ("numeric", "complex64"),
        ),
        Case(
            "library-duplicate-ids",
            lambda d: dup(X, ids=[*ids[:-1], "r000"]),
            DuplicateSearchError,
            ("'r000' is at positions 0 and 89",),
        ),
        Case(
            "library-one-and-one-point-zero-ids",
            lambda d: dup(X[:3], ids=[1, 1.0, 2]),
            DuplicateSearchError,
            ("positions 0 and 1",),
        ),
        Case(
            "library-unhashable-ids",
            lambda d: dup(X[:2], ids=[["a"], ["b"]]),
            DuplicateSearchError,
            ("id at position 0 is unhashable (list)",),
        ),
        Case(
            "library-nan-ids",
            lambda d: dup(X[:3], ids=["a", float("nan"), float("nan")]),
            DuplicateSearchError,
            ("id at position 1 is NaN",),
        ),
        *(
            Case(
                f"library-threshold-{value}",
                lambda d, value=value: dup(X, threshold=value),
                DuplicateSearchError,
                (f"threshold must be in (0, 1], got {float(value)}",),
            )
            for value in (0, 1.5, -0.5, float("nan"), float("inf"))
        ),
        *(
            Case(
                f"library-floor-{value}",
                lambda d, value=value: dup(X, threshold=0.9, floor=value),
                DuplicateSearchError,
                (f"floor must be in (0, threshold=0.9], got {float(value)}",),
            )
            for value in (0, float("nan"), 0.95)
        ),
        Case(
            "library-incremental-threshold-nan",
            lambda d: find_duplicates_incremental(X, d / "s.npz", ids, threshold=float("nan")),
            DuplicateSearchError,
            ("threshold must be in (0, 1], got nan",),
            then=lambda d: expect((d / "s.npz").exists(), False),
        ),
        Case("library-threshold-1", threshold_one),
    ]


CASES: list[Case] = _cases()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input_features(case: Case, tmp_path: Path) -> None:
    if case.error is None:
        case.run(tmp_path)
    else:
        with pytest.raises(case.error) as caught:
            case.run(tmp_path)
        message = str(caught.value)
        for fragment in case.says:
            assert fragment in message, f"{fragment!r} not in: {message}"
    if case.then is not None:
        case.then(tmp_path)


# -- a full disk, on a real small tmpfs -----------------------------------------------------
def test_full_disk_for_the_store_is_refused_before_any_row(small_disk):
    """A store the disk has no room for is refused when it is created (HDF5 fails late, and
    a half-closed HDF5 file can crash the process later); the old store is kept."""
    from embetter_core.store import EmbeddingStore

    X = np.random.default_rng(0).normal(size=(10, 384)).astype(np.float32)
    path = store_of(small_disk / "e.h5", X, row_ids(10))
    match = r"not enough space for the store .*e\.h5: 3,000 rows of 384 floats need about 4\.7 MB"
    with pytest.raises(DiskFullError, match=match):
        EmbeddingStore.create(path, n=3000, dim=384, fingerprint="enc-a")
    assert sorted(p.name for p in small_disk.iterdir()) == ["e.h5"]  # no temp file left
    with EmbeddingStore.open(path) as store:
        np.testing.assert_array_equal(store.embeddings[:], X)


def test_full_disk_for_the_cache_names_the_folder(small_disk):
    import diskcache

    from embetter_core import StaticEncoder, cached

    folder = small_disk / "cache"
    enc = cached(folder, StaticEncoder())
    first = enc.transform(["a text kept in the cache"])
    texts = [f"text number {i}" for i in range(5000)]
    with pytest.raises(DiskFullError, match=r"the embedding cache .*cache.* \(--cache-dir\)"):
        enc.transform(texts)
    enc.cache_.close()
    with diskcache.Cache(str(folder)) as cache:
        np.testing.assert_array_equal(cache["a text kept in the cache"], first[0])


def test_full_disk_for_the_report_and_the_state(small_disk, caplog):
    from embetter_core.report import write_pairs_csv

    X = np.repeat(vectors(200, 64), 3, axis=0)
    ids = row_ids(len(X))
    report = find_duplicates(X, ids=ids, threshold=0.9)
    with pytest.raises(OSError), (small_disk / "filler").open("wb") as filler:
        while True:  # fill the disk to the last byte
            filler.write(b"x" * 4096)
            filler.flush()
    with pytest.raises(OSError) as caught:
        write_pairs_csv(report, None, small_disk / "report" / "pairs.csv")
    assert caught.value.errno == errno.ENOSPC
    assert not (small_disk / "report" / "pairs.csv").exists()  # never half written
    with caplog.at_level("WARNING"):
        inc = find_duplicates_incremental(X, small_disk / "s.npz", ids, threshold=0.9)
    same_result(inc, report)  # the result is returned; only the state is missing
    assert "not written" in caplog.text and not (small_disk / "s.npz").exists()


def test_write_deduplicated_into_a_read_only_folder(tmp_path):
    """Refused before any work (as root, only a read-only mount is unwritable)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)])
        if done.returncode:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(OutputNotWritableError, match=r"ro/out\.csv is read-only"):
            dedupe_csv(tmp_path, folder / "out.csv")
        input_unchanged(tmp_path)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)


# -- the command line: refused before any work, kill -9 and reruns, two runs at once --------
def refused_cli(folder: Path, *args: str) -> None:
    """``embed`` of a small corpus with ``args``: must fail before any output exists."""
    from tests.test_bad_input import csv_corpus, embed

    try:
        embed(folder, csv_corpus(folder), *args)
    finally:
        assert not (folder / "out").exists() and not (folder / "cache").exists()


RESCORE_REFUSED = [
    (("--encoder", "sentence", "--rescore", "sentence"), "--rescore sentence is the --encoder"),
    (("--encoder", "static", "--rescore", "static"), "--rescore static is the --encoder"),
    (("--encoder", "static", "--rescore", "sentence", "--backend", "modal"), "--backend modal"),
    (("--encoder", "static", "--rescore", "sentence", "--incremental"), "--incremental"),
]


@pytest.mark.parametrize(("args", "says"), RESCORE_REFUSED, ids=lambda v: str(v)[:40])
def test_rescore_combinations_are_refused_before_any_work(tmp_path, args, says):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.test_bad_input import CliError

    dead = {PREFECT_API_URL: "http://127.0.0.1:9/api"}  # a flow that started would fail
    with temporary_settings(dead), pytest.raises(CliError) as caught:
        refused_cli(tmp_path, *args)
    assert says in caught.value.output and "Traceback" not in caught.value.output


def test_rescore_with_a_reference_is_refused_before_any_work(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.test_bad_input import CliError, csv_corpus

    reference = csv_corpus(tmp_path, "ref.csv")
    args = ("--encoder", "static", "--rescore", "sentence", "--reference", str(reference))
    dead = {PREFECT_API_URL: "http://127.0.0.1:9/api"}
    with temporary_settings(dead), pytest.raises(CliError, match="does not combine with --ref"):
        refused_cli(tmp_path, *args)


@pytest.fixture
def api_url(prefect_harness) -> str:
    """The session server's URL, for CLI subprocesses (no server start of their own)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def corpus_nights(folder: Path) -> tuple[Path, Path]:
    """Night one: 1,800 rows of the packaged Debian sample; night two: 20 deleted, 10 texts
    edited, 150 added."""
    sample = Path(__file__).parents[1] / "embetter_core" / "data" / "debian-sample.csv.gz"
    frame = pd.read_csv(sample, dtype=str, keep_default_na=False)
    one = frame.iloc[:1800]
    two = pd.concat([one.drop(one.index[100:120]), frame.iloc[1800:1950]])
    two = two.copy()
    two.iloc[300:310, two.columns.get_loc("text")] = [f"an edited text {i}" for i in range(10)]
    paths = folder / "night1.csv", folder / "night2.csv"
    one.to_csv(paths[0], index=False)
    two.to_csv(paths[1], index=False)
    return paths


def embed_process(api_url: str, corpus: Path, out: Path, *extra: str) -> subprocess.Popen:
    import sys

    args = [
        str(corpus), "--encoder", "static", "--id-column", "package", "--output",
        str(out / "e.h5"), "--cache-dir", str(out / "cache"), "--report-dir",
        str(out / "report"), "--chunk-size", "150", "--no-progress", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "flows.embed_corpus", *args],
        cwd=Path(__file__).parents[1],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finished(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def killed_at(proc: subprocess.Popen, marker: str) -> str:
    """Read the run's log until a line holds ``marker``, then ``kill -9`` it."""
    import signal

    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-2000:]  # killed, not finished
    return "".join(seen)


def outcome(out: Path) -> tuple[list[tuple[str, str, float]], list[tuple[str, str]], list]:
    """The run's pairs (sorted, scores to 6 places), removed rows and the store's kept ids."""
    from embetter_core.store import EmbeddingStore

    pairs = pd.read_csv(out / "report" / "pairs.csv", dtype=str, keep_default_na=False)
    removed = pd.read_csv(out / "report" / "removed.csv", dtype=str, keep_default_na=False)
    with EmbeddingStore.open(out / "e.h5") as store:
        kept = [i for i, k in zip(store.ids, store.kept, strict=True) if k]
    return (
        sorted(
            zip(pairs["id_a"], pairs["id_b"], pairs["score"].astype(float).round(6), strict=True)
        ),
        sorted(zip(removed["id"], removed["kept_id"], strict=True)),
        kept,
    )


KILL_POINTS = [
    "chunk 3 of",  # while embedding (the static encoder: a chunk a few ms)
    "store written:",  # the store committed, the dedupe not started
    "Task run 'find-duplicates-incremental",  # the new state written, the report not
]


@pytest.mark.slow
def test_incremental_killed_at_several_points_then_rerun_equals_a_full_run(api_url, tmp_path):
    night1, night2 = corpus_nights(tmp_path)
    full = finished(embed_process(api_url, night2, tmp_path / "full"))
    assert "dedupe run" not in full
    expected = outcome(tmp_path / "full")
    base = tmp_path / "base"
    finished(embed_process(api_url, night1, base, "--incremental"))
    for i, marker in enumerate(KILL_POINTS):
        out = tmp_path / f"killed{i}"
        shutil.copytree(base, out)
        seen = killed_at(embed_process(api_url, night2, out, "--incremental"), marker)
        assert marker in seen, seen[-2000:]
        rerun = finished(embed_process(api_url, night2, out, "--incremental"))
        assert "dedupe run:" in rerun, rerun[-2000:]
        assert outcome(out) == expected, (marker, rerun[-2000:])
        assert not list(out.glob(".e.h5.*.tmp")), marker  # the killed run's temp file cleaned


@pytest.mark.slow
def test_two_incremental_runs_on_one_output_at_once(api_url, tmp_path):
    from embetter_core.dedupe import DedupeState, state_path

    night1, night2 = corpus_nights(tmp_path)
    finished(embed_process(api_url, night2, tmp_path / "full"))
    expected = outcome(tmp_path / "full")
    out = tmp_path / "both"
    finished(embed_process(api_url, night1, out, "--incremental"))
    runs = [embed_process(api_url, night2, out, "--incremental") for _ in range(2)]
    for run in runs:
        finished(run)
    assert outcome(out) == expected
    assert len(DedupeState.load(state_path(out / "e.h5"))) == 1930
    again = finished(embed_process(api_url, night2, out, "--incremental"))
    assert "dedupe run: incremental" in again, again[-2000:]
    assert outcome(out) == expected


@pytest.mark.slow
def test_rescore_killed_mid_run_then_rerun_equals_a_clean_run(api_url, tmp_path):
    """``--encoder static --rescore sentence``, killed after its first rescore chunk: the
    rerun finds the first stage's store and the rescored vectors in the cache, and decides
    as a run that was never killed."""
    sample = Path(__file__).parents[1] / "embetter_core" / "data" / "debian-sample.csv.gz"
    frame = pd.read_csv(sample, dtype=str, keep_default_na=False).iloc[:240]
    corpus = tmp_path / "c.csv"
    frame.to_csv(corpus, index=False)
    two_stage = ("--rescore", "sentence", "--threshold", "0.8", "--chunk-size", "40")
    finished(embed_process(api_url, corpus, tmp_path / "clean", *two_stage))
    out = tmp_path / "killed"
    seen = killed_at(embed_process(api_url, corpus, out, *two_stage), "rescore chunk 1 of")
    assert "rescore chunk 1 of 1:" not in seen, seen[-2000:]  # killed with chunks to do
    rerun = finished(embed_process(api_url, corpus, out, *two_stage))
    assert outcome(out) == outcome(tmp_path / "clean"), rerun[-2000:]
