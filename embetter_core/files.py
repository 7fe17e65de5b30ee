"""Small file utilities every layer shares: image suffixes, file hashing, atomic writes,
and the check that a run's outputs never overwrite its inputs.

A file this package writes is never seen half-written at its final path: it is written to a
temporary file beside the target, flushed to disk, and renamed into place.

>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "out" / "note.txt"
>>> write_atomic(target, "hello").read_text()
'hello'
>>> len(file_sha256(target))
64
>>> is_image_name("cat.JPG"), is_image_name("cat.txt")
(True, False)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from embetter_core.errors import DiskFullError, OutputClashError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_HASH_BLOCK = 1 << 20


def is_image_name(name: str | os.PathLike[str]) -> bool:
    """True when a file name ends in one of :data:`IMAGE_SUFFIXES` (any case)."""
    return os.fspath(name).lower().endswith(IMAGE_SUFFIXES)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file or folder to disk; a no-op where the platform cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # folders cannot be fsynced on some platforms
    finally:
        os.close(fd)


def replace_durably(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Flush ``tmp``, rename it over ``final`` in one step, and flush the folder."""
    final = Path(final)
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)
    return final


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    The caller writes the temporary path however it likes (a library's ``save``, an open
    file). If the block raises, the temporary file is removed and ``path`` is untouched.
    Parent folders are created.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would honour umask
    try:
        yield tmp
        replace_durably(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write text (UTF-8, newlines as given) or bytes to ``path`` atomically; returns it."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                handle.write(data)
    return Path(path)


_NEEDS_QUOTES = re.compile(r'[",\n\r]')


def csv_field(value: object) -> str:
    """One CSV cell as :func:`write_csv_atomic` writes it: ``None`` as empty, other values
    as ``str()``; a cell holding a comma, a double quote, ``\\n`` or ``\\r`` is quoted, its
    quotes doubled (what the ``csv`` module writes, except that a lone ``\\r`` is quoted
    too, so every CSV reader reads the row back whole).

    >>> csv_field("plain"), csv_field('say "hi", twice'), csv_field(None), csv_field(0.5)
    ('plain', '"say ""hi"", twice"', '', '0.5')
    """
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if _NEEDS_QUOTES.search(text) is None:
        return text
    return '"' + text.replace('"', '""') + '"'


def csv_line(cells: Sequence[object]) -> str:
    """One CSV row, ``\\n``-terminated (a row of one empty cell is ``""``, as in ``csv``).

    >>> csv_line(["a", "b,c", 1])
    'a,"b,c",1\\n'
    """
    line = ",".join(map(csv_field, cells))
    return ('""' if not line and len(cells) == 1 else line) + "\n"


def write_csv_lines_atomic(
    path: str | os.PathLike[str], header: Sequence[object], lines: Iterable[bytes]
) -> Path:
    """Write ``header`` and ready-made CSV ``lines`` (UTF-8 bytes, each ``\\n``-terminated,
    cells made with :func:`csv_field`; one item may hold several lines) to ``path``
    atomically, streaming in batches. Returns the path.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> write_csv_lines_atomic(out, ["a"], iter([b"1\\n", b"2\\n3\\n"])).read_text()
    'a\\n1\\n2\\n3\\n'
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(csv_line(header).encode("utf-8"))
        batch: list[bytes] = []
        size = 0
        for line in lines:
            batch.append(line)
            size += len(line)
            if size >= 1 << 20:
                handle.write(b"".join(batch))
                batch.clear()
                size = 0
        handle.write(b"".join(batch))
    return Path(path)


def write_csv_atomic(
    path: str | os.PathLike[str], header: Sequence[object], rows: Iterable[Sequence[object]]
) -> Path:
    """Write ``header`` and ``rows`` as CSV (UTF-8, ``\\n`` line ends, cells as
    :func:`csv_field` writes them) to ``path`` atomically, streaming: the rows may be a
    generator, never held whole. Returns the path.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> print(write_csv_atomic(out, ["a", "b"], ([i, i * i] for i in range(3))).read_text())
    a,b
    0,0
    1,1
    2,4
    <BLANKLINE>
    """
    return write_csv_lines_atomic(path, header, (csv_line(row).encode("utf-8") for row in rows))


def check_outputs_apart(
    inputs: Mapping[str, str | os.PathLike[str] | None],
    outputs: Mapping[str, str | os.PathLike[str] | None],
) -> None:
    """Refuse, before any work, an output that would overwrite an input or another output.

    ``inputs`` and ``outputs`` map what the user calls each path (a flag such as
    ``"--report-dir"``) to the path; ``None`` paths are left out. An output clashes with an
    input when both are the same file (after ``~``, ``..`` and symbolic links; an existing
    output also by inode, so hard links and case-insensitive names count), and with an input
    folder (an image corpus) when it is the folder or an image file inside it, which a rerun
    would read as part of the corpus. Raises :class:`OutputClashError` naming both paths.

    >>> check_outputs_apart({"corpus": "data/pairs.csv"}, {"--output": "out/data.h5"})
    >>> check_outputs_apart({"corpus": "data/a.csv"}, {"--report": "data/./a.csv"})
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    embetter_core.errors.OutputClashError: --report would overwrite the input corpus: both are ...
    """
    sources = {label: _resolved(path) for label, path in inputs.items() if path is not None}
    seen: dict[Path, str] = {}
    for label, path in outputs.items():
        if path is None:
            continue
        target = _resolved(path)
        for source_label, source in sources.items():
            if _same_file(target, source):
                what = "input folder" if source.is_dir() else "input"
                both = f"both are {target}" if target == source else f"{target} is {source}"
                raise OutputClashError(f"{label} would overwrite the {what} {source_label}: {both}")
            if source.is_dir() and _is_image_inside(target, source):
                raise OutputClashError(
                    f"{label} would write the image {target} into the folder of the input "
                    f"{source_label}, {source}: a rerun would read it as part of the corpus"
                )
        other = next((seen[p] for p in seen if _same_file(target, p)), None)
        if other is not None:
            raise OutputClashError(
                f"{label} and {other} are the same file, {target}: one would overwrite the other"
            )
        seen[target] = label


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().resolve()


def _same_file(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _is_image_inside(path: Path, folder: Path) -> bool:
    return is_image_name(path) and folder in path.parents


# A cell starting with one of these is read as a formula by Excel, LibreOffice and Google
# Sheets ("=HYPERLINK(...)", "+cmd|...", "@SUM(...)"); tab and carriage return too (OWASP).
SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """``value`` as a CSV cell that a spreadsheet shows as text, never runs as a formula: a
    string starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a leading
    ``'`` (which spreadsheets hide); anything else is returned as it is, numbers included.

    The ``'`` is part of the cell for every other CSV reader, so apply it only to files meant
    for spreadsheets, and only to text columns (ids, texts).

    >>> spreadsheet_safe("=HYPERLINK(\\"http://x\\")"), spreadsheet_safe("-1"), spreadsheet_safe(-1)
    ('\\'=HYPERLINK("http://x")', "'-1", -1)
    >>> spreadsheet_safe("a=b"), spreadsheet_safe("")
    ('a=b', '')
    """
    if isinstance(value, str) and value.startswith(SPREADSHEET_TRIGGERS):
        return "'" + value
    return value


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the disk or quota is full: an ``OSError`` with ``ENOSPC`` /
    ``EDQUOT`` / ``EFBIG``, SQLite's ``SQLITE_FULL``, or HDF5's wrapped ``errno = 28``.

    >>> is_disk_full(OSError(errno.ENOSPC, "No space left on device")), is_disk_full(OSError())
    (True, False)
    """
    if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
        return True
    code = getattr(err, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == 13:  # SQLITE_FULL
        return True
    text = str(err)
    return f"errno = {errno.ENOSPC}," in text or "database or disk is full" in text


@contextlib.contextmanager
def named_if_disk_full(path: str | os.PathLike[str], what: str, kept: str) -> Iterator[None]:
    """Turn a full disk while writing ``path`` into :class:`DiskFullError` naming ``what``
    (e.g. ``"the store (--output)"``), the file and ``kept`` (what was not lost); every
    other error passes unchanged.

    >>> with named_if_disk_full("/data/e.h5", "the store", "the old store is kept"):
    ...     raise OSError(errno.ENOSPC, "No space left on device")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    embetter_core.errors.DiskFullError: [Errno 28] no space ... the store /data/e.h5: ...
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if not is_disk_full(err):
            raise
        raise DiskFullError(
            errno.ENOSPC,
            f"no space left on device writing {what} {path}: free space or choose another "
            f"place; {kept}",
        ) from err
