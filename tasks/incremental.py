"""Incremental dedupe: a rerun over a grown corpus searches only its new and edited rows,
reusing what the last run found (a state file beside the store)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from embetter_core.dedupe import DuplicateReport, incremental, state_path
from embetter_core.store import EmbeddingStore


@task(name="find-duplicates-incremental", cache_policy=NO_CACHE, persist_result=False)
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


@contextlib.contextmanager
def logs_in_run(source: logging.Logger, level: int = logging.INFO) -> Iterator[None]:
    """Copy ``source``'s records at ``level`` and above into the current Prefect run's log
    (a library logs to its own logger, which the run log does not show), unless Prefect
    sends them there already (``PREFECT_LOGGING_EXTRA_LOGGERS``, which
    :func:`flows.offline.use_offline_defaults` sets): then each record would show twice."""
    if _reaches_api(source):
        yield
        return
    run_logger = get_run_logger()

    class ToRunLog(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            run_logger.log(record.levelno, "%s", record.getMessage())

    handler = ToRunLog(level)
    before = source.level
    if source.getEffectiveLevel() > level:
        source.setLevel(level)
    source.addHandler(handler)
    try:
        yield
    finally:
        source.removeHandler(handler)
        source.setLevel(before)


def _reaches_api(source: logging.Logger) -> bool:
    """Whether ``source`` (or a logger it propagates to) has Prefect's API log handler."""
    from prefect.logging.handlers import APILogHandler

    logger: logging.Logger | None = source
    while logger is not None:
        if any(isinstance(h, APILogHandler) for h in logger.handlers):
            return True
        logger = logger.parent if logger.propagate else None
    return False
