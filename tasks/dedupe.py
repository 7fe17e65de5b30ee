"""Dedupe: near-duplicate search over a committed store, and its decision recorded there."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embetter_core.dedupe import DuplicateReport, candidate_rows, find_duplicates, rescore_report
from embetter_core.store import EmbeddingStore, write_kept
from tasks.options import step


@step("find-duplicates")
def find_duplicates_in_store(
    store_path: str,
    threshold: float,
    method: str = "auto",
    keep: str = "first",
    keep_values: Sequence[Any] | None = None,
    floor: float | None = None,
) -> DuplicateReport:
    """Near-duplicate pairs and clusters of the vectors in ``store_path``; ``keep`` decides
    which rows stay (``keep_values``: the rule's values, one per store row). ``floor``: as
    :func:`~embetter_core.dedupe.find_duplicates`'s; a run that never re-thresholds passes
    its threshold, so no candidates below it are searched for and held."""
    with EmbeddingStore.open(store_path) as st:
        return find_duplicates(
            st.dataset,
            ids=st.ids,
            threshold=threshold,
            method=method,
            keep=keep,
            keep_values=keep_values,
            floor=floor,
        )


@step("candidate-rows")
def find_candidate_rows(report: DuplicateReport) -> np.ndarray:
    """The first stage of a two-stage dedupe: the rows (ascending) in one of ``report``'s
    pairs, the ones the second encoder re-encodes."""
    return candidate_rows(report)


@step("rescore-duplicates")
def rescore_duplicates(
    first: DuplicateReport,
    rows: Sequence[int],
    vectors: Any,
    threshold: float,
    method: str = "auto",
) -> DuplicateReport:
    """The second stage of a two-stage dedupe: ``first``'s candidate ``rows``, re-encoded as
    ``vectors`` (one per row, in order), decided at ``threshold`` over all of its rows."""
    return rescore_report(first, rows, vectors, threshold, method=method)


@step("record-kept")
def record_kept(store_path: str, report: DuplicateReport) -> Path:
    """Write the report's decision into the store: its ``kept`` dataset (atomically)."""
    return write_kept(
        store_path,
        report.kept_mask,
        ids=report.ids,
        threshold=report.threshold,
        keep=str(report.keep),
        method=report.method,
    )
