"""Ingest: read and validate a corpus file or image folder."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from embetter_core.corpus import Corpus, read_corpus


@task(name="ingest", cache_policy=NO_CACHE, persist_result=False)
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
