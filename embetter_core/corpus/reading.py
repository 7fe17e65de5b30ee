"""Read a corpus file or an image folder into a validated :class:`Corpus`.

Supported inputs: CSV (``.csv``, ``.csv.gz``), Parquet (``.parquet``, ``.pq``), JSON lines
(``.jsonl``, ``.ndjson``, also ``.gz``), plain text (``.txt``, ``.txt.gz``: one text per line)
and a folder of images (jpg, jpeg, png, webp, bmp, gif, tif, tiff; searched recursively).

Rows are numbered from 0 in file order (a CSV header and blank CSV or JSONL lines are not
rows; in a ``.txt`` file every line is one, so a blank line is an empty text). Ids come from
``id_column`` (as ``str``) or, without one, from the row number. Invalid rows raise one
``ValueError`` naming them, or with ``skip_invalid=True`` are dropped and listed in
``Corpus.skipped``; the first row of a duplicated id is the one kept. Invalid are: a missing
or empty text (also one of only whitespace or invisible characters such as NUL, U+200B,
U+FEFF: every encoder sees it as ``""``), a text or id that cannot be written as UTF-8 (a lone
surrogate, which JSON allows), a missing or duplicate id, and an image the encoder could not
read: undecodable, cut short, or above ``embetter_core.encoders.vision.MAX_IMAGE_PIXELS``.

:func:`read_table` gives other callers (pair files, for one) the same table readers: the
named columns of a CSV / Parquet / JSONL file, unvalidated.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embetter_core.errors import CorpusError, MissingColumnError
from embetter_core.files import IMAGE_SUFFIXES, file_sha256

TEXT_FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "txt",
}
GZIP_FORMATS = {"csv", "jsonl", "txt"}
SHOW_ROWS = 5  # how many bad rows an error message lists before "... and N more"


@dataclass(frozen=True)
class SkippedRow:
    """One input row left out of a corpus: its 0-based row number, id (if any) and why."""

    row: int
    id: str | None
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} (id {self.id!r}): {self.reason}"


@dataclass
class Corpus:
    """Validated, ordered input: unique string ids and their items.

    ``items`` are texts, or absolute image file paths (as ``str``) when ``kind == "image"``.
    ``skipped`` lists the rows that ``skip_invalid=True`` dropped.

    >>> corpus = Corpus(ids=["a", "b", "c"], items=["x", "y", "z"])
    >>> len(corpus), corpus.chunks(2)
    (3, [range(0, 2), range(2, 3)])
    >>> corpus.texts_by_id()["b"]
    'y'
    """

    ids: list[str]
    items: list[str]
    kind: Literal["text", "image"] = "text"
    source: str = ""
    skipped: list[SkippedRow] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.items):
            raise ValueError(f"{len(self.ids)} ids but {len(self.items)} items; expected equal")
        if self.kind not in ("text", "image"):
            raise ValueError(f"kind must be 'text' or 'image', got {self.kind!r}")

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, chunk_size: int) -> list[range]:
        """Consecutive row ranges of at most ``chunk_size`` rows covering the corpus."""
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        n = len(self)
        return [range(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]

    def encode_chunks(self, chunk_size: int, window: int = 16) -> list[np.ndarray]:
        """Row numbers of each chunk, in the order that encodes fastest.

        sentence-transformers sorts texts by length within one ``encode`` call, so batches
        pad little; cutting the corpus into consecutive chunks would mix lengths again.
        Here, within each window of ``window`` chunks, rows are sorted by text length
        (longest first, like sentence-transformers) before being cut into chunks. Each chunk
        holds its row numbers in increasing order; together they cover every row once.
        Windows keep a chunk's rows near each other in the store. Image corpora keep
        consecutive chunks.

        >>> corpus = Corpus.from_texts(["a", "bbbb", "cc", "ddd", "e"])
        >>> [c.tolist() for c in corpus.encode_chunks(2)]
        [[1, 3], [0, 2], [4]]
        >>> [c.tolist() for c in corpus.encode_chunks(2, window=1)]
        [[0, 1], [2, 3], [4]]
        """
        spans = self.chunks(chunk_size)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        if self.kind == "image":
            return [np.arange(r.start, r.stop) for r in spans]
        lengths = np.fromiter(map(len, self.items), dtype=np.int64, count=len(self))
        chunks: list[np.ndarray] = []
        for first in range(0, len(spans), window):
            group = spans[first : first + window]
            rows = np.arange(group[0].start, group[-1].stop)
            by_length = rows[np.argsort(-lengths[rows], kind="stable")]
            chunks.extend(
                np.sort(by_length[at : at + chunk_size])
                for at in range(0, by_length.size, chunk_size)
            )
        return chunks

    def corpus_hash(self) -> str:
        """SHA-256 (hex) of the kind, ids and items, in order.

        For text corpora it covers the texts; for image corpora it covers each file's id
        (relative path) and its bytes, read from disk (not paths, sizes or mtimes).

        >>> Corpus(["0"], ["hi"]).corpus_hash() == Corpus(["0"], ["hi"]).corpus_hash()
        True
        >>> Corpus(["0"], ["hi"]).corpus_hash() == Corpus(["1"], ["hi"]).corpus_hash()
        False
        """
        digest = hashlib.sha256(f"embetter-core corpus v1\0{self.kind}\0{len(self)}\0".encode())
        for id_, item in zip(self.ids, self.items, strict=True):
            _update_field(digest, id_.encode("utf-8", "surrogatepass"))
            if self.kind == "image":
                _update_field(digest, bytes.fromhex(file_sha256(item)))
            else:
                _update_field(digest, item.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def texts_by_id(self) -> dict[str, str]:
        """``{id: item}`` (texts, or image paths for an image corpus)."""
        return dict(zip(self.ids, self.items, strict=True))

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[Any],
        ids: Sequence[Any] | None = None,
        *,
        source: str = "<texts>",
        skip_invalid: bool = False,
    ) -> Corpus:
        """A text corpus from in-memory texts, validated like :func:`read_corpus`.

        >>> Corpus.from_texts(["a", "", "b"], skip_invalid=True).ids
        ['0', '2']
        """
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts; expected equal")
        return _validated(list(ids) if ids is not None else None, list(texts), source, skip_invalid)


def read_corpus(
    path: str | os.PathLike[str],
    text_column: str = "text",
    id_column: str | None = None,
    skip_invalid: bool = False,
    *,
    check_images: bool = True,
) -> Corpus:
    """Read ``path`` (a corpus file or an image folder) into a validated :class:`Corpus`.

    Args:
        path: a ``.csv``/``.parquet``/``.jsonl``/``.ndjson``/``.txt`` file (CSV, JSONL and
            TXT may be gzipped, ``.gz``), or a folder searched recursively for images.
        text_column: the text column (CSV, Parquet, JSONL).
        id_column: the id column; ``None`` numbers the rows ``"0"``, ``"1"``, ...
        skip_invalid: drop invalid rows and list them in ``Corpus.skipped`` instead of
            raising ``ValueError``.
        check_images: decode each image as the encoder will (``vision.check_image``: size
            limit, ``verify()``, a full decode, on a few threads); a file that fails is an
            invalid row. Hidden files and folders (names starting with ``.``) are ignored.

    In CSV files every cell is read as a string: an empty cell is an empty (invalid) text,
    while ``NA`` or ``null`` are ordinary texts.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "c.csv").write_text("key,text\\nk1,hello\\nk2,NA\\nk3,\\n")
    >>> corpus = read_corpus(folder / "c.csv", id_column="key", skip_invalid=True)
    >>> corpus.ids, corpus.items
    (['k1', 'k2'], ['hello', 'NA'])
    >>> print(corpus.skipped[0])
    row 2 (id 'k3'): empty text
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"corpus not found: {p}")
    if corpus_kind(p) == "image":
        if id_column is not None:
            raise CorpusError(f"{p}: an image folder has no columns; its ids are the file paths")
        return _read_image_folder(p, skip_invalid, check_images)
    fmt, gzipped = _file_format(p, "corpus")
    if fmt == "txt":
        if id_column is not None:
            raise CorpusError(f"{p}: a .txt corpus has no columns; its ids are the line numbers")
        texts = _read_txt(p, gzipped)
        return _validated(None, texts, str(p), skip_invalid)
    wanted = [text_column] if id_column is None else [text_column, id_column]
    columns = _read_columns(p, fmt, gzipped, wanted)
    ids = None if id_column is None else columns[id_column]
    return _validated(ids, columns[text_column], str(p), skip_invalid)


def corpus_kind(path: str | os.PathLike[str]) -> Literal["text", "image"]:
    """The kind of :class:`Corpus` :func:`read_corpus` makes of ``path``: a folder is an image
    corpus, a file a text corpus. Decided here only, so a caller can check the encoder
    before reading anything.

    >>> import tempfile
    >>> corpus_kind(tempfile.mkdtemp()), corpus_kind("texts.csv")
    ('image', 'text')
    """
    return "image" if Path(path).is_dir() else "text"


def read_table(path: str | os.PathLike[str], columns: Sequence[str]) -> dict[str, list[Any]]:
    """The named columns of a CSV / Parquet / JSONL file, as lists in row order.

    The same readers and rules as :func:`read_corpus` (``.csv``, ``.csv.gz``, ``.parquet``,
    ``.pq``, ``.jsonl``, ``.ndjson``, gzipped JSONL): every CSV cell is the string it is
    (an empty cell is ``""``; ``NA`` and ``null`` are ordinary strings), Parquet and JSONL
    values keep their types, and a JSONL record without a key gives ``None``. Nothing is
    validated beyond the file: a missing column raises :class:`MissingColumnError` naming it
    and the file's columns; an unreadable file raises :class:`CorpusError` naming it.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = f.write_text("a,b,c\\n1,NA,x\\n2,,y\\n")
    >>> read_table(f, ["b", "a"])
    {'b': ['NA', ''], 'a': ['1', '2']}
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"file not found: {p}")
    if p.is_dir():
        raise CorpusError(f"{p}: is a folder; expected a CSV, Parquet or JSONL file")
    fmt, gzipped = _file_format(p, "table")
    if fmt == "txt":
        raise CorpusError(f"{p}: a .txt file has no columns; use CSV, Parquet or JSONL")
    return _read_columns(p, fmt, gzipped, list(columns))


# -- formats ----------------------------------------------------------------------------


def _file_format(p: Path, what: str) -> tuple[str, bool]:
    """The format of a non-empty file by its name, and whether it is gzipped."""
    name = p.name.lower()
    gzipped = name.endswith(".gz")
    stem = name[:-3] if gzipped else name
    suffix = os.path.splitext(stem)[1]
    fmt = TEXT_FORMATS.get(suffix)
    if fmt is None or (gzipped and fmt not in GZIP_FORMATS):
        known = [*TEXT_FORMATS, ".csv.gz", ".jsonl.gz", ".ndjson.gz", ".txt.gz"]
        if what != "corpus":  # a table has columns: no .txt, no image folder
            known = [k for k in known if ".txt" not in k]
        folder = ", or a folder of images" if what == "corpus" else ""
        raise CorpusError(
            f"{p}: unknown {what} format {p.name!r}; expected one of {', '.join(known)}{folder}"
        )
    if p.stat().st_size == 0:
        raise CorpusError(f"{p}: the file is empty (0 bytes)")
    return fmt, gzipped


# What a broken or mislabelled file raises inside the parsers.
_PARSE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes gzip.BadGzipFile
    EOFError,
    zlib.error,
    UnicodeDecodeError,
)


def _parse_errors() -> tuple[type[BaseException], ...]:
    import pandas as pd
    import pyarrow as pa

    return (
        *_PARSE_ERRORS,
        pd.errors.ParserError,
        pd.errors.ParserWarning,
        pd.errors.EmptyDataError,
        pa.ArrowException,
    )


def _read_columns(p: Path, fmt: str, gzipped: bool, wanted: list[str]) -> dict[str, list[Any]]:
    """Read the ``wanted`` columns as lists, after checking that they all exist."""
    try:
        if fmt == "csv":
            return _read_csv(p, wanted)
        if fmt == "parquet":
            return _read_parquet(p, wanted)
        return _read_jsonl(p, gzipped, wanted)
    except CorpusError:
        raise
    except _parse_errors() as err:
        raise CorpusError(f"{p}: cannot read it as {fmt.upper()}: {_describe(err)}") from err


def _check_columns(p: Path, columns: list[str], wanted: list[str]) -> None:
    missing = [c for c in dict.fromkeys(wanted) if c not in columns]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        raise MissingColumnError(
            f"{p}: column {names} not found; the file has columns: "
            + ", ".join(repr(c) for c in columns),
            missing=tuple(missing),
            columns=tuple(columns),
        )


def _read_csv(p: Path, wanted: list[str]) -> dict[str, list[Any]]:
    import warnings

    import pandas as pd

    # No NA detection: every cell stays the string it is ("NA", "null", "" included).
    # index_col=False with ParserWarning as an error: a row with more fields than the header
    # (say an unquoted comma) fails instead of shifting or dropping cells; no usecols, as
    # pandas then ignores such rows' extra fields silently.
    options: dict[str, Any] = {"keep_default_na": False, "na_filter": False, "index_col": False}
    header = pd.read_csv(p, nrows=0, **options)
    _check_columns(p, [str(c) for c in header.columns], wanted)
    id_columns = list(dict.fromkeys(wanted[1:]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        # Letting pandas infer the text column is ~2x faster than dtype=str; a column that
        # came out numeric (every cell a number) is read again as strings ("1.50" stays).
        frame = pd.read_csv(p, dtype=dict.fromkeys(id_columns, str), **options)
        if not all(_is_text_dtype(frame[c].dtype) for c in wanted):
            frame = pd.read_csv(p, dtype=dict.fromkeys(wanted, str), **options)
    return {c: frame[c].tolist() for c in wanted}


def _is_text_dtype(dtype: Any) -> bool:
    import pandas as pd

    return isinstance(dtype, pd.StringDtype) or getattr(dtype, "kind", "") == "O"


def _read_parquet(p: Path, wanted: list[str]) -> dict[str, list[Any]]:
    import pyarrow.parquet as pq

    _check_columns(p, list(pq.read_schema(p).names), wanted)
    table = pq.read_table(p, columns=list(dict.fromkeys(wanted)))
    return {c: table.column(c).to_pylist() for c in wanted}


def _read_jsonl(p: Path, gzipped: bool, wanted: list[str]) -> dict[str, list[Any]]:
    values: dict[str, list[Any]] = {c: [] for c in wanted}
    seen_keys: dict[str, None] = {}
    with _open_text(p, gzipped) as lines:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue  # blank lines (e.g. a trailing one) are not records
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{p}: line {lineno} is not valid JSON: {err}") from err
            if not isinstance(record, dict):
                raise CorpusError(
                    f"{p}: line {lineno} is a JSON {type(record).__name__}; "
                    "expected an object per line"
                )
            seen_keys.update(dict.fromkeys(record))
            for c in wanted:
                values[c].append(record.get(c))
    if not seen_keys:
        raise CorpusError(f"{p}: the file is empty (no records)")
    _check_columns(p, list(seen_keys), wanted)
    return values


def _read_txt(p: Path, gzipped: bool) -> list[str]:
    # Split on "\n" only (after universal-newline decoding): str.splitlines() would also
    # split inside a text at form feeds, U+2028 and other rare separators.
    try:
        with _open_text(p, gzipped) as f:
            lines = f.read().split("\n")
    except _PARSE_ERRORS as err:
        raise CorpusError(f"{p}: cannot read it as text: {_describe(err)}") from err
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    return lines


def _open_text(p: Path, gzipped: bool) -> Any:
    # utf-8-sig drops a byte-order mark; lines end at "\n", "\r\n" or "\r".
    if gzipped:
        return gzip.open(p, "rt", encoding="utf-8-sig", newline=None)
    return open(p, encoding="utf-8-sig", newline=None)  # noqa: SIM115


def _describe(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text if len(text) <= 300 else text[:300] + " ..."


# -- images -----------------------------------------------------------------------------


def _list_images(folder: Path) -> tuple[list[Path], int]:
    """Image files under ``folder`` (recursive, hidden names skipped), and the other files."""
    images, others = [], 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            if name.lower().endswith(IMAGE_SUFFIXES):
                images.append(Path(root) / name)
            else:
                others += 1
    images.sort(key=lambda f: f.relative_to(folder).as_posix())
    return images, others


def _image_problem(path: Path) -> str | None:
    """Why the encoder could not read this image (decoded in full, as it will be), or None."""
    from embetter_core.encoders.vision import MAX_IMAGE_PIXELS, check_image, size_text
    from embetter_core.errors import ImageTooLargeError

    try:
        check_image(path)
    except ImageTooLargeError as err:
        size = size_text(err.size, err.__cause__)
        return f"image too large ({size}; the limit is {MAX_IMAGE_PIXELS:,} pixels)"
    except Exception as err:  # Pillow raises many types (OSError, SyntaxError, ...)
        cause = err.__cause__ or err
        return f"unreadable image: {type(cause).__name__}: {_describe(cause)}"
    return None


def _image_problems(files: list[Path]) -> list[str | None]:
    """:func:`_image_problem` of each file, decoded on a few threads (Pillow decodes without
    the GIL); each thread holds at most one decoded image."""
    from concurrent.futures import ThreadPoolExecutor

    workers = min(8, os.cpu_count() or 1, len(files))
    if workers <= 1:
        return [_image_problem(f) for f in files]
    with ThreadPoolExecutor(workers, thread_name_prefix="embetter-ingest") as pool:
        return list(pool.map(_image_problem, files))


def _read_image_folder(folder: Path, skip_invalid: bool, check_images: bool) -> Corpus:
    files, others = _list_images(folder)
    if not files:
        raise CorpusError(
            f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder or below "
            f"({others} other files)"
        )
    reasons = _image_problems(files) if check_images else [None] * len(files)
    ids, items, problems = [], [], []
    for row, (file, reason) in enumerate(zip(files, reasons, strict=True)):
        id_ = file.relative_to(folder).as_posix()
        if reason is not None:
            problems.append(SkippedRow(row, id_, reason))
            continue
        ids.append(id_)
        items.append(str(file.absolute()))
    _raise_or_keep(str(folder), len(files), problems, skip_invalid, len(ids))
    return Corpus(ids, items, kind="image", source=str(folder), skipped=problems)


# -- validation -------------------------------------------------------------------------


def _as_id(value: Any) -> str | None:
    """An id as ``str``; ``None`` when missing or blank."""
    if type(value) is str:  # the common case, first
        return None if not value or value.isspace() else value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return _as_id(str(value))


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _id_problem(id_: str) -> str | None:
    from embetter_core.encoders.base import utf8_problem

    return utf8_problem(id_)


def _text_problem(text: Any) -> str | None:
    # base imports scikit-learn; corpus stays light until a row needs the full checks.
    from embetter_core.encoders.base import is_blank_text, utf8_problem

    if isinstance(text, str):
        if not text or text.isspace():
            return "empty text"
        if is_blank_text(text):
            return "empty text (only invisible characters such as NUL, U+200B, U+FEFF)"
        problem = None if text.isascii() else utf8_problem(text)
        return None if problem is None else f"text cannot be written as UTF-8: {problem}"
    if text is None:
        return "missing text"
    if isinstance(text, float) and math.isnan(text):
        return "missing text (NaN)"
    return f"text is {type(text).__name__}, expected a string"


def _validated(
    raw_ids: list[Any] | None, texts: list[Any], source: str, skip_invalid: bool
) -> Corpus:
    ids = [str(i) for i in range(len(texts))] if raw_ids is None else [_as_id(v) for v in raw_ids]
    first_row: dict[str, int] = {}
    problems: list[SkippedRow] = []
    is_blank = None
    for row, (id_, text) in enumerate(zip(ids, texts, strict=True)):
        # The common case, in C: a new ASCII id and a printable non-blank string (printable:
        # no invisible characters but spaces, and no lone surrogates).
        if type(text) is str and id_ is not None and id_.isascii() and id_ not in first_row:
            if text.isprintable():
                if text and not text.isspace():
                    first_row[id_] = row
                    continue
            else:  # line breaks, tabs, or invisible characters, lone surrogates
                if is_blank is None:
                    from embetter_core.encoders.base import is_blank_text as is_blank
                if not is_blank(text) and (text.isascii() or _encodes(text)):
                    first_row[id_] = row
                    continue
        text_reason = _text_problem(text)
        id_reason = None if id_ is None or id_.isascii() else _id_problem(id_)
        if text_reason is None and id_reason is None and id_ is not None and id_ not in first_row:
            first_row[id_] = row
            continue
        reasons = []
        if id_ is None:
            reasons.append("missing id")
        elif id_reason is not None:
            reasons.append(f"id cannot be written as UTF-8: {id_reason}")
        elif id_ in first_row:
            reasons.append(f"duplicate id (first at row {first_row[id_]})")
        else:
            first_row[id_] = row
        if text_reason is not None:
            reasons.append(text_reason)
        problems.append(SkippedRow(row, id_, "; ".join(reasons)))
    _raise_or_keep(source, len(texts), problems, skip_invalid, len(texts) - len(problems))
    if problems:
        bad = {p.row for p in problems}
        keep = [row for row in range(len(texts)) if row not in bad]
        ids = [ids[row] for row in keep]
        texts = [texts[row] for row in keep]
    return Corpus(ids, texts, kind="text", source=source, skipped=problems)  # type: ignore[arg-type]


def _raise_or_keep(
    source: str, total: int, problems: list[SkippedRow], skip_invalid: bool, kept: int
) -> None:
    if total == 0:
        raise CorpusError(f"{source}: the corpus is empty (no rows)")
    if problems and not skip_invalid:
        raise CorpusError(
            f"{source}: {len(problems)} invalid row(s) of {total} (rows numbered from 0, "
            f"header excluded): {_list_problems(problems)}. Fix them, or drop them with "
            "--skip-invalid on the command line (skip_invalid=True in Python); dropped rows "
            "are listed in the report (Corpus.skipped)."
        )
    if kept == 0:
        raise CorpusError(
            f"{source}: no valid rows: all {total} rows are invalid: {_list_problems(problems)}"
        )


def _list_problems(problems: list[SkippedRow]) -> str:
    shown = "; ".join(str(p) for p in problems[:SHOW_ROWS])
    more = len(problems) - SHOW_ROWS
    return shown + (f"; ... and {more} more" if more > 0 else "")


# -- hashing ----------------------------------------------------------------------------


def _update_field(digest: Any, data: bytes) -> None:
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)
