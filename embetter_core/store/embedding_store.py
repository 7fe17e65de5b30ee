"""``EmbeddingStore``: embeddings and their ids in one HDF5 file (h5py).

Layout (readable with plain h5py: ``h5py.File(path)["embeddings"][:]``):

- ``ids``: ``(n,)`` UTF-8 strings; ``embeddings``: ``(n, dim)`` float32, chunked by rows;
- attributes ``format``, ``format_version``, ``fingerprint`` (the encoder's), ``dim``, ``n``,
  ``created`` (ISO 8601, UTC), ``source``, ``corpus_hash``;
- after a dedupe, ``kept``: ``(n,)`` bool, False for the rows the dedupe removed, with the
  decision's settings as its attributes (``threshold``, ``keep``, ...); see :func:`write_kept`.

Writing goes through :mod:`embetter_core.store.writing` (a temporary file committed into
place); :func:`write_kept` records a dedupe decision in a finished store, atomically.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from embetter_core.errors import DiskFullError, StoreError
from embetter_core.files import atomic_path
from embetter_core.store.writing import (
    _OVERWRITE,
    _WRITTEN,
    FORMAT,
    FORMAT_VERSION,
    KEPT,
    StoreWriter,
    _open_h5,
    _tmp_name,
    _unlink,
    check_writable,
)


def write_kept(
    path: str | os.PathLike[str],
    kept: Sequence[bool] | np.ndarray,
    *,
    ids: Sequence[str] | None = None,
    **attrs: Any,
) -> Path:
    """Record a dedupe decision in the finished store ``path``: a ``kept`` bool dataset (one
    flag per row, row order; False = removed), with ``attrs`` (e.g. ``threshold``, ``keep``)
    as its attributes. A later step filters with ``store.kept`` and no report. With ``ids``
    (the ids the flags follow, e.g. ``report.ids``), a store whose rows are other ids or in
    another order is refused.

    Atomic: the store is copied beside itself, the copy gets the dataset (replacing an
    earlier one), and it is renamed over the store; a crash leaves the old file whole.
    The copy costs one read and write of the file.

    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "v.h5"
    >>> with EmbeddingStore.create(path, n=3, dim=2, fingerprint="demo") as writer:
    ...     writer.write(0, ["a", "b", "c"], np.ones((3, 2)))
    >>> _ = write_kept(path, [True, False, True], threshold=0.85, keep="first")
    >>> with EmbeddingStore.open(path) as store:
    ...     store.kept.tolist(), store.kept_attrs["keep"]
    ([True, False, True], 'first')
    """
    import shutil

    final = Path(path).expanduser().absolute()
    flags = np.asarray(kept)
    if flags.dtype != np.bool_:
        raise ValueError(f"kept must be booleans, got dtype {flags.dtype}")
    with EmbeddingStore.open(final) as store:  # checks it is a finished store
        n = len(store)
        if flags.shape != (n,):
            raise ValueError(f"kept has shape {flags.shape}; the store {final} has {n} rows")
        if ids is not None and list(ids) != store.ids:
            pairs = enumerate(zip(ids, store.ids, strict=False))  # lengths may differ
            at = next((r for r, (a, b) in pairs if a != b), min(len(ids), n))
            raise StoreError(
                f"the kept flags follow other ids than the store {final}: first difference "
                f"at row {at}; was the report made from another store?"
            )
    with atomic_path(final) as tmp:
        shutil.copyfile(final, tmp)
        with contextlib.closing(_open_h5(tmp, "r+")) as f:
            if KEPT in f:
                del f[KEPT]
            dataset = f.create_dataset(KEPT, data=flags.astype(bool))
            dataset.attrs.update({k: _attr_value(v) for k, v in attrs.items()})
            dataset.attrs["removed"] = int(n - flags.sum())
    return final


def _attr_value(value: Any) -> Any:
    """A value HDF5 can hold as an attribute (None as an empty string, other objects as
    their text)."""
    if value is None:
        return ""
    if isinstance(value, str | bool | int | float | np.generic):
        return value
    return str(value)


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


class EmbeddingStore:
    """A finished store, opened read-only with :meth:`open`; written with :meth:`create`.

    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "vectors.h5"
    >>> with EmbeddingStore.create(path, n=3, dim=2, fingerprint="demo") as writer:
    ...     writer.write(0, ["a", "b"], np.ones((2, 2)))
    ...     writer.write(2, ["c"], np.zeros((1, 2)))
    >>> store = EmbeddingStore.open(path, fingerprint="demo")
    >>> store.ids, store.embeddings.shape, store.dim, len(store)
    (['a', 'b', 'c'], (3, 2), 2, 3)
    >>> [start for start, block in store.iter_blocks(2)]
    [0, 2]
    >>> store.close()
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], fingerprint: str | None = None) -> EmbeddingStore:
        """Open a store; with ``fingerprint``, refuse one written by another encoder."""
        store = cls(path)
        store._file  # noqa: B018 -- open and check it now, not on first use
        if fingerprint is not None and store.fingerprint != fingerprint:
            # imported here: embetter_core.encoders.cache pulls in scikit-learn, slow for a writer
            from embetter_core.errors import FingerprintMismatchError

            stored = store.fingerprint
            store.close()
            raise FingerprintMismatchError(
                f"store {str(store.path)!r} was written by encoder {stored} "
                f"but is being opened with encoder {fingerprint}"
            )
        return store

    @property
    def _file(self) -> Any:
        f = self.__dict__.get("_lazy_file")
        if f is None:
            f = self._open_checked()
            self.__dict__["_lazy_file"] = f
        return f

    def _open_checked(self) -> Any:
        if not self.path.exists():
            raise FileNotFoundError(f"store not found: {self.path}")
        try:
            f = _open_h5(self.path, "r")
        except OSError as err:
            raise StoreError(f"{self.path} is not a readable HDF5 file: {err}") from err
        problem = None
        if _WRITTEN in f:
            problem = "it is an uncommitted temporary file"
        elif "ids" not in f or "embeddings" not in f:
            problem = "it lacks the 'ids' or 'embeddings' dataset"
        elif f["embeddings"].ndim != 2 or f["ids"].shape != f["embeddings"].shape[:1]:
            problem = f"ids {f['ids'].shape} and embeddings {f['embeddings'].shape} do not match"
        elif "fingerprint" not in f.attrs:
            problem = "it has no 'fingerprint' attribute"
        if problem:
            f.close()
            raise StoreError(f"{self.path} is not an embedding store: {problem}")
        return f

    def close(self) -> None:
        """Close the file (it reopens on next use)."""
        f = self.__dict__.pop("_lazy_file", None)
        if f is not None:
            f.close()
        self.__dict__.pop("_lazy_ids", None)
        self.__dict__.pop("_lazy_embeddings", None)

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_lazy_")}

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r})"

    # -- contents ------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """The file's attributes as plain Python values."""
        return {k: _attr(v) for k, v in self._file.attrs.items()}

    @property
    def fingerprint(self) -> str:
        return str(_attr(self._file.attrs["fingerprint"]))

    @property
    def dim(self) -> int:
        return int(self._file["embeddings"].shape[1])

    def __len__(self) -> int:
        return int(self._file["embeddings"].shape[0])

    @property
    def dataset(self) -> Any:
        """The ``embeddings`` ``h5py.Dataset``, read lazily (slice it to read rows)."""
        return self._file["embeddings"]

    @property
    def ids(self) -> list[str]:
        """All ids, in row order."""
        ids = self.__dict__.get("_lazy_ids")
        if ids is None:
            ids = self._file["ids"].asstr()[:].tolist()
            self.__dict__["_lazy_ids"] = ids
        return ids

    @property
    def embeddings(self) -> np.ndarray:
        """All embeddings as one ``(n, dim)`` float32 array (read once, then kept)."""
        arr = self.__dict__.get("_lazy_embeddings")
        if arr is None:
            arr = self.dataset[:]
            self.__dict__["_lazy_embeddings"] = arr
        return arr

    @property
    def kept(self) -> np.ndarray | None:
        """The dedupe decision :func:`write_kept` recorded: one bool per row (False =
        removed), or None when none was recorded."""
        if KEPT not in self._file:
            return None
        return self._file[KEPT][:].astype(bool)

    @property
    def kept_attrs(self) -> dict[str, Any]:
        """The recorded decision's settings (``threshold``, ``keep``, ``removed``, ...);
        empty when none was recorded."""
        if KEPT not in self._file:
            return {}
        return {k: _attr(v) for k, v in self._file[KEPT].attrs.items()}

    def iter_blocks(self, rows: int = 10_000) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` with consecutive blocks of at most ``rows`` rows."""
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"rows must be a positive integer, got {rows!r}")
        data = self.dataset
        for start in range(0, len(self), rows):
            yield start, data[start : start + rows]

    # -- writing -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        n: int,
        dim: int,
        fingerprint: str,
        source: str = "",
        corpus_hash: str = "",
        chunk_rows: int = 1000,
        overwrite: bool = True,
    ) -> StoreWriter:
        """Start writing a store of ``n`` rows of ``dim`` floats to a temporary file, named
        for this process: its death makes the file stale for :func:`cleanup_stale`."""
        import h5py

        for name, value in (("n", n), ("dim", dim), ("chunk_rows", chunk_rows)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError(f"fingerprint must be a non-empty string, got {fingerprint!r}")
        final = check_writable(path, overwrite=overwrite)
        n, dim = int(n), int(dim)
        tmp = final.with_name(_tmp_name(final, os.getpid()))
        _check_space(final, n, dim)
        rows = min(int(chunk_rows), n)
        try:
            with h5py.File(tmp, "x") as f:
                f.create_dataset("ids", shape=(n,), dtype=h5py.string_dtype(), chunks=(rows,))
                f.create_dataset("embeddings", shape=(n, dim), dtype="f4", chunks=(rows, dim))
                f.create_dataset(_WRITTEN, shape=(n,), dtype="u1", fillvalue=0)
                f.attrs.update(
                    {
                        "format": FORMAT,
                        "format_version": FORMAT_VERSION,
                        "fingerprint": fingerprint,
                        "dim": dim,
                        "n": n,
                        "created": datetime.now(UTC).isoformat(timespec="seconds"),
                        "source": str(source),
                        "corpus_hash": str(corpus_hash),
                        _OVERWRITE: bool(overwrite),
                    }
                )
        except BaseException:
            _unlink(tmp)
            raise
        return StoreWriter(path=final, tmp_path=tmp, n=n, dim=dim)


def _check_space(final: Path, n: int, dim: int) -> None:
    """Refuse, before any row is written, a store its disk has no room for (float32 rows
    and their ids): HDF5 fails late and unclearly on a full disk."""
    need = n * dim * 4 + n * 16
    free = shutil.disk_usage(final.parent).free
    if free < need:
        raise DiskFullError(
            errno.ENOSPC,
            f"not enough space for the store {final}: {n:,} rows of {dim} floats need about "
            f"{need / 1e6:,.1f} MB, {final.parent} has {free / 1e6:,.1f} MB free; free space "
            "or choose another --output (nothing was written)",
        )
