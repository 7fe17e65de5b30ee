"""Incremental dedupe: a rerun over a grown corpus searches only its new and edited rows,
reusing what the last run found (a state file beside the store)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import get_run_logger

from embetter_core.dedupe import DuplicateReport, incremental, state_path
from embetter_core.store import EmbeddingStore
from tasks.options import step
from tasks.run_logs import logs_in_run


@step("find-duplicates-incremental")
def find_duplicates_incremental_in_store(
    store_path: str,
    threshold: float,
    method: str = "auto",
    keep: str = "first",
    keep_values: Sequence[Any] | None = None,
) -> DuplicateReport:
    """As ``find-duplicates``, building on the state file beside the store
    (:func:`~embetter_core.dedupe.state_path`) and writing the new one there. Without a
    usable state (none yet, corrupt, another encoder or floor) it is a full run, and the run
    log says why."""
    state = state_path(store_path)
    with EmbeddingStore.open(store_path) as st, logs_in_run(incremental.logger):
        report = incremental.find_duplicates_incremental(
            st.dataset,
            state,
            ids=st.ids,
            threshold=threshold,
            method=method,
            fingerprint=st.fingerprint,
            keep=keep,
            keep_values=keep_values,
        )
    done = report.params["incremental"]
    if done["mode"] == "incremental":
        get_run_logger().info(
            "incremental dedupe: %d new or edited rows, %d deleted, %d rechecked; "
            "%d candidate pairs reused from %s",
            done["fresh"],
            done["deleted"],
            done["rechecked"],
            done["reused_pairs"],
            state,
        )
    return report
