"""Writing a store atomically: :meth:`EmbeddingStore.create` makes a temporary file beside
the target, named ``.<name>.<host>.<pid>.<token>.tmp``; rows are written into it by
:func:`write_rows` (from any thread or process, one writer at a time through a ``.lock``
file beside it), and :func:`commit` checks that every row was written and renames it into place with
``os.replace``. The final path never holds a partial file. :func:`cleanup_stale` removes the
temporary files that killed runs leave behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embetter_core.errors import IncompleteStoreError, OutputNotWritableError, StoreError
from embetter_core.files import named_if_disk_full, replace_durably

FORMAT = "embetter-core/embedding-store"


FORMAT_VERSION = 1


_WRITTEN = "written"  # bookkeeping dataset of the temporary file, dropped by commit()


_OVERWRITE = "_overwrite"  # bookkeeping attribute: may commit() replace an existing file?


_OPEN_RETRY_S = 60.0  # how long to retry an HDF5 file lock held by another process


#: Scattered rows spanning at most this many rows per row written (and _SPAN_BYTES) are
#: written as one read-modify-write of their span: h5py's point selections cost about
#: 20 us per row of a (n, 256) float32 dataset, reading and writing the span far less.
_SPAN_FACTOR = 32


_SPAN_BYTES = 64 << 20


KEPT = "kept"  # the dataset write_kept adds: one bool per row


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _tmp_name(final: Path, pid: int) -> str:
    return f".{final.name}.{_host_tag()}.{pid}.{secrets.token_hex(4)}.tmp"


def _lock_path(tmp_path: Path) -> Path:
    return tmp_path.with_name(tmp_path.name + ".lock")


def check_writable(path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Check that the store ``path`` can be written; return it as an absolute ``Path``.

    Creates missing parent folders, then writes and removes a probe file there, so a
    read-only folder fails here, before any work, with an error naming it.

    >>> import tempfile, pathlib
    >>> check_writable(pathlib.Path(tempfile.mkdtemp()) / "sub" / "out.h5").name
    'out.h5'
    """
    final = Path(path).expanduser().absolute()
    if final.is_dir():
        raise OutputNotWritableError(f"output {final} is a folder; expected a file path (.h5)")
    if final.exists() and not overwrite:
        raise FileExistsError(f"output {final} exists; pass overwrite=True to replace it")
    folder = final.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputNotWritableError(
            f"cannot create output folder {folder}: {err.strerror or err}"
        ) from err
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputNotWritableError(
            f"output folder {folder} is not writable: {err.strerror or err}"
        ) from err
    return final


def cleanup_stale(path: str | os.PathLike[str], *, max_age: float | None = None) -> list[Path]:
    """Remove temporary files that earlier, killed writers of ``path`` left beside it.

    The rule: a file ``.<name>.<host>.<pid>.<token>.tmp`` (and its ``.lock``) is stale when

    1. it was made on this host and its owner process ``pid`` is gone (or is a zombie, or
       the pid now belongs to a process started after the file was last written), or
    2. ``max_age`` seconds are given and the file was not modified for that long (use this
       for files made on other hosts that share the folder, or with unreadable names).

    Temporary files of live processes are left alone, so a run never deletes the file of
    another run that is still writing. Returns the removed paths.

    >>> import tempfile, pathlib
    >>> cleanup_stale(pathlib.Path(tempfile.mkdtemp()) / "out.h5")
    []
    """
    final = Path(path).expanduser().absolute()
    folder = final.parent
    if not folder.is_dir():
        return []
    pattern = re.compile(
        re.escape(f".{final.name}.") + r"(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp"
    )
    prefix, now, host = f".{final.name}.", time.time(), _host_tag()
    removed = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if not name.startswith(prefix):
            continue
        if name.endswith(".tmp.lock"):
            if not entry.with_name(name[: -len(".lock")]).exists() and _older(entry, 60, now):
                _unlink(entry)  # an orphaned lock file (its tmp is gone) past a minute
            continue
        if not name.endswith(".tmp"):
            continue
        try:
            mtime = entry.stat().st_mtime
        except FileNotFoundError:
            continue
        match = pattern.fullmatch(name)
        stale = bool(match and match["host"] == host and not _owner_alive(int(match["pid"]), mtime))
        if not stale and max_age is not None:
            stale = now - mtime > max_age
        if stale:
            _unlink(entry)
            _unlink(_lock_path(entry))
            removed.append(entry)
    return removed


def _older(path: Path, seconds: float, now: float) -> bool:
    try:
        return now - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _owner_alive(pid: int, mtime: float) -> bool:
    """Is ``pid`` a live process that may have written a file last modified at ``mtime``?"""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:
        return True  # cannot tell (unusual platform): keep the file
    stat = Path(f"/proc/{pid}/stat")
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        btime = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, IndexError, StopIteration, ValueError):
        return True  # no /proc (not Linux): the pid exists, so assume it is the owner
    if fields[0] == "Z":
        return False  # killed, not yet reaped
    started = btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return started <= mtime + 2.0  # a process younger than the file's last write is not it


@contextlib.contextmanager
def _locked(tmp_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``tmp_path``'s ``.lock`` file (threads and processes)."""
    try:
        import fcntl
    except ImportError:  # Windows: rely on HDF5's own file lock (retried in _open_h5)
        yield
        return
    with open(_lock_path(tmp_path), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_h5(path: Path, mode: str) -> Any:
    """``h5py.File(path, mode)``, retrying while another process holds HDF5's file lock."""
    import h5py

    deadline = time.monotonic() + _OPEN_RETRY_S
    while True:
        try:
            return h5py.File(path, mode)
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def _write_lock(tmp: Path) -> Iterator[Any]:
    """The temporary store, locked and open for writing (closed inside the lock, so that an
    error while closing, such as a full disk, is raised here)."""
    with _locked(tmp), contextlib.closing(_open_tmp(tmp)) as f:
        yield f


def _require_tmp(tmp_path: Path) -> None:
    if not tmp_path.exists():
        raise FileNotFoundError(
            f"temporary store {tmp_path} not found: it was committed, aborted or removed"
        )


def _open_tmp(tmp_path: Path) -> Any:
    _require_tmp(tmp_path)
    f = _open_h5(tmp_path, "r+")
    if _WRITTEN not in f:
        f.close()
        raise StoreError(f"{tmp_path} is not an open temporary store (no row bookkeeping)")
    return f


def _check_ids(ids: Sequence[Any]) -> list[str]:
    if isinstance(ids, str):
        raise ValueError("ids must be a sequence of strings, got a single string")
    values = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    for pos, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"id at position {pos} is {type(value).__name__}; expected str")
    return values


def _check_embeddings(embeddings: Any, dim: int) -> np.ndarray:
    arr = np.asarray(embeddings)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (rows, {dim}), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise ValueError(f"embeddings have dim {arr.shape[1]}, the store expects dim {dim}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"embeddings must be floating point, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"embeddings hold NaN or infinite values in {rows.size} row(s), first at "
            f"offset {rows[0]} of this block"
        )
    return arr


def _ranges(rows: np.ndarray) -> list[tuple[int, int]]:
    """Sorted row numbers as inclusive ``(first, last)`` runs."""
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1)
    starts = np.concatenate([[rows[0]], rows[breaks + 1]])
    ends = np.concatenate([rows[breaks], [rows[-1]]])
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def _show_ranges(runs: list[tuple[int, int]], limit: int = 10) -> str:
    shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit])
    return shown + (f", ... ({len(runs) - limit} more ranges)" if len(runs) > limit else "")


def _row_selection(rows: Any, count: int, n: int) -> tuple[slice | np.ndarray, np.ndarray | None]:
    """``rows`` (a first row, or row numbers) as an h5py selection of ``count`` rows, and the
    order that puts the given ids and vectors in increasing row order (None: as given)."""
    if isinstance(rows, int | np.integer) and not isinstance(rows, bool):
        start = int(rows)
        if start < 0:
            raise ValueError(f"start must be a non-negative integer, got {rows!r}")
        if start + count > n:
            raise ValueError(
                f"rows {start}-{start + count - 1} are out of bounds: the store has {n} rows "
                f"(0-{n - 1})"
            )
        return slice(start, start + count), None
    numbers = np.asarray(rows)
    if numbers.ndim != 1 or not (numbers.size == 0 or np.issubdtype(numbers.dtype, np.integer)):
        raise ValueError(
            f"rows must be a first row number or a 1-D sequence of row numbers, got {rows!r}"
        )
    if numbers.size != count:
        raise ValueError(f"{numbers.size} row numbers but {count} ids; expected equal")
    order = np.argsort(numbers, kind="stable")
    picked = numbers[order].astype(np.int64)
    if picked.size and (picked[0] < 0 or picked[-1] >= n):
        bad = picked[0] if picked[0] < 0 else picked[-1]
        raise ValueError(f"row {bad} is out of bounds: the store has {n} rows (0-{n - 1})")
    repeated = picked[1:][np.diff(picked) == 0]
    if repeated.size:
        twice = repeated[0]
        raise ValueError(f"row {twice} is given more than once")
    if picked.size and picked[-1] - picked[0] + 1 == picked.size:
        return slice(int(picked[0]), int(picked[-1]) + 1), order
    return picked, order


def write_rows(
    tmp_path: str | os.PathLike[str],
    rows: int | Sequence[int] | np.ndarray,
    ids: Sequence[str],
    embeddings: Any,
) -> None:
    """Write rows of the temporary store ``tmp_path``: ``[rows, rows + len(ids))`` when
    ``rows`` is a first row number, else the rows it lists (in any order, each once).

    Opens the file, writes, marks the rows written and closes it, so separate threads and
    processes may call it (one at a time, through a lock). Writing rows again with the same
    ids (a retried task) is allowed; writing them with other ids raises.

    >>> from embetter_core.store import EmbeddingStore
    >>> import tempfile, pathlib, numpy as np
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "v.h5"
    >>> tmp = EmbeddingStore.create(target, n=3, dim=2, fingerprint="demo").tmp_path
    >>> write_rows(tmp, 0, ["a"], np.zeros((1, 2), dtype=np.float32))
    >>> write_rows(tmp, [2, 1], ["c", "b"], np.array([[2.0, 2.0], [1.0, 1.0]]))
    >>> commit(tmp, target) == target, tmp.exists()
    (True, False)
    >>> with EmbeddingStore.open(target) as store:
    ...     store.embeddings[:, 0].tolist(), store.ids
    ([0.0, 1.0, 2.0], ['a', 'b', 'c'])
    """
    tmp = Path(tmp_path)
    ids = _check_ids(ids)
    _require_tmp(tmp)  # before locking, so a wrong path leaves no lock file behind
    kept = "a store already at the final path is untouched"
    with named_if_disk_full(tmp, "the store's temporary file", kept), _write_lock(tmp) as f:
        n, dim = f["embeddings"].shape
        arr = _check_embeddings(embeddings, dim)
        if len(ids) != arr.shape[0]:
            raise ValueError(f"{len(ids)} ids but {arr.shape[0]} embedding rows; expected equal")
        where, order = _row_selection(rows, len(ids), n)
        if not ids:
            return
        if order is not None:
            ids, arr = [ids[i] for i in order], arr[order]
        done = _read_rows(f[_WRITTEN], where).astype(bool)
        if done.any():
            old = f["ids"].asstr()[where]
            clash = [i for i in np.flatnonzero(done) if old[i] != ids[i]]
            if clash:
                first = clash[0]
                row = where.start + first if isinstance(where, slice) else where[first]
                raise StoreError(
                    f"{len(clash)} row(s) were already written with other ids, first row "
                    f"{row}: stored {old[first]!r}, given {ids[first]!r}"
                )
        f["ids"][where] = np.array(ids, dtype=object)
        _write_rows(f["embeddings"], where, arr)
        f[_WRITTEN][where] = 1


def _span(dataset: Any, where: slice | np.ndarray) -> slice | None:
    """The slice of rows to read-modify-write instead of the point selection ``where``
    (sorted row numbers), or None: a slice, or a span too sparse or too large, is used as
    it is."""
    if isinstance(where, slice) or where.size == 0:
        return None
    lo, hi = int(where[0]), int(where[-1]) + 1
    row_bytes = dataset.dtype.itemsize * int(np.prod(dataset.shape[1:], dtype=np.int64))
    if hi - lo > _SPAN_FACTOR * where.size or (hi - lo) * row_bytes > _SPAN_BYTES:
        return None
    return slice(lo, hi)


def _read_rows(dataset: Any, where: slice | np.ndarray) -> np.ndarray:
    """``dataset[where]``, read through the rows' span when that is cheaper."""
    span = _span(dataset, where)
    return dataset[where] if span is None else dataset[span][where - span.start]


def _write_rows(dataset: Any, where: slice | np.ndarray, values: np.ndarray) -> None:
    """``dataset[where] = values``; scattered rows close together are written as one
    read-modify-write of their span (the caller holds the store's lock)."""
    span = _span(dataset, where)
    if span is None:
        dataset[where] = values
        return
    block = dataset[span]
    block[where - span.start] = values
    dataset[span] = block


def commit(tmp_path: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Check the temporary store is complete and atomically rename it to ``path``.

    Raises :class:`IncompleteStoreError` naming the row ranges never written (the temporary
    file is kept), or :class:`StoreError` when ids repeat. Returns the final path.

    >>> from embetter_core.store import EmbeddingStore
    >>> import tempfile, pathlib, numpy as np
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "v.h5"
    >>> writer = EmbeddingStore.create(target, n=5, dim=2, fingerprint="demo")
    >>> writer.write(1, ["b", "c"], np.ones((2, 2)))
    >>> commit(writer.tmp_path, target)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    embetter_core.errors.IncompleteStoreError: ...3 of 5 rows...: rows 0, 3-4 (inclusive)...
    >>> writer.abort()
    """
    tmp, final = Path(tmp_path).absolute(), Path(path).expanduser().absolute()
    if tmp.parent.resolve() != final.parent.resolve() or not tmp.name.startswith(f".{final.name}."):
        raise ValueError(f"{tmp} is not a temporary file of {final} (expected beside it)")
    _require_tmp(tmp)
    with _locked(tmp):
        with contextlib.closing(_open_tmp(tmp)) as f:
            n = f["embeddings"].shape[0]
            missing = _ranges(np.flatnonzero(f[_WRITTEN][:] == 0))
            if missing:
                count = sum(b - a + 1 for a, b in missing)
                raise IncompleteStoreError(
                    f"cannot commit {final}: {count} of {n} rows were never written: rows "
                    f"{_show_ranges(missing)} (inclusive); the temporary file {tmp} is kept"
                )
            ids = f["ids"].asstr()[:]
            _check_unique_ids(ids, final)
            overwrite = bool(f.attrs.get(_OVERWRITE, True))
            del f[_WRITTEN]
            del f.attrs[_OVERWRITE]
            f.flush()
        if not overwrite and final.exists():
            raise FileExistsError(f"cannot commit: {final} exists and overwrite=False")
        replace_durably(tmp, final)
    _unlink(_lock_path(tmp))
    return final


def _check_unique_ids(ids: np.ndarray, final: Path) -> None:
    uniq, counts = np.unique(ids.astype(str), return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        first = str(dup[0])
        rows = np.flatnonzero(ids == first)
        raise StoreError(
            f"cannot commit {final}: {dup.size} id(s) occur more than once, e.g. {first!r} "
            f"at rows {', '.join(map(str, rows[:5]))}"
        )


@dataclass
class StoreWriter:
    """A store being written: rows go to ``tmp_path``, ``commit()`` moves it to ``path``.

    Plain data (two paths and the shape), so it pickles and can be handed to tasks. As a
    context manager it commits on a clean exit and aborts on an exception.
    """

    path: Path
    tmp_path: Path
    n: int
    dim: int

    def write(
        self, rows: int | Sequence[int] | np.ndarray, ids: Sequence[str], embeddings: Any
    ) -> None:
        """Write rows ``[rows, rows + len(ids))``, or the row numbers ``rows`` lists; see
        :func:`write_rows`."""
        write_rows(self.tmp_path, rows, ids, embeddings)

    def commit(self) -> Path:
        """Check every row was written and rename the file into place; see :func:`commit`."""
        return commit(self.tmp_path, self.path)

    def abort(self) -> None:
        """Delete the temporary file (and its lock); the final path is left untouched."""
        _unlink(self.tmp_path)
        _unlink(_lock_path(self.tmp_path))

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        elif self.tmp_path.exists():
            self.commit()
