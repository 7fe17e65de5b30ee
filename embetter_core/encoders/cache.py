"""``cached(name, encoder)``: compute each embedding once and keep it on disk (diskcache).

The cache is a diskcache ``Cache`` in folder ``name``: a text is its own key, any other item
(image, array) a content hash, and each value is that item's float32 vector, so
``diskcache.Cache(name)[text]`` reads one embedding back. The encoder's fingerprint is stored
too: opening the cache with another encoder raises :class:`FingerprintMismatchError`.

Each vector is stored with a checksum (CRC-32 of its key and its stored bytes, in diskcache's
``tag`` column). A vector whose bytes no longer match it (a damaged disk, an edited file, a
row copied over another) is never used: it counts as a miss, is encoded again and replaced,
and a warning is logged (``logging``, logger ``embetter_core.encoders.cache``). Vectors written
before checksums existed (no tag) are treated the same way, once: the first run after an upgrade
re-encodes them, with an info line saying how many. The checksum finds damage, not forgery:
whoever can write the folder can also write a matching checksum (and the values are pickles),
so a cache folder must be as trusted as the code. A database that SQLite cannot read raises
:class:`~embetter_core.errors.CacheCorruptError` naming the folder: delete it to rebuild.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pickle
import sqlite3
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embetter_core.encoders.base import EmbeddingEncoder, as_float32
from embetter_core.errors import CacheCorruptError, DiskFullError, FingerprintMismatchError
from embetter_core.files import is_disk_full

FINGERPRINT_KEY = ("embetter-core", "fingerprint")
_MISSING = object()
_MODE_PICKLE = 4  # diskcache.core.MODE_PICKLE: the value column holds a pickle
_IN_BATCH = 500  # keys per SELECT ... IN (...)
_SQLITE_DAMAGED = {11, 26}  # SQLITE_CORRUPT ("disk image is malformed"), SQLITE_NOTADB

log = logging.getLogger(__name__)


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

            folder = os.fspath(self.name)
            with named_if_damaged(folder):
                cache = diskcache.Cache(folder, eviction_policy="none")
                try:
                    check_fingerprint(cache, self.encoder.fingerprint(), folder)
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
    def wrapped(self) -> EmbeddingEncoder:
        return self.encoder

    def fingerprint(self) -> str:
        return self.encoder.fingerprint()

    def cache_keys(self, items: Sequence[Any]) -> list[Any]:
        return self.encoder.cache_keys(items)

    def validate_input(self, X: Any) -> list[Any]:
        return self.encoder.validate_input(X)

    def transform(self, X: Any) -> np.ndarray:
        """Vectors for ``X`` in input order: cached ones read, the rest encoded and stored."""
        items = self.validate_input(X)
        cache = self.cache_
        keys = self.cache_keys(items)
        first_pos: dict[Any, int] = {}
        for pos, key in enumerate(keys):
            first_pos.setdefault(key, pos)
        unique = list(first_pos)

        folder = os.fspath(self.name)
        with named_if_damaged(folder):
            read = read_checked(cache, unique)
        found = read.vectors
        _log_rejected(folder, read)
        misses = [key for key, vec in zip(unique, found, strict=True) if vec is None]
        if misses:
            new = as_float32(self.encoder.transform([items[first_pos[k]] for k in misses]))
            stale = [unique[pos] for pos in (*read.corrupt, *read.unchecked)]
            with named_if_damaged(folder):
                write_many(cache, misses, new, replace=stale)
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


@dataclass
class CacheRead:
    """What :func:`read_checked` found for each key, by position.

    ``vectors[i]`` is ``None`` for a key not in the cache or whose row failed its check;
    ``corrupt`` lists the positions whose checksum did not match, ``unchecked`` those
    written without one (by an older embetter-core).
    """

    vectors: list[np.ndarray | None]
    corrupt: list[int] = field(default_factory=list)
    unchecked: list[int] = field(default_factory=list)


def read_many(cache: Any, keys: Sequence[Any]) -> list[np.ndarray | None]:
    """Read ``keys`` in one read transaction, as ``cache.get`` would, without the checksum
    check (see :func:`read_checked`); ``None`` where a key is missing.

    Rows are fetched with a few ``SELECT ... IN`` queries on the cache's SQLite file instead
    of one ``get`` per key, and vectors pickled alike (same dtype and shape) are cut out of
    their pickles directly: a warm call on 10,000 texts costs tens of milliseconds. Anything
    unusual (values kept in files, other pickles) goes through diskcache's own ``get``.
    """
    found: dict[int, bytes] = {}
    slow: list[int] = []
    for pos, _key, mode, filename, value, _tag in _select(cache, keys):
        if mode == _MODE_PICKLE and filename is None and value is not None:
            found[pos] = bytes(value)
        else:
            slow.append(pos)
    out: list[np.ndarray | None] = [None] * len(keys)
    for pos, vec in zip(found, _unpickle_vectors(list(found.values())), strict=True):
        out[pos] = vec
    for pos in slow:
        value = cache.get(keys[pos], default=_MISSING)
        out[pos] = None if value is _MISSING else value
    return out


def read_checked(cache: Any, keys: Sequence[Any]) -> CacheRead:
    """Read ``keys`` like :func:`read_many`, using only vectors whose checksum matches.

    A row is unpickled only after its bytes are checked, so damaged bytes are never loaded.
    """
    found: dict[int, bytes] = {}
    in_files: list[tuple[int, Any, str, int]] = []
    corrupt: list[int] = []
    unchecked: list[int] = []
    for pos, key, mode, filename, value, tag in _select(cache, keys):
        if tag is None:
            unchecked.append(pos)
        elif mode == _MODE_PICKLE and filename is not None and value is None:
            in_files.append((pos, key, filename, tag))
        elif (
            mode == _MODE_PICKLE
            and filename is None
            and type(value) is bytes
            and _checksum(key, value) == tag
        ):
            found[pos] = value
        else:
            corrupt.append(pos)  # changed, or never written by write_many
    out: list[np.ndarray | None] = [None] * len(keys)
    for pos, vec in zip(found, _unpickle_vectors(list(found.values())), strict=True):
        out[pos] = vec
    for pos, key, filename, tag in in_files:
        try:
            blob = Path(cache.directory, filename).read_bytes()
        except OSError:
            blob = b""
        if blob and _checksum(key, blob) == tag:
            out[pos] = pickle.loads(blob)
        else:
            corrupt.append(pos)
    return CacheRead(out, sorted(corrupt), unchecked)


def _select(cache: Any, keys: Sequence[Any]) -> Iterator[tuple[int, Any, int, Any, Any, Any]]:
    """``(position, stored key, mode, filename, value, tag)`` of each stored key, read in one
    transaction with a few ``SELECT ... IN`` queries."""
    positions: dict[tuple[Any, bool], int] = {}
    for pos, key in enumerate(keys):
        db_key, raw = cache.disk.put(key)
        positions[(bytes(db_key) if isinstance(db_key, memoryview) else db_key, raw)] = pos
    con = sqlite3.connect(f"file:{Path(cache.directory, 'cache.db')}?mode=ro", uri=True)
    try:
        con.execute("BEGIN")
        now = time.time()
        for raw in (True, False):
            group = [k for k, r in positions if r == raw]
            for start in range(0, len(group), _IN_BATCH):
                batch = group[start : start + _IN_BATCH]
                rows = con.execute(
                    "SELECT key, mode, filename, value, tag FROM Cache WHERE raw = ? AND key IN "
                    f"({','.join('?' * len(batch))}) AND "
                    "(expire_time IS NULL OR expire_time > ?)",
                    (raw, *batch, now),
                )
                for db_key, mode, filename, value, tag in rows:
                    key = bytes(db_key) if raw is False else db_key
                    yield positions[(key, raw)], key, mode, filename, value, tag
        con.execute("COMMIT")
    finally:
        con.close()


_STR_CRC, _BYTES_CRC = zlib.crc32(b"s"), zlib.crc32(b"b")


def _checksum(db_key: Any, blob: bytes) -> int:
    """CRC-32 of a stored key and its value's bytes (a str, bytes and a number never share
    a key prefix), so a value copied to another key fails too."""
    if type(db_key) is str:
        start = zlib.crc32(db_key.encode("utf-8", "surrogatepass"), _STR_CRC)
    elif isinstance(db_key, bytes | bytearray | memoryview):
        start = zlib.crc32(db_key, _BYTES_CRC)
    else:
        start = zlib.crc32(b"n" + repr(db_key).encode())
    return zlib.crc32(blob, start)


def _log_rejected(folder: str, read: CacheRead) -> None:
    if read.corrupt:
        log.warning(
            "cache %r: %d cached vector(s) failed their checksum (damaged or changed on disk); "
            "encoding them again",
            folder,
            len(read.corrupt),
        )
    if read.unchecked:
        log.info(
            "cache %r: %d cached vector(s) have no checksum (written by an older "
            "embetter-core); encoding them again, once",
            folder,
            len(read.unchecked),
        )


@contextlib.contextmanager
def named_if_damaged(folder: str) -> Iterator[None]:
    """Turn SQLite's "malformed" / "not a database" errors into :class:`CacheCorruptError`
    naming ``folder``, and a full disk into :class:`DiskFullError` naming it; other errors
    (a locked database) pass unchanged."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if is_disk_full(exc):
            raise DiskFullError(
                errno.ENOSPC,
                f"no space left on device writing the embedding cache {folder!r} "
                "(--cache-dir): free space or choose another folder; the vectors cached so "
                "far are kept",
            ) from exc
        code = getattr(exc, "sqlite_errorcode", None)
        damaged = (
            (code & 0xFF) in _SQLITE_DAMAGED
            if isinstance(code, int)
            else any(s in str(exc) for s in ("malformed", "not a database"))
        )
        if not damaged:
            raise
        raise CacheCorruptError(
            f"the embedding cache {folder!r} is damaged and cannot be read ({exc}). Delete "
            f"the folder {folder!r} to rebuild the cache (--cache-dir): its vectors are "
            "encoded again on the next run; nothing else is lost",
            folder,
        ) from exc


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


def write_many(
    cache: Any, keys: Sequence[Any], vectors: np.ndarray, replace: Sequence[Any] = ()
) -> None:
    """Write one vector per key, with its checksum, in one transaction. Keys already present
    are left as they are (another process wrote the same vector first), except those in
    ``replace`` (rows that failed their check), whose old rows are deleted first.

    Rows are built with diskcache's own ``Disk.put`` / ``Disk.store`` and inserted with one
    ``executemany``; diskcache's triggers keep its count and size right. A value too large
    for the database (kept in a file) goes through ``Cache.add`` / ``Cache.set``.
    """
    disk, now = cache.disk, time.time()
    stale = {_db_key(disk, key) for key in replace}
    rows, large = [], []
    for key, vec in zip(keys, vectors, strict=True):
        value = np.array(vec, dtype=np.float32)
        db_key, raw = disk.put(key)
        size, mode, filename, db_value = disk.store(value, False, key=key)
        stored_key = bytes(db_key) if isinstance(db_key, memoryview) else db_key
        if filename is not None:
            large.append((key, value, filename, stored_key))
            continue
        tag = _checksum(stored_key, bytes(db_value))
        rows.append((db_key, raw, now, None, now, 0, tag, size, mode, None, db_value))
    old_files: list[str] = []
    if rows or stale:
        con = sqlite3.connect(Path(cache.directory, "cache.db"), timeout=60, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            for db_key, raw in stale:
                old_files.extend(
                    name
                    for (name,) in con.execute(
                        "SELECT filename FROM Cache WHERE key = ? AND raw = ?", (db_key, raw)
                    )
                    if name is not None
                )
                con.execute("DELETE FROM Cache WHERE key = ? AND raw = ?", (db_key, raw))
            con.executemany(
                "INSERT OR IGNORE INTO Cache (key, raw, store_time, expire_time, access_time,"
                " access_count, tag, size, mode, filename, value)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            con.execute("COMMIT")
        finally:
            con.close()
    for name in old_files:
        Path(cache.directory, name).unlink(missing_ok=True)
    for key, value, filename, stored_key in large:
        Path(cache.directory, filename).unlink(missing_ok=True)  # Cache.add writes its own
        blob = pickle.dumps(value, protocol=disk.pickle_protocol)  # what Disk.store writes
        cache.add(key, value, tag=_checksum(stored_key, blob))


def _db_key(disk: Any, key: Any) -> tuple[Any, bool]:
    db_key, raw = disk.put(key)
    return (bytes(db_key) if isinstance(db_key, memoryview) else db_key), raw


def check_fingerprint(cache: Any, fingerprint: str, where: str) -> None:
    """Record ``fingerprint`` in a new cache, or raise if the cache holds another one."""
    cache.add(FINGERPRINT_KEY, fingerprint)  # atomic: only the first writer sets it
    stored = cache.get(FINGERPRINT_KEY)
    if stored != fingerprint:
        raise FingerprintMismatchError(
            f"cache {where!r} was written by encoder {stored} "
            f"but is being opened with encoder {fingerprint}; use another cache folder"
        )
