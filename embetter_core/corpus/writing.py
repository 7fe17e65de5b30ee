"""The deduplicated corpus: the input file without the removed rows, in the input's format.

:func:`write_deduplicated` copies a corpus file (CSV / ``.csv.gz``, Parquet, JSONL, TXT) to a
new file without the rows a :class:`~embetter_core.dedupe.DuplicateReport` removed, keeping
every column; for an image folder it writes a text file of the kept image paths. Rows are
matched by id, computed as :func:`~embetter_core.corpus.read_corpus` does (the ``id_column``
as a string, else the row number). The file is written atomically.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "c.csv").write_text("key,text,stars\\nk1,hello,3\\nk2,hello!,5\\nk3,bye,1\\n")
>>> out = write_deduplicated(folder / "c.csv", ["k2"], folder / "dedup.csv", id_column="key")
>>> out.rows, out.removed
(2, 1)
>>> print(out.path.read_text().strip())
key,text,stars
k1,hello,3
k3,bye,1
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embetter_core.corpus.reading import TEXT_FORMATS, _as_id, _file_format, _list_images, _read_txt
from embetter_core.errors import CorpusError, OutputNotWritableError
from embetter_core.files import atomic_path


@dataclass(frozen=True)
class Deduplicated:
    """What :func:`write_deduplicated` wrote: the file, its rows, and the rows left out
    (``removed`` duplicates, ``skipped`` invalid rows)."""

    path: Path
    rows: int
    removed: int
    skipped: int


def input_format(corpus_path: str | os.PathLike[str]) -> str:
    """``"csv"``, ``"parquet"``, ``"jsonl"``, ``"txt"`` or ``"images"`` (a folder)."""
    p = Path(corpus_path)
    if p.is_dir():
        return "images"
    return _file_format(p, "corpus")[0]


def check_deduplicated_path(
    corpus_path: str | os.PathLike[str], out_path: str | os.PathLike[str]
) -> Path:
    """Check, before any work, that the deduplicated corpus of ``corpus_path`` can be
    written to ``out_path``: not the input itself, a name of the input's format (CSV, JSONL
    and TXT may add ``.gz``; an image folder gives a text file of paths), a writable folder.
    Returns ``out_path`` as an absolute path.

    >>> check_deduplicated_path("data.csv", "out/data.parquet")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    embetter_core.errors.CorpusError: ...keeps the input's format (csv): name it .csv or .csv.gz
    """
    source, out = Path(corpus_path), Path(out_path).expanduser().absolute()
    fmt = "images" if source.is_dir() else _name_format(source)[0]
    if out.exists() and source.exists() and out.samefile(source):
        raise CorpusError(f"deduplicated output {out} is the input corpus itself; choose another")
    if out.is_dir():
        raise OutputNotWritableError(f"deduplicated output {out} is a folder; expected a file")
    out_fmt, gz = _name_format(out)
    if fmt == "images":
        if out_fmt not in (None, "txt"):
            raise CorpusError(
                f"deduplicated output {out}: for an image folder it is a text file of the kept "
                "paths: name it .txt"
            )
    elif (out_fmt not in (None, fmt)) or (gz and fmt == "parquet"):
        names = {"parquet": ".parquet"}.get(fmt, f".{fmt} or .{fmt}.gz")
        raise CorpusError(
            f"deduplicated output {out}: the deduplicated corpus keeps the input's format "
            f"({fmt}): name it {names}"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputNotWritableError(
            f"cannot create the folder of the deduplicated output {out}: {err.strerror or err}"
        ) from err
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise OutputNotWritableError(f"the folder of the deduplicated output {out} is read-only")
    return out


def _name_format(p: Path) -> tuple[str | None, bool]:
    """The format a file name says (None: no known suffix), and whether it ends in .gz."""
    name = p.name.lower()
    gz = name.endswith(".gz")
    stem = name[:-3] if gz else name
    return TEXT_FORMATS.get(os.path.splitext(stem)[1]), gz


def write_deduplicated(
    corpus_path: str | os.PathLike[str],
    removed_ids: Iterable[Any],
    out_path: str | os.PathLike[str],
    *,
    id_column: str | None = None,
    skipped_rows: Sequence[int] = (),
) -> Deduplicated:
    """Write the corpus at ``corpus_path`` without the rows whose id is in ``removed_ids``.

    Every column and every other row is kept as it is, in the input's format: CSV (cells as
    read, gzipped when ``out_path`` ends in ``.gz``), Parquet (same schema), JSONL (the kept
    lines as they are), TXT (one line per row). For an image folder, a text file of the
    kept images' absolute paths, one per line. ``skipped_rows`` (row numbers from 0, e.g.
    ``[s.row for s in corpus.skipped]``) are left out too: the rows a run dropped as invalid
    were never compared. Each removed id must be a row of the file, else nothing is written.

    Args:
        corpus_path: the corpus file or image folder the report was made from.
        removed_ids: the ids to drop (``report.removed``).
        out_path: where to write (checked by :func:`check_deduplicated_path`).
        id_column: the corpus's id column (None: ids are row numbers).
        skipped_rows: further rows to leave out.
    """
    source = Path(corpus_path)
    out = check_deduplicated_path(source, out_path)
    removed = {str(i) for i in removed_ids}
    skip = {int(r) for r in skipped_rows}
    fmt = input_format(source)
    if id_column is not None and fmt in ("txt", "images"):
        raise CorpusError(f"{source}: a {fmt} corpus has no columns; pass id_column=None")
    gz = _name_format(out)[1]
    writer = {
        "csv": _csv,
        "parquet": _parquet,
        "jsonl": _jsonl,
        "txt": _txt,
        "images": _images,
    }[fmt]
    rows = writer(source, out, removed, skip, id_column, gz)
    return Deduplicated(path=out, rows=rows, removed=len(removed), skipped=len(skip))


def _row_ids(values: Sequence[Any] | None, n: int) -> list[str | None]:
    if values is None:
        return [str(i) for i in range(n)]
    return [_as_id(v) for v in values]


def _keep_mask(
    source: Path, ids: list[str | None], removed: set[str], skip: set[int]
) -> np.ndarray:
    """Rows to write; every removed id must match a row that is not skipped."""
    keep = np.ones(len(ids), dtype=bool)
    found: set[str] = set()
    for row, id_ in enumerate(ids):
        if row in skip:
            keep[row] = False
        elif id_ is not None and id_ in removed:
            keep[row] = False
            found.add(id_)
    missing = removed - found
    if missing:
        shown = ", ".join(repr(i) for i in sorted(missing)[:5])
        raise CorpusError(
            f"{source}: {len(missing)} removed id(s) are not rows of this corpus, e.g. {shown}: "
            "was the report made from another file, or another id column?"
        )
    return keep


def _csv(
    source: Path, out: Path, removed: set[str], skip: set[int], id_column: str | None, gz: bool
) -> int:
    import pandas as pd

    # the reading rules of embetter_core.corpus: every cell the string it is
    frame = pd.read_csv(source, dtype=str, keep_default_na=False, na_filter=False, index_col=False)
    values = None if id_column is None else _column(source, frame, id_column)
    keep = _keep_mask(source, _row_ids(values, len(frame)), removed, skip)
    with atomic_path(out) as tmp:
        frame[keep].to_csv(
            tmp, index=False, compression={"method": "gzip", "mtime": 0} if gz else None
        )
    return int(keep.sum())


def _column(source: Path, frame: Any, column: str) -> list[Any]:
    if column not in frame.columns:
        raise CorpusError(
            f"{source}: column {column!r} not found; the file has columns: "
            + ", ".join(repr(str(c)) for c in frame.columns)
        )
    return frame[column].tolist()


def _parquet(
    source: Path, out: Path, removed: set[str], skip: set[int], id_column: str | None, gz: bool
) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    values = None
    if id_column is not None:
        if id_column not in table.column_names:
            raise CorpusError(
                f"{source}: column {id_column!r} not found; the file has columns: "
                + ", ".join(repr(c) for c in table.column_names)
            )
        values = table.column(id_column).to_pylist()
    keep = _keep_mask(source, _row_ids(values, table.num_rows), removed, skip)
    with atomic_path(out) as tmp:
        pq.write_table(table.filter(pa.array(keep)), tmp)
    return int(keep.sum())


def _open_out(tmp: Path, gz: bool) -> Any:
    if gz:  # mtime=0: the same rows give the same bytes
        return io.TextIOWrapper(gzip.GzipFile(tmp, "wb", mtime=0), encoding="utf-8", newline="")
    return open(tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115


def _jsonl(
    source: Path, out: Path, removed: set[str], skip: set[int], id_column: str | None, gz: bool
) -> int:
    gzipped_in = source.name.lower().endswith(".gz")
    opener = gzip.open if gzipped_in else open
    with opener(source, "rt", encoding="utf-8-sig", newline=None) as fh:
        lines = [line for line in fh.read().split("\n") if line.strip()]
    values = None
    if id_column is not None:
        values = []
        for number, line in enumerate(lines):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{source}: record {number} is not valid JSON: {err}") from err
            values.append(record.get(id_column) if isinstance(record, dict) else None)
    keep = _keep_mask(source, _row_ids(values, len(lines)), removed, skip)
    with atomic_path(out) as tmp, _open_out(tmp, gz) as fh:
        for line, flag in zip(lines, keep.tolist(), strict=True):
            if flag:
                fh.write(line.rstrip("\r") + "\n")
    return int(keep.sum())


def _txt(
    source: Path, out: Path, removed: set[str], skip: set[int], id_column: str | None, gz: bool
) -> int:
    lines = _read_txt(source, source.name.lower().endswith(".gz"))
    keep = _keep_mask(source, _row_ids(None, len(lines)), removed, skip)
    with atomic_path(out) as tmp, _open_out(tmp, gz) as fh:
        for line, flag in zip(lines, keep.tolist(), strict=True):
            if flag:
                fh.write(line + "\n")
    return int(keep.sum())


def _images(
    source: Path, out: Path, removed: set[str], skip: set[int], id_column: str | None, gz: bool
) -> int:
    files, _ = _list_images(source)
    ids = [f.relative_to(source).as_posix() for f in files]
    keep = _keep_mask(source, list(ids), removed, skip)
    with atomic_path(out) as tmp, _open_out(tmp, gz) as fh:
        for file, flag in zip(files, keep.tolist(), strict=True):
            if flag:
                fh.write(str(file.absolute()) + "\n")
    return int(keep.sum())


__all__ = ["Deduplicated", "check_deduplicated_path", "input_format", "write_deduplicated"]
