"""The flow on Prefect's DaskTaskRunner gives the same store as the default runner.

A 2-worker process ``LocalCluster`` (``dask_runner(None, 2)``), and the CLI's
``--runner dask --dask-address`` against a cluster this test starts: ``embed_chunk`` runs in
the Dask worker processes, which load the model themselves and report to the same server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "embetter_core" / "data" / "debian-sample.csv.gz"
ROWS = 60


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """60 rows of the bundled Debian sample (real descriptions, some near-duplicates)."""
    frame = pd.read_csv(SAMPLE, keep_default_na=False).head(ROWS)
    path = tmp_path_factory.mktemp("dask-corpus") / "debian60.csv"
    frame.to_csv(path, index=False)
    return path


def read_store(path: Path) -> tuple[list[str], np.ndarray]:
    with h5py.File(path) as f:
        return [i.decode() for i in f["ids"][:]], f["embeddings"][:]


def run_flow(flow_fn, corpus: Path, out: Path):
    return flow_fn(
        input_path=str(corpus),
        output=str(out / "store.h5"),
        cache_dir=str(out / "cache"),
        report_dir=str(out / "report"),
        chunk_size=10,
        max_in_flight=4,
    )


@pytest.fixture(scope="module")
def default_store(prefect_harness, corpus, tmp_path_factory):
    from flows.embed_corpus import embed_corpus

    out = tmp_path_factory.mktemp("default-runner")
    result = run_flow(embed_corpus, corpus, out)
    assert (result.rows, result.cache_misses) == (ROWS, ROWS)
    return read_store(Path(result.store_path))


def test_local_cluster_matches_default_runner(prefect_harness, corpus, default_store, tmp_path):
    from prefect_dask import DaskTaskRunner

    from flows.embed_corpus import dask_runner, embed_corpus

    runner = dask_runner(None, 2)
    assert isinstance(runner, DaskTaskRunner)
    result = run_flow(embed_corpus.with_options(task_runner=runner), corpus, tmp_path)
    # a fresh cache: every row was encoded, on the Dask workers
    assert (result.rows, result.cache_hits, result.cache_misses) == (ROWS, 0, ROWS)
    ids, vectors = read_store(Path(result.store_path))
    want_ids, want_vectors = default_store
    assert ids == want_ids
    assert vectors.shape == (ROWS, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, want_vectors, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "report" / "pairs.csv").exists()


def test_cli_runner_dask_on_an_existing_cluster(prefect_harness, corpus, default_store, tmp_path):
    """``--runner dask --dask-address`` sends the chunks to a cluster started elsewhere."""
    import prefect.settings
    from distributed import Client, LocalCluster

    env = {
        **os.environ,
        "PREFECT_API_URL": prefect.settings.PREFECT_API_URL.value(),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
    }

    def cached_encoders() -> int:  # runs in each worker (a local function: pickled by value)
        module = sys.modules.get("tasks.embed")
        return len(module._ENCODERS) if module else 0

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "flows.embed_corpus", str(corpus),
             "--output", str(tmp_path / "cli.h5"), "--cache-dir", str(tmp_path / "cache"),
             "--report-dir", str(tmp_path / "report"), "--chunk-size", "10",
             "--runner", "dask", "--dask-address", cluster.scheduler_address, "--no-progress"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # the encoders were loaded in the cluster's worker processes, not in the CLI's
        loaded = client.run(cached_encoders)
    assert sum(loaded.values()) >= 1, loaded
    assert f"embeddings: {tmp_path / 'cli.h5'}" in proc.stdout
    assert f"cache: 0 hits, {ROWS} misses" in proc.stdout
    ids, vectors = read_store(tmp_path / "cli.h5")
    want_ids, want_vectors = default_store
    assert ids == want_ids
    np.testing.assert_allclose(vectors, want_vectors, rtol=1e-4, atol=1e-5)
