"""The partitioned dedupe engine: the in-memory ann engine's pairs at the same settings,
from an h5py dataset read in blocks, in a memory budget (refused, naming the smallest that
works, when too small), dense cells in pieces, faults (a full disk, a lost worker) and a
LocalCluster of worker processes."""

from __future__ import annotations

import errno
import hashlib
import re
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from benchmarks.dedupe import planted
from embetter_core.dedupe import (
    DuplicateReport,
    DuplicateSearchError,
    find_duplicates,
    partition_files,
)
from embetter_core.dedupe.partitioned import PartitionOptions

SETTINGS = {"threshold": 0.9, "nlist": 40, "nprobe": 3, "seed": 0}


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return planted(4000, 64, seed=1)[0]


@pytest.fixture(scope="module")
def ann(vectors) -> DuplicateReport:
    return find_duplicates(vectors, method="ann", **SETTINGS)


def assert_same_pairs(a: DuplicateReport, b: DuplicateReport) -> None:
    ca, cb = a.candidates, b.candidates
    assert len(ca) >= 100
    np.testing.assert_array_equal(ca.a, cb.a)
    np.testing.assert_array_equal(ca.b, cb.b)
    np.testing.assert_array_equal(ca.scores, cb.scores)
    assert a.clusters == b.clusters
    np.testing.assert_array_equal(a.kept_mask, b.kept_mask)


def test_partitioned_finds_the_ann_pairs(vectors, ann, tmp_path) -> None:
    report = find_duplicates(
        vectors,
        method="partitioned",
        memory_budget="512MiB",
        partitions=PartitionOptions(work_dir=tmp_path),
        **SETTINGS,
    )
    assert_same_pairs(ann, report)
    assert report.method == "ann" and report.params["engine"] == "partitioned"
    assert report.params["cells_searched"] == 40
    np.testing.assert_allclose(report.nearest, ann.nearest, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(report.candidates.cells.primary, ann.candidates.cells.primary)
    assert report.recall_estimate == ann.recall_estimate
    assert list(tmp_path.iterdir()) == []  # the work folder is removed


def test_partitioned_threads_and_shuffled_ids_give_the_same_pairs(vectors, ann) -> None:
    rng = np.random.default_rng(5)
    perm = rng.permutation(len(vectors))
    ids = [f"row{i:05d}" for i in range(len(vectors))]
    base = find_duplicates(vectors, ids=ids, method="ann", **SETTINGS)
    report = find_duplicates(
        vectors[perm], ids=[ids[p] for p in perm], method="partitioned", n_jobs=2, **SETTINGS
    )
    assert sorted(map(sorted, report.clusters)) == sorted(map(sorted, base.clusters))

    def id_pairs(r: DuplicateReport) -> set[tuple[str, str]]:
        return {(r.ids[a], r.ids[b]) for a, b in zip(r.candidates.a, r.candidates.b, strict=True)}

    assert id_pairs(report) == id_pairs(base)


def test_h5py_dataset_is_read_in_blocks(tmp_path) -> None:
    rng = np.random.default_rng(3)  # random rows and 100 near-copies: few pairs
    X = rng.standard_normal((30_000, 256), dtype=np.float32)
    X[1:2000:20] = X[0:2000:20] + 0.05 * rng.standard_normal((100, 256), dtype=np.float32)
    path = tmp_path / "store.h5"
    with h5py.File(path, "w") as f:
        f["embeddings"] = X
    whole = find_duplicates(X, method="ann", threshold=0.9, nprobe=3, block_size=128)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with h5py.File(path) as f:
        tracemalloc.start()
        report = find_duplicates(
            f["embeddings"],
            threshold=0.9,
            nprobe=3,
            block_size=128,
            method="partitioned",
            memory_budget="24MiB",
            partitions=PartitionOptions(keep_files=True),
        )
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 0.75 * X.nbytes, (peak, X.nbytes)  # never the whole matrix
    assert_same_pairs(whole, report)
    folder = Path(report.params["work_folder"])
    assert folder.parent == tmp_path  # beside the store, kept when asked
    assert (folder / "vectors.f32").stat().st_size == X.nbytes
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_gather_reads_rows_in_any_order_without_mapping_the_file(tmp_path) -> None:
    rows = np.arange(50 * 8, dtype=np.float32).reshape(50, 8)
    folder = partition_files.make_work_folder(None, work_dir=tmp_path)
    ref = partition_files.write_partitions(folder, [(np.arange(50), rows)], position=np.arange(50))
    picks = np.array([7, 8, 9, 3, 49, 0, 1, 9])  # runs, a step back, a repeat
    assert np.array_equal(ref.gather(picks), rows[picks])
    assert ref.gather(np.empty(0, dtype=np.int64)).shape == (0, 8)
    with pytest.raises(IndexError, match="outside 0:50"):
        ref.gather(np.array([3, 50]))


def test_budget_too_small_is_refused_naming_the_smallest_that_works(vectors, ann, tmp_path):
    with pytest.raises(DuplicateSearchError, match="smallest budget that works") as err:
        find_duplicates(
            vectors,
            method="partitioned",
            memory_budget="1MiB",
            partitions=PartitionOptions(work_dir=tmp_path),
            **SETTINGS,
        )
    assert "memory_budget=1.0MiB is too small" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # refused before any work
    smallest = re.search(r"works is (\S+?MiB)", str(err.value)).group(1)
    report = find_duplicates(vectors, method="partitioned", memory_budget=smallest, **SETTINGS)
    assert_same_pairs(ann, report)


def test_bad_budget_text_is_refused(vectors) -> None:
    with pytest.raises(DuplicateSearchError, match="memory_budget must be a size"):
        find_duplicates(vectors, method="partitioned", memory_budget="lots")


def test_dense_cell_is_searched_in_pieces_with_the_same_pairs() -> None:
    X = planted(5000, 64, seed=2)[0]
    kw = {"threshold": 0.9, "nlist": 4, "nprobe": 3, "block_size": 32}
    base = find_duplicates(X, method="ann", **kw)
    report = find_duplicates(X, method="partitioned", memory_budget="3MiB", **kw)
    assert report.params["cells_split"] >= 1
    assert_same_pairs(base, report)


def test_auto_runs_partitioned_when_the_vectors_do_not_fit(vectors) -> None:
    big = np.concatenate([vectors] * 3)  # 12,000 rows: above the exact crossover
    report = find_duplicates(big, threshold=0.9, memory_budget="7MiB", block_size=64)
    assert report.params["engine"] == "partitioned"
    assert "engine" not in find_duplicates(big, threshold=0.9, memory_budget="1GiB").params


def test_nan_row_is_refused_before_anything_is_written(vectors, tmp_path) -> None:
    X = vectors.copy()
    X[17, 3] = np.nan
    opts = PartitionOptions(work_dir=tmp_path)
    with pytest.raises(DuplicateSearchError, match=r"17 \(row 17\)"):
        find_duplicates(X, method="partitioned", partitions=opts, **SETTINGS)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_gives_a_clear_error_and_leaves_the_store(monkeypatch, tmp_path) -> None:
    path = tmp_path / "store.h5"
    with h5py.File(path, "w") as f:
        f["embeddings"] = planted(3000, 32, seed=4)[0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    calls = []

    def full(fd, data, offset):
        calls.append(offset)
        if len(calls) > 1:  # the second block's write
            raise OSError(errno.ENOSPC, "No space left on device")
        return partition_files.os.pwrite(fd, data, offset)

    monkeypatch.setattr(partition_files, "_pwrite", full)
    with h5py.File(path) as f, pytest.raises(DuplicateSearchError, match="the disk is full"):
        find_duplicates(
            f["embeddings"], method="partitioned", memory_budget="3MiB", block_size=64, **SETTINGS
        )
    assert len(calls) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["store.h5"]  # the work folder is gone
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_too_little_free_space_is_refused_before_writing(monkeypatch, vectors, tmp_path) -> None:
    real = partition_files.shutil.disk_usage

    def tiny(path):
        return real(path)._replace(free=1000)

    monkeypatch.setattr(partition_files.shutil, "disk_usage", tiny)
    opts = PartitionOptions(work_dir=tmp_path)
    with pytest.raises(DuplicateSearchError, match="not enough disk space"):
        find_duplicates(vectors, method="partitioned", partitions=opts, **SETTINGS)


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cl,
        Client(cl) as client,
    ):
        yield cl, client


@pytest.mark.slow
def test_local_cluster_of_worker_processes_gives_the_same_pairs(vectors, ann, cluster) -> None:
    _, client = cluster
    seen = []
    opts = PartitionOptions(client=client, on_progress=lambda d, t: seen.append((d, t)))
    report = find_duplicates(vectors, method="partitioned", partitions=opts, **SETTINGS)
    assert_same_pairs(ann, report)
    assert seen[0] == (0, 40) and seen[-1] == (40, 40)
    assert len(client.run(lambda: 1)) == 2  # two worker processes answered


@pytest.mark.slow
def test_killed_worker_gives_the_same_pairs_or_names_the_lost_cells(cluster) -> None:
    import os
    import signal
    import threading

    cl, client = cluster
    X = planted(20_000, 64, seed=6)[0]
    base = find_duplicates(X, method="ann", threshold=0.9, nlist=200, nprobe=3)
    pids = client.run(os.getpid)
    victim = next(iter(pids.values()))
    killed = threading.Event()

    def on_progress(done: int, total: int) -> None:
        if done == total // 4 and not killed.is_set():
            killed.set()
            os.kill(victim, signal.SIGKILL)

    opts = PartitionOptions(client=client, on_progress=on_progress, max_in_flight=4)
    try:
        report = find_duplicates(
            X, method="partitioned", threshold=0.9, nlist=200, nprobe=3, partitions=opts
        )
    except DuplicateSearchError as exc:
        assert re.search(r"lost \d+ of 200 cells", str(exc)) and "cell " in str(exc)
    else:
        assert killed.is_set()
        np.testing.assert_array_equal(report.candidates.a, base.candidates.a)
        np.testing.assert_array_equal(report.candidates.b, base.candidates.b)
        assert report.clusters == base.clusters


@pytest.mark.slow
def test_flow_on_dask_runs_the_cells_there(prefect_harness, cluster, tmp_path) -> None:
    """``--runner dask --dedupe-method partitioned``: the flow's cells run as tasks on its
    cluster, with the thread runner's ann pairs."""
    import pandas as pd
    from prefect_dask import DaskTaskRunner

    from flows.embed_corpus import embed_corpus

    cl, client = cluster
    sample = Path(__file__).resolve().parent.parent / "embetter_core/data/debian-sample.csv.gz"
    corpus = tmp_path / "debian.csv"
    pd.read_csv(sample, keep_default_na=False).head(400).to_csv(corpus, index=False)

    def run(out: str, method: str, flow=embed_corpus):
        return flow(
            input_path=str(corpus),
            encoder="static",
            output=str(tmp_path / out / "store.h5"),
            cache_dir=str(tmp_path / "cache"),
            report_dir=str(tmp_path / out / "report"),
            dedupe_method=method,
            memory_budget="256MiB",
        )

    run("ann", "ann")
    on_dask = embed_corpus.with_options(task_runner=DaskTaskRunner(address=cl.scheduler_address))
    run("dask", "partitioned", flow=on_dask)
    want = pd.read_csv(tmp_path / "ann/report/pairs.csv")
    got = pd.read_csv(tmp_path / "dask/report/pairs.csv")
    assert len(want) > 0
    pd.testing.assert_frame_equal(got, want)
    prefixes = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert any(p.startswith("dedupe") for p in prefixes), prefixes
    assert not list((tmp_path / "dask").glob(".store.h5.partitions-*"))  # removed


def test_benchmark_sample_recall_counts_the_exact_pairs_found(tmp_path) -> None:
    from benchmarks.sample_recall import sample_recall

    X = planted(3000, 32, seed=2)[0]
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["embeddings"] = X
        cand = find_duplicates(X, threshold=0.9, method="exact").candidates
        a, b = cand.a[cand.scores >= 0.9], cand.b[cand.scores >= 0.9]  # the floor is lower
        whole = sample_recall(f["embeddings"], a, b, 0.9, size=3000)
        assert whole["exact_pairs"] == len(a) > 0
        assert whole["recall"] == 1.0
        half = sample_recall(f["embeddings"], a[::2], b[::2], 0.9, size=3000)
        assert half["found"] == (len(a) + 1) // 2
        part = sample_recall(f["embeddings"], a, b, 0.9, size=1000)
        assert part["sample_rows"] == 1000 and part["recall"] == 1.0


def test_report_pairs_are_arrays_read_as_the_list_of_tuples(vectors, ann) -> None:
    import pickle

    from embetter_core.dedupe.pair_list import PairList

    pairs = ann.pairs
    assert isinstance(pairs, PairList) and len(pairs) > 2
    as_list = list(pairs)
    assert pairs == as_list and as_list == pairs and pairs != as_list[:-1]
    assert pairs[:2] == as_list[:2] and pairs[-1] == as_list[-1]
    a, b, score = pairs[0]
    assert isinstance(a, int) and isinstance(score, float) and score >= 0.9
    assert pickle.loads(pickle.dumps(pairs)) == as_list
    assert ann.pairs_frame()["score"].tolist() == [s for _, _, s in as_list]


def test_driver_keeps_pairs_as_views_and_rows_as_int32(vectors, ann) -> None:
    """What keeps the driver of a 5M-row run in 2 GiB: the report's pairs are a prefix of
    the candidates (views, not copies), read rounded as before; the cells' rows are int32."""
    part = find_duplicates(vectors, method="partitioned", memory_budget="1GiB", **SETTINGS)
    assert_same_pairs(part, ann)
    cand, pairs = part.candidates, part.pairs
    assert len(pairs) < len(cand)  # the floor keeps pairs below the threshold too
    assert np.shares_memory(pairs._a, cand.a) and np.shares_memory(pairs._scores, cand.scores)
    rounded = np.round(cand.scores[: len(pairs)].astype(np.float64), 6).tolist()
    assert [s for _, _, s in pairs] == rounded
    assert pairs == ann.pairs
    cells = cand.cells
    assert cells.primary.dtype == cells.visit_rows.dtype == cells.visit_cells.dtype == np.int32
    np.testing.assert_array_equal(cells.visit_rows, ann.candidates.cells.visit_rows)
    np.testing.assert_array_equal(cells.primary, ann.candidates.cells.primary)


def test_removal_in_keep_order_is_the_one_by_one_rule() -> None:
    """The int32, round-by-round removal against the rule taken one row at a time."""
    from embetter_core.dedupe.decide import _remove_in_keep_order

    rng = np.random.default_rng(3)
    n, m = 3000, 9000
    a, b = rng.integers(0, n, m), rng.integers(0, n, m)
    a, b = a[a != b], b[a != b]
    scores = np.sort(rng.choice(np.arange(900, 1000) / 1000, len(a)).astype(np.float32))[::-1]
    keep_rank = rng.permutation(n)
    gone, kept_by, score = _remove_in_keep_order(n, a, b, scores, keep_rank)
    partners: dict[int, list[tuple[float, int, int]]] = {}
    for x, y, s in zip(a.tolist(), b.tolist(), scores.tolist(), strict=True):
        partners.setdefault(x, []).append((-s, keep_rank[y], y))
        partners.setdefault(y, []).append((-s, keep_rank[x], x))
    kept: set[int] = set()
    expected = []
    for row in np.argsort(keep_rank).tolist():
        best = sorted(p for p in partners.get(row, []) if p[2] in kept)
        if best:
            expected.append((row, best[0][2], -best[0][0]))
        else:
            kept.add(row)
    assert len(expected) > 500
    assert gone.dtype == kept_by.dtype == np.int64
    got = list(zip(gone.tolist(), kept_by.tolist(), score.tolist(), strict=True))
    assert got == [(r, k, pytest.approx(s)) for r, k, s in expected]
