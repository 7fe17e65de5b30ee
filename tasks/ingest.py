"""Ingest: read and validate a corpus file or image folder; what the run needs of it besides
its rows (the keep rule's values, its hash)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from embetter_core.corpus import Corpus, keep_values_for, read_corpus
from tasks.options import step


@step("ingest")
def ingest(
    path: str, text_column: str = "text", id_column: str | None = None, skip_invalid: bool = False
) -> Corpus:
    """Read ``path`` into a validated corpus; invalid rows raise, or are skipped and listed."""
    corpus = read_corpus(
        path, text_column=text_column, id_column=id_column, skip_invalid=skip_invalid
    )
    get_run_logger().info(
        "ingested %d rows from %s (%d skipped)", len(corpus), corpus.source, len(corpus.skipped)
    )
    return corpus


@step("keep-values")
def keep_values(keep: str, corpus: Corpus) -> list[Any] | None:
    """The values the keep rule ``keep`` needs, one per row of ``corpus`` (text lengths, or
    a column read from its file), None for a rule that needs none; a rule that cannot apply
    (a missing column, an image folder) raises, naming ``--keep``."""
    return keep_values_for(keep, corpus)


@step("hash-corpus")
def hash_corpus(corpus: Corpus) -> str:
    """The corpus's hash, stored with its vectors (an image corpus's files are read)."""
    return corpus.corpus_hash()
