"""Persist: create the HDF5 store, write one chunk, commit it into place."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from prefect import get_run_logger

from embetter_core import store
from embetter_core.store import EmbeddingStore, StoreWriter
from tasks.options import step


@step("create-store")
def create_store(
    path: str, n: int, dim: int, fingerprint: str, source: str, corpus_hash: str, chunk_rows: int
) -> StoreWriter:
    """Remove stale temporary files of killed runs, then start a temporary store."""
    store.cleanup_stale(path)
    return EmbeddingStore.create(
        path,
        n=n,
        dim=dim,
        fingerprint=fingerprint,
        source=source,
        corpus_hash=corpus_hash,
        chunk_rows=chunk_rows,
    )


@step("persist-chunk", retrying=True, task_run_name="persist-chunk-{chunk}")
def persist_chunk(
    writer: StoreWriter,
    rows: int | Sequence[int] | np.ndarray,
    ids: list[str],
    vectors: np.ndarray,
    chunk: int = 0,
) -> int:
    """Write chunk number ``chunk`` into the temporary store: its ``ids`` and ``vectors`` go
    to ``rows`` (a first row number, or the row numbers); returns the rows written."""
    writer.write(rows, ids, vectors)
    return len(ids)


@step("commit-store")
def commit_store(writer: StoreWriter) -> Path:
    """Check every row was written and rename the store into place."""
    path = writer.commit()
    get_run_logger().info("store written: %s", path)
    return path
