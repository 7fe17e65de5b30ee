"""Corpora on disk: reading and validating them (``reading``), writing one back without its
removed rows (``writing``), and reading the columns a keep rule orders by (``columns``).

>>> from embetter_core.corpus import Corpus
>>> len(Corpus(["a", "b"], ["first text", "second text"]))
2
"""

from __future__ import annotations

from embetter_core.corpus.columns import column_values, keep_values_for
from embetter_core.corpus.reading import (
    TEXT_FORMATS,
    Corpus,
    SkippedRow,
    corpus_kind,
    read_corpus,
    read_table,
)
from embetter_core.corpus.writing import (
    Deduplicated,
    check_deduplicated_path,
    input_format,
    write_deduplicated,
)

__all__ = [
    "TEXT_FORMATS",
    "Corpus",
    "Deduplicated",
    "SkippedRow",
    "check_deduplicated_path",
    "column_values",
    "corpus_kind",
    "input_format",
    "keep_values_for",
    "read_corpus",
    "read_table",
    "write_deduplicated",
]
