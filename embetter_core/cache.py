"""``cached(name, encoder)``: compute each embedding once and keep it on disk (diskcache).

The cache is a diskcache ``Cache`` in folder ``name``: a text is its own key, any other item
(image, array) a content hash, and each value is that item's float32 vector, so
``diskcache.Cache(name)[text]`` reads one embedding back. The encoder's fingerprint is stored
too: opening the cache with another encoder raises :class:`FingerprintMismatchError`.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embetter_core.base import EmbeddingEncoder, as_float32
from embetter_core.errors import FingerprintMismatchError

FINGERPRINT_KEY = ("embetter-core", "fingerprint")
_MISSING = object()
_MODE_PICKLE = 4  # diskcache.core.MODE_PICKLE: the value column holds a pickle
_IN_BATCH = 500  # keys per SELECT ... IN (...)


def cached(name: str | os.PathLike[str], encoder: EmbeddingEncoder) -> CachedEncoder:
    """Wrap ``encoder`` in a new estimator that caches its vectors in folder ``name``.

    The original encoder is not modified.

    >>> import tempfile, diskcache
    >>> from embetter_core import SentenceEncoder
    >>> folder = tempfile.mkdtemp()
    >>> enc = cached(folder, SentenceEncoder())
    >>> enc.transform(["hello", "world", "hello"]).shape
    (3, 384)
    >>> enc.last_stats_
    {'items': 3, 'unique': 2, 'hits': 0, 'misses': 2}
    >>> diskcache.Cache(folder)["hello"].shape
    (384,)
    """
    return CachedEncoder(name=name, encoder=encoder)


class CachedEncoder(EmbeddingEncoder):
    """An encoder whose vectors are read from / written to a diskcache folder.

    One ``transform`` call reads every hit in one transaction, encodes every miss in one
    call to the inner encoder (repeated inputs once), and writes the new vectors in one
    transaction. ``last_stats_`` holds the hit / miss counts of the latest call.
    """

    def __init__(self, name: str | os.PathLike[str], encoder: EmbeddingEncoder) -> None:
        self.name = name
        self.encoder = encoder

    # -- the cache -------------------------------------------------------------------
    @property
    def cache_(self) -> Any:
        """The open ``diskcache.Cache``, checked against the encoder's fingerprint."""
        cache = self.__dict__.get("_lazy_cache")
        if cache is None:
            import diskcache

            cache = diskcache.Cache(os.fspath(self.name), eviction_policy="none")
            try:
                check_fingerprint(cache, self.encoder.fingerprint(), os.fspath(self.name))
            except BaseException:
                cache.close()
                raise
            self.__dict__["_lazy_cache"] = cache
        return cache

    def close(self) -> None:
        """Close the cache handle (it reopens on the next call)."""
        cache = self.__dict__.pop("_lazy_cache", None)
        if cache is not None:
            cache.close()

    # -- the encoder contract ----------------------------------------------------------
    def fingerprint(self) -> str:
        return self.encoder.fingerprint()

    def cache_keys(self, items: Sequence[Any]) -> list[Any]:
        return self.encoder.cache_keys(items)

    def validate_input(self, X: Any) -> list[Any]:  # noqa: N803
        return self.encoder.validate_input(X)

    def transform(self, X: Any) -> np.ndarray:  # noqa: N803
        """Vectors for ``X`` in input order: cached ones read, the rest encoded and stored."""
        items = self.validate_input(X)
        cache = self.cache_
        keys = self.cache_keys(items)
        first_pos: dict[Any, int] = {}
        for pos, key in enumerate(keys):
            first_pos.setdefault(key, pos)
        unique = list(first_pos)

        found = read_many(cache, unique)
        misses = [key for key, vec in zip(unique, found, strict=True) if vec is None]
        if misses:
            new = as_float32(self.encoder.transform([items[first_pos[k]] for k in misses]))
            write_many(cache, misses, new)
            new_by_key = dict(zip(misses, new, strict=True))
            found = [new_by_key[k] if v is None else v for k, v in zip(unique, found, strict=True)]
        self.__dict__["last_stats_"] = {
            "items": len(items),
            "unique": len(unique),
            "hits": len(unique) - len(misses),
            "misses": len(misses),
        }
        if not items:
            return as_float32(self.encoder.transform([]))
        index = {key: i for i, key in enumerate(unique)}
        table = np.stack(found).astype(np.float32, copy=False)
        return np.ascontiguousarray(table[[index[k] for k in keys]])


def read_many(cache: Any, keys: Sequence[Any]) -> list[np.ndarray | None]:
    """Read ``keys`` in one read transaction; ``None`` where a key is missing.

    Rows are fetched with a few ``SELECT ... IN`` queries on the cache's SQLite file instead
    of one ``get`` per key, and vectors pickled alike (same dtype and shape) are cut out of
    their pickles directly: a warm call on 10,000 texts costs tens of milliseconds. Anything
    unusual (values kept in files, other pickles) goes through diskcache's own ``get``.
    """
    positions: dict[tuple[Any, bool], int] = {}
    for pos, key in enumerate(keys):
        db_key, raw = cache.disk.put(key)
        positions[(bytes(db_key) if isinstance(db_key, memoryview) else db_key, raw)] = pos
    found: dict[int, bytes] = {}
    slow: list[int] = []
    con = sqlite3.connect(f"file:{Path(cache.directory, 'cache.db')}?mode=ro", uri=True)
    try:
        con.execute("BEGIN")
        now = time.time()
        for raw in (True, False):
            group = [k for k, r in positions if r == raw]
            for start in range(0, len(group), _IN_BATCH):
                batch = group[start : start + _IN_BATCH]
                rows = con.execute(
                    "SELECT key, mode, filename, value FROM Cache WHERE raw = ? AND key IN "
                    f"({','.join('?' * len(batch))}) AND "
                    "(expire_time IS NULL OR expire_time > ?)",
                    (raw, *batch, now),
                )
                for db_key, mode, filename, value in rows:
                    pos = positions[(bytes(db_key) if raw is False else db_key, raw)]
                    if mode == _MODE_PICKLE and filename is None and value is not None:
                        found[pos] = bytes(value)
                    else:
                        slow.append(pos)
        con.execute("COMMIT")
    finally:
        con.close()
    out: list[np.ndarray | None] = [None] * len(keys)
    for pos, vec in zip(found, _unpickle_vectors(list(found.values())), strict=True):
        out[pos] = vec
    for pos in slow:
        value = cache.get(keys[pos], default=_MISSING)
        out[pos] = None if value is _MISSING else value
    return out


def _unpickle_vectors(blobs: list[bytes]) -> list[np.ndarray]:
    """Unpickle arrays; those pickled exactly like the first (all but the data bytes equal)
    are sliced out of their pickles instead of each going through ``pickle.loads``."""
    if not blobs:
        return []
    first = pickle.loads(blobs[0])
    if not (isinstance(first, np.ndarray) and first.ndim == 1 and first.flags.c_contiguous):
        return [pickle.loads(b) for b in blobs]
    data = first.tobytes()
    offset = blobs[0].find(data)
    if not data or offset < 0 or blobs[0].rfind(data) != offset:
        return [pickle.loads(b) for b in blobs]
    prefix, suffix = blobs[0][:offset], blobs[0][offset + len(data) :]
    size, stop = len(blobs[0]), offset + len(data)
    same = [len(b) == size and b.startswith(prefix) and b.endswith(suffix) for b in blobs]
    table = np.frombuffer(
        b"".join(b[offset:stop] for b, ok in zip(blobs, same, strict=True) if ok),
        dtype=first.dtype,
    ).reshape(-1, first.shape[0])
    rows = iter(table)
    return [next(rows) if ok else pickle.loads(b) for b, ok in zip(blobs, same, strict=True)]


def write_many(cache: Any, keys: Sequence[Any], vectors: np.ndarray) -> None:
    """Write one vector per key in one transaction (keys already present are left as
    they are: another process wrote the same vector first).

    Rows are built with diskcache's own ``Disk.put`` / ``Disk.store`` and inserted with one
    ``executemany``; diskcache's triggers keep its count and size right. A value too large
    for the database (kept in a file) goes through ``Cache.add``.
    """
    disk, now = cache.disk, time.time()
    rows, large = [], []
    for key, vec in zip(keys, vectors, strict=True):
        value = np.array(vec, dtype=np.float32)
        db_key, raw = disk.put(key)
        size, mode, filename, db_value = disk.store(value, False, key=key)
        if filename is not None:
            large.append((key, value, filename))
            continue
        rows.append((db_key, raw, now, None, now, 0, None, size, mode, None, db_value))
    if rows:
        con = sqlite3.connect(Path(cache.directory, "cache.db"), timeout=60, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.executemany(
                "INSERT OR IGNORE INTO Cache (key, raw, store_time, expire_time, access_time,"
                " access_count, tag, size, mode, filename, value)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            con.execute("COMMIT")
        finally:
            con.close()
    for key, value, filename in large:
        Path(cache.directory, filename).unlink(missing_ok=True)  # Cache.add writes its own
        cache.add(key, value)


def check_fingerprint(cache: Any, fingerprint: str, where: str) -> None:
    """Record ``fingerprint`` in a new cache, or raise if the cache holds another one."""
    cache.add(FINGERPRINT_KEY, fingerprint)  # atomic: only the first writer sets it
    stored = cache.get(FINGERPRINT_KEY)
    if stored != fingerprint:
        raise FingerprintMismatchError(
            f"cache {where!r} was written by encoder {stored} "
            f"but is being opened with encoder {fingerprint}; use another cache folder"
        )
