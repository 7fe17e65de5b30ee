"""The values a keep rule orders rows by, read for the rows of a corpus: a numeric or date
column of its file (``--keep column:NAME``), or its texts' lengths (``longest`` /
``shortest``). Read and checked before any encoding, so a bad column fails first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from embetter_core.dedupe.keep import KeepRule, sort_key
from embetter_core.errors import CorpusError, DuplicateSearchError, MissingColumnError


def column_values(
    path: str | os.PathLike[str], column: str, skipped_rows: Sequence[int] = ()
) -> list[Any]:
    """The values of ``column`` in the corpus file ``path``, one per corpus row: the file's
    rows without ``skipped_rows`` (those :func:`~embetter_core.corpus.read_corpus` dropped,
    ``[s.row for s in corpus.skipped]``). Checked as sort keys (numbers or dates), so a bad
    column fails here, before any encoding; a missing column raises
    :class:`~embetter_core.errors.MissingColumnError` naming the file's columns.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "c.csv"
    >>> _ = f.write_text("text,stars\\na,3\\n,9\\nc,1\\n")
    >>> column_values(f, "stars", skipped_rows=[1])
    ['3', '1']
    """
    from embetter_core.corpus.reading import read_table

    values = read_table(path, [column])[column]
    skip = set(int(r) for r in skipped_rows)
    if skip:
        values = [v for row, v in enumerate(values) if row not in skip]
    try:
        sort_key(values, name=column)
    except DuplicateSearchError as err:
        raise DuplicateSearchError(f"{path}: {err}") from None
    return values


def keep_values_for(rule: KeepRule | str, corpus: Any) -> list[Any] | None:
    """The values ``rule`` needs for the rows of ``corpus`` (an
    :class:`~embetter_core.corpus.Corpus`): its text lengths for ``longest`` / ``shortest``,
    the column read from its file (``corpus.source``) for ``column``, None for the others.
    Raises before any encoding when the rule cannot apply, naming the rule (``--keep``), the
    file and the column.

    >>> from embetter_core.corpus import Corpus
    >>> keep_values_for("shortest", Corpus(["a", "b"], ["xy", "z"]))
    [2, 1]
    """
    rule = KeepRule.parse(rule)
    if not rule.needs_values:
        return None
    if corpus.kind == "image":
        raise DuplicateSearchError(
            f"keep={str(rule)!r} needs texts or columns; an image folder ({corpus.source}) "
            "has neither: use first or last"
        )
    if rule.kind != "column":
        return [len(text) for text in corpus.items]
    source = str(corpus.source)
    if not source or source.startswith("<") or not os.path.isfile(source):
        raise DuplicateSearchError(
            f"keep={str(rule)!r} reads a column of the corpus file, but this corpus has no "
            f"file ({source!r}): pass keep_values instead"
        )
    try:
        return column_values(source, str(rule.column), [s.row for s in corpus.skipped])
    except MissingColumnError as err:
        raise MissingColumnError(
            f"keep rule {str(rule)!r} (--keep): {err}", err.missing, err.columns
        ) from None
    except CorpusError as err:
        raise CorpusError(f"keep rule {str(rule)!r} (--keep): {err}") from None
    except DuplicateSearchError as err:
        raise DuplicateSearchError(f"keep rule {str(rule)!r} (--keep): {err}") from None
