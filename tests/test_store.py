"""EmbeddingStore on real HDF5 files: round trip, atomic commit, crashes, concurrency, errors."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest

from embetter_core.errors import (
    FingerprintMismatchError,
    IncompleteStoreError,
    OutputNotWritableError,
    StoreError,
)
from embetter_core.store import (
    EmbeddingStore,
    StoreWriter,
    check_writable,
    cleanup_stale,
    commit,
    write_rows,
)

ROOT = Path(__file__).resolve().parent.parent


def vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_round_trip_attrs_and_plain_h5py(tmp_path):
    path = tmp_path / "out.h5"
    ids = [f"id-{i}" for i in range(25)] + ["naïve/ü.png", "emoji 🙂"]
    data = vectors(len(ids), dim=16)
    writer = EmbeddingStore.create(
        path,
        n=len(ids),
        dim=16,
        fingerprint="enc-1",
        source="in.csv",
        corpus_hash="abc",
        chunk_rows=10,
    )
    for start in range(0, len(ids), 10):
        writer.write(start, ids[start : start + 10], data[start : start + 10])
    assert writer.commit() == path

    with h5py.File(path, "r") as f:  # plain h5py reads it
        assert np.array_equal(f["embeddings"][:], data)
        assert f["embeddings"].dtype == np.float32
        assert f["embeddings"].chunks == (10, 16)
        assert f["ids"].asstr()[:].tolist() == ids
        assert sorted(f) == ["embeddings", "ids"]  # no bookkeeping left
        assert f.attrs["fingerprint"] == "enc-1"

    with EmbeddingStore.open(path, fingerprint="enc-1") as store:
        assert store.ids == ids
        assert np.array_equal(store.embeddings, data)
        assert np.array_equal(store.dataset[3:5], data[3:5])
        assert (len(store), store.dim, store.fingerprint) == (27, 16, "enc-1")
        attrs = store.attrs
        assert attrs["n"] == 27 and attrs["dim"] == 16
        assert attrs["source"] == "in.csv" and attrs["corpus_hash"] == "abc"
        assert attrs["format_version"] == 1 and attrs["created"].endswith("+00:00")
        blocks = list(store.iter_blocks(10))
        assert [start for start, _ in blocks] == [0, 10, 20]
        assert np.array_equal(np.concatenate([b for _, b in blocks]), data)
    assert tmp_files(tmp_path) == []


def test_final_path_absent_until_commit(tmp_path):
    path = tmp_path / "out.h5"
    writer = EmbeddingStore.create(path, n=4, dim=3, fingerprint="fp")
    assert writer.tmp_path.parent == path.parent
    assert writer.tmp_path.name.startswith(".out.h5.") and writer.tmp_path.name.endswith(".tmp")
    writer.write(0, ["a", "b", "c", "d"], vectors(4, 3))
    assert not path.exists()
    writer.commit()
    assert path.exists() and not writer.tmp_path.exists()
    assert tmp_files(tmp_path) == []


def test_commit_refuses_missing_rows_and_keeps_the_tmp(tmp_path):
    path = tmp_path / "out.h5"
    writer = EmbeddingStore.create(path, n=10, dim=2, fingerprint="fp")
    data = vectors(10, 2)
    ids = [str(i) for i in range(10)]
    write_rows(writer.tmp_path, 0, ids[:2], data[:2])
    write_rows(writer.tmp_path, 4, ids[4:7], data[4:7])
    with pytest.raises(IncompleteStoreError) as info:
        commit(writer.tmp_path, path)
    assert "5 of 10 rows were never written: rows 2-3, 7-9 (inclusive)" in str(info.value)
    assert not path.exists() and writer.tmp_path.exists()
    write_rows(writer.tmp_path, 2, ids[2:4], data[2:4])
    write_rows(writer.tmp_path, 7, ids[7:], data[7:])
    commit(writer.tmp_path, path)
    store = EmbeddingStore.open(path)
    assert store.ids == ids and np.array_equal(store.embeddings, data)
    store.close()


def test_rewriting_rows_same_ids_is_idempotent_other_ids_raise(tmp_path):
    writer = EmbeddingStore.create(tmp_path / "o.h5", n=3, dim=2, fingerprint="fp")
    writer.write(0, ["a", "b"], np.ones((2, 2)))
    writer.write(0, ["a", "b"], np.full((2, 2), 2.0))  # a retried task
    with pytest.raises(StoreError, match="first row 1: stored 'b', given 'x'"):
        writer.write(1, ["x", "c"], np.ones((2, 2)))
    writer.write(2, ["c"], np.ones((1, 2)))
    writer.commit()
    with EmbeddingStore.open(tmp_path / "o.h5") as store:
        assert store.embeddings[:2].tolist() == [[2.0, 2.0], [2.0, 2.0]]


def test_scattered_rows_land_in_place_in_any_order(tmp_path):
    n = 40
    ids = [f"id-{i}" for i in range(n)]
    data = vectors(n, dim=4)
    writer = EmbeddingStore.create(tmp_path / "o.h5", n=n, dim=4, fingerprint="fp", chunk_rows=8)
    order = np.random.default_rng(3).permutation(n)
    for part in np.array_split(order, 5):  # unsorted row numbers, as a list and as an array
        rows = part.tolist() if part[0] % 2 else part
        writer.write(rows, [ids[i] for i in part], data[part])
    with pytest.raises(StoreError, match="first row 7: stored 'id-7', given 'x'"):
        writer.write([9, 7], ["id-9", "x"], data[[9, 7]])
    writer.write(np.array([5, 4]), ["id-5", "id-4"], data[[5, 4]] * 2)  # a retried chunk
    writer.commit()
    with EmbeddingStore.open(tmp_path / "o.h5") as store:
        expected = data.copy()
        expected[[4, 5]] *= 2
        assert store.ids == ids and np.array_equal(store.embeddings, expected)


def test_commit_refuses_duplicate_ids(tmp_path):
    writer = EmbeddingStore.create(tmp_path / "o.h5", n=3, dim=2, fingerprint="fp")
    writer.write(0, ["a", "b", "a"], np.ones((3, 2)))
    with pytest.raises(StoreError, match="1 id\\(s\\) occur more than once, e.g. 'a' at rows 0, 2"):
        writer.commit()
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize(
    ("start", "ids", "data", "message"),
    [
        (0, ["a"], np.ones((1, 3)), "embeddings have dim 3, the store expects dim 4"),
        (0, ["a"], np.ones(4), "embeddings must be 2-D \\(rows, 4\\), got shape \\(4,\\)"),
        (0, ["a"], np.ones((1, 4), dtype=int), "must be floating point, got dtype int64"),
        (0, ["a", "b"], np.ones((1, 4)), "2 ids but 1 embedding rows"),
        (4, ["a", "b"], np.ones((2, 4)), "rows 4-5 are out of bounds: the store has 5 rows"),
        (-1, ["a"], np.ones((1, 4)), "start must be a non-negative integer, got -1"),
        ([0, 5], ["a", "b"], np.ones((2, 4)), "row 5 is out of bounds: the store has 5 rows"),
        ([3, -1], ["a", "b"], np.ones((2, 4)), "row -1 is out of bounds"),
        ([2, 1, 2], ["a", "b", "c"], np.ones((3, 4)), "row 2 is given more than once"),
        ([0, 1], ["a"], np.ones((1, 4)), "2 row numbers but 1 ids"),
        ([0.0], ["a"], np.ones((1, 4)), "rows must be a first row number or a 1-D sequence"),
        (True, ["a"], np.ones((1, 4)), "rows must be a first row number or a 1-D sequence"),
        (0, ["a", 3], np.ones((2, 4)), "id at position 1 is int; expected str"),
        (0, "ab", np.ones((2, 4)), "ids must be a sequence of strings"),
        (0, ["a", "b"], np.array([[1, 2, 3, 4], [0, np.nan, 0, 0]], dtype=float), "NaN"),
    ],
)
def test_write_validation(tmp_path, start, ids, data, message):
    writer = EmbeddingStore.create(tmp_path / "o.h5", n=5, dim=4, fingerprint="fp")
    with pytest.raises(ValueError, match=message):
        writer.write(start, ids, data)
    writer.abort()


def test_float64_input_is_stored_as_float32(tmp_path):
    with EmbeddingStore.create(tmp_path / "o.h5", n=2, dim=2, fingerprint="fp") as writer:
        writer.write(0, np.array(["a", "b"]), np.array([[0.1, 0.2], [0.3, 0.4]]))
    with EmbeddingStore.open(tmp_path / "o.h5") as store:
        assert store.embeddings.dtype == np.float32
        assert np.allclose(store.embeddings, [[0.1, 0.2], [0.3, 0.4]])
        assert store.ids == ["a", "b"]


def test_create_validation(tmp_path):
    for kwargs, message in [
        ({"n": 0, "dim": 2}, "n must be a positive integer, got 0"),
        ({"n": 2, "dim": 0}, "dim must be a positive integer"),
        ({"n": 2, "dim": 2, "chunk_rows": 0}, "chunk_rows must be a positive integer"),
        ({"n": 2, "dim": 2, "fingerprint": ""}, "fingerprint must be a non-empty string"),
    ]:
        with pytest.raises(ValueError, match=message):
            EmbeddingStore.create(tmp_path / "o.h5", **{"fingerprint": "fp", **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_fingerprint_guard(tmp_path):
    with EmbeddingStore.create(tmp_path / "o.h5", n=1, dim=2, fingerprint="enc-A") as writer:
        writer.write(0, ["a"], np.ones((1, 2)))
    with pytest.raises(FingerprintMismatchError) as info:
        EmbeddingStore.open(tmp_path / "o.h5", fingerprint="enc-B")
    assert "written by encoder enc-A but is being opened with encoder enc-B" in str(info.value)
    with EmbeddingStore.open(tmp_path / "o.h5", fingerprint="enc-A") as store:
        assert store.fingerprint == "enc-A"


def test_open_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="store not found: .*missing.h5"):
        EmbeddingStore.open(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(StoreError, match="text.h5 is not a readable HDF5 file"):
        EmbeddingStore.open(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.ones(3)
    with pytest.raises(StoreError, match="other.h5 is not an embedding store: it lacks the 'ids'"):
        EmbeddingStore.open(tmp_path / "other.h5")
    writer = EmbeddingStore.create(tmp_path / "o.h5", n=1, dim=2, fingerprint="fp")
    with pytest.raises(StoreError, match="it is an uncommitted temporary file"):
        EmbeddingStore.open(writer.tmp_path)
    writer.abort()


def test_context_manager_aborts_on_error_and_keeps_old_file(tmp_path):
    path = tmp_path / "o.h5"
    with EmbeddingStore.create(path, n=1, dim=2, fingerprint="old") as writer:
        writer.write(0, ["a"], np.ones((1, 2)))
    with (
        pytest.raises(RuntimeError, match="boom"),
        EmbeddingStore.create(path, n=1, dim=2, fingerprint="new") as writer,
    ):
        raise RuntimeError("boom")
    assert tmp_files(tmp_path) == []
    with EmbeddingStore.open(path) as store:
        assert store.fingerprint == "old"


def test_overwrite_false(tmp_path):
    path = tmp_path / "o.h5"
    with EmbeddingStore.create(path, n=1, dim=2, fingerprint="fp") as writer:
        writer.write(0, ["a"], np.ones((1, 2)))
    with pytest.raises(FileExistsError, match="o.h5 exists; pass overwrite=True"):
        EmbeddingStore.create(path, n=1, dim=2, fingerprint="fp", overwrite=False)
    writer = EmbeddingStore.create(tmp_path / "p.h5", n=1, dim=2, fingerprint="fp", overwrite=False)
    writer.write(0, ["a"], np.ones((1, 2)))
    (tmp_path / "p.h5").write_text("appeared meanwhile")
    with pytest.raises(FileExistsError, match="p.h5 exists and overwrite=False"):
        writer.commit()
    assert (tmp_path / "p.h5").read_text() == "appeared meanwhile"
    writer.abort()


def test_check_writable(tmp_path):
    assert check_writable(tmp_path / "a" / "b" / "o.h5") == tmp_path / "a" / "b" / "o.h5"
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        OutputNotWritableError, match=f"cannot create output folder {tmp_path}/file"
    ):
        check_writable(tmp_path / "file" / "o.h5")
    with pytest.raises(OutputNotWritableError, match="is a folder"):
        check_writable(tmp_path / "a")
    with pytest.raises(OutputNotWritableError, match="cannot create output folder"):
        EmbeddingStore.create(tmp_path / "file" / "sub" / "o.h5", n=1, dim=2, fingerprint="fp")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_check_writable_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputNotWritableError, match=f"output folder {folder} is not writable"):
            check_writable(folder / "o.h5")
    finally:
        folder.chmod(0o700)


def test_writer_and_store_pickle(tmp_path):
    writer = EmbeddingStore.create(tmp_path / "o.h5", n=2, dim=2, fingerprint="fp")
    clone = pickle.loads(pickle.dumps(writer))
    assert isinstance(clone, StoreWriter) and clone == writer
    clone.write(0, ["a", "b"], np.ones((2, 2)))
    clone.commit()
    store = EmbeddingStore.open(tmp_path / "o.h5")
    assert store.ids == ["a", "b"]
    again = pickle.loads(pickle.dumps(store))
    store.close()
    assert again.ids == ["a", "b"] and again.embeddings.shape == (2, 2)
    again.close()


def test_writes_from_threads(tmp_path):
    n, dim = 400, 8
    data = vectors(n, dim)
    ids = [f"r{i}" for i in range(n)]
    writer = EmbeddingStore.create(tmp_path / "o.h5", n=n, dim=dim, fingerprint="fp", chunk_rows=50)
    with ThreadPoolExecutor(4) as pool:
        list(
            pool.map(lambda s: writer.write(s, ids[s : s + 25], data[s : s + 25]), range(0, n, 25))
        )
    writer.commit()
    with EmbeddingStore.open(tmp_path / "o.h5") as store:
        assert store.ids == ids and np.array_equal(store.embeddings, data)


def test_interleaved_scattered_writes_from_threads_keep_every_row(tmp_path):
    # Chunks of rows close together are written as a read-modify-write of their span: the
    # store's lock must keep a thread from writing back another thread's rows stale. Rows
    # 0 and n - 1 alone are too far apart for that and take the point selection.
    n, dim = 400, 8
    data = vectors(n, dim)
    ids = [f"r{i}" for i in range(n)]
    writer = EmbeddingStore.create(tmp_path / "o.h5", n=n, dim=dim, fingerprint="fp", chunk_rows=50)
    writer.write([n - 1, 0], [ids[-1], ids[0]], data[[n - 1, 0]])
    parts = [np.arange(1 + k, n - 1, 8) for k in range(8)]  # each spans nearly every row
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda rows: writer.write(rows, [ids[i] for i in rows], data[rows]), parts))
    writer.commit()
    with EmbeddingStore.open(tmp_path / "o.h5") as store:
        assert store.ids == ids and np.array_equal(store.embeddings, data)


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from embetter_core.store import write_rows
    tmp, first, count, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    for start in range(first, first + count, step):
        ids = [f"r{i}" for i in range(start, start + step)]
        rows = np.arange(start, start + step, dtype=np.float32)[:, None] * np.ones((1, 8))
        write_rows(tmp, start, ids, rows)
    """
)


@pytest.mark.slow
def test_writes_from_separate_processes(tmp_path):
    n = 600
    writer = EmbeddingStore.create(tmp_path / "o.h5", n=n, dim=8, fingerprint="fp", chunk_rows=100)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER_SCRIPT, str(writer.tmp_path), str(first), "200", "10"],
            cwd=ROOT,
        )
        for first in (0, 200, 400)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    writer.commit()
    with EmbeddingStore.open(tmp_path / "o.h5") as store:
        assert store.ids == [f"r{i}" for i in range(n)]
        assert np.array_equal(store.embeddings[:, 0], np.arange(n, dtype=np.float32))


KILLED_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from embetter_core.store import EmbeddingStore
    writer = EmbeddingStore.create(sys.argv[1], n=100, dim=4, fingerprint="fp", chunk_rows=10)
    for start in range(0, 50, 10):
        writer.write(start, [str(i) for i in range(start, start + 10)], np.ones((10, 4)))
    print(writer.tmp_path, flush=True)
    time.sleep(120)
    writer.commit()
    """
)


@pytest.mark.slow
def test_writer_killed_midway_leaves_no_final_file_and_tmp_is_cleaned(tmp_path):
    path = tmp_path / "out.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SCRIPT, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        tmp = Path(proc.stdout.readline().strip())
        assert tmp.exists() and tmp.parent == tmp_path
        assert cleanup_stale(path) == []  # its owner is alive: left alone
        assert tmp.exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert not path.exists()
    assert tmp.exists()
    # a live writer of the same target in this process is not touched
    mine = EmbeddingStore.create(path, n=1, dim=4, fingerprint="fp")
    assert cleanup_stale(path) == [tmp]
    assert not tmp.exists() and not Path(str(tmp) + ".lock").exists()
    assert tmp_files(tmp_path) == [mine.tmp_path.name]
    mine.abort()
    assert tmp_files(tmp_path) == []


WRITER = """
import sys, time
from embetter_core.store import EmbeddingStore
writer = EmbeddingStore.create(sys.argv[1], n=1, dim=2, fingerprint="fp")
print(writer.tmp_path, flush=True)
time.sleep(60)
"""


def writer_in_subprocess(path: Path) -> tuple[subprocess.Popen, Path]:
    """A real process that starts writing ``path`` and then sleeps: the temporary file's
    owner, for the tests to kill."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, Path(proc.stdout.readline().strip())


def test_cleanup_stale_killed_unreaped_owner(tmp_path):
    """A zombie (killed, not yet reaped) owner counts as gone."""
    path = tmp_path / "out.h5"
    proc, tmp = writer_in_subprocess(path)
    try:
        assert str(proc.pid) in tmp.name
        assert cleanup_stale(path) == []
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert cleanup_stale(path) == [tmp]
    finally:
        proc.kill()
        proc.wait()


def test_cleanup_stale_reused_pid_and_max_age(tmp_path):
    path = tmp_path / "out.h5"
    proc, tmp = writer_in_subprocess(path)
    try:
        # A live process that started after the file was last written cannot be its owner.
        hour_ago = time.time() - 3600
        os.utime(tmp, (hour_ago, hour_ago))
        assert cleanup_stale(path) == [tmp]
    finally:
        proc.kill()
        proc.wait()
    # Files of other hosts (or unparsable names) go only by age.
    foreign = tmp_path / ".out.h5.otherhost.1.abcd1234.tmp"
    foreign.write_bytes(b"x")
    unrelated = tmp_path / ".other.h5.otherhost.1.abcd1234.tmp"
    unrelated.write_bytes(b"x")
    assert cleanup_stale(path) == []
    assert cleanup_stale(path, max_age=3600) == []
    os.utime(foreign, (hour_ago, hour_ago))
    os.utime(unrelated, (hour_ago, hour_ago))
    assert cleanup_stale(path, max_age=3600) == [foreign]
    assert unrelated.exists()


def test_write_and_commit_after_abort_name_the_file(tmp_path):
    writer = EmbeddingStore.create(tmp_path / "o.h5", n=1, dim=2, fingerprint="fp")
    writer.abort()
    with pytest.raises(FileNotFoundError, match="temporary store .* not found"):
        writer.write(0, ["a"], np.ones((1, 2)))
    with pytest.raises(FileNotFoundError, match="temporary store .* not found"):
        writer.commit()
    with pytest.raises(ValueError, match="is not a temporary file of"):
        commit(writer.tmp_path, tmp_path / "elsewhere.h5")
    assert list(tmp_path.iterdir()) == []


def test_kept_dataset_records_the_decision_atomically(tmp_path, monkeypatch):
    from embetter_core.store import embedding_store as store_lib
    from embetter_core.store import write_kept

    path = tmp_path / "out.h5"
    ids = [f"r{i}" for i in range(6)]
    with EmbeddingStore.create(path, n=6, dim=8, fingerprint="enc-1") as writer:
        writer.write(0, ids, vectors(6))
    with EmbeddingStore.open(path) as store:
        assert store.kept is None and store.kept_attrs == {}
    flags = np.array([True, False, True, True, False, True])
    assert write_kept(path, flags, threshold=0.85, keep="first", report=None) == path
    with EmbeddingStore.open(path, fingerprint="enc-1") as store:
        assert store.kept.dtype == bool and store.kept.tolist() == flags.tolist()
        assert store.kept_attrs == {"threshold": 0.85, "keep": "first", "report": "", "removed": 2}
        assert store.ids == ids
        np.testing.assert_array_equal(store.embeddings, vectors(6))  # rows untouched
    with h5py.File(path, "r") as f:  # plain h5py reads it too
        assert f["kept"][:].sum() == 4
    # a second decision replaces the first
    write_kept(path, np.ones(6, dtype=bool), threshold=0.9)
    with EmbeddingStore.open(path) as store:
        assert store.kept.all() and store.kept_attrs == {"threshold": 0.9, "removed": 0}
    assert tmp_files(tmp_path) == []
    # a crash while writing leaves the old file whole and no temporary file
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store_lib, "_attr_value", crash)
    with pytest.raises(OSError, match="disk full"):
        write_kept(path, flags, threshold=0.5)
    assert path.read_bytes() == before and tmp_files(tmp_path) == []


def test_kept_dataset_validation(tmp_path):
    from embetter_core.store import write_kept

    path = tmp_path / "out.h5"
    with EmbeddingStore.create(path, n=3, dim=8, fingerprint="enc-1") as writer:
        writer.write(0, ["a", "b", "c"], vectors(3))
    with pytest.raises(ValueError, match=r"kept has shape \(2,\); the store .* has 3 rows"):
        write_kept(path, [True, False])
    with pytest.raises(ValueError, match="kept must be booleans, got dtype int64"):
        write_kept(path, np.array([1, 0, 1]))
    with pytest.raises(FileNotFoundError, match="store not found"):
        write_kept(tmp_path / "missing.h5", [True])
    with pytest.raises(StoreError, match="other ids than the store .* first difference at row 1"):
        write_kept(path, [True, True, False], ids=["a", "c", "b"])
    with EmbeddingStore.open(path) as store:
        assert store.kept is None  # nothing written by the refused calls
    write_kept(path, [True, True, False], ids=["a", "b", "c"])
    with EmbeddingStore.open(path) as store:
        assert store.kept.tolist() == [True, True, False]
