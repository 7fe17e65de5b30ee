"""The HDF5 embedding store: a temporary file written row by row and committed into place
(``writing``), and :class:`EmbeddingStore`, which opens, reads and creates stores and
records a dedupe decision in one (``embedding_store``).
"""

from __future__ import annotations

from embetter_core.store.embedding_store import EmbeddingStore, write_kept
from embetter_core.store.writing import (
    FORMAT,
    FORMAT_VERSION,
    KEPT,
    StoreWriter,
    check_writable,
    cleanup_stale,
    commit,
    write_rows,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KEPT",
    "EmbeddingStore",
    "StoreWriter",
    "check_writable",
    "cleanup_stale",
    "commit",
    "write_kept",
    "write_rows",
]
