"""Dedupe: near-duplicate search over a committed store, and its decision recorded there."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext

from embetter_core.dedupe import DuplicateReport, candidate_rows, find_duplicates, rescore_report
from embetter_core.dedupe.partitioned import PartitionOptions
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
    memory_budget: str | None = None,
    work_dir: str | None = None,
    on_dask: bool = False,
) -> DuplicateReport:
    """Near-duplicate pairs and clusters of the vectors in ``store_path``; ``keep`` decides
    which rows stay (``keep_values``: the rule's values, one per store row). ``floor``: as
    :func:`~embetter_core.dedupe.find_duplicates`'s; a run that never re-thresholds passes
    its threshold, so no candidates below it are searched for and held.

    The partitioned engine (``method="partitioned"``, or ``auto`` over ``memory_budget``)
    reports its cells done / total as the ``dedupe-progress`` artifact; ``on_dask``: its
    cells run as tasks on the flow's Dask cluster."""
    in_run = FlowRunContext.get() is not None or TaskRunContext.get() is not None
    with EmbeddingStore.open(store_path) as st:
        options = PartitionOptions(
            work_dir=work_dir,
            client=_flow_dask_client() if on_dask else None,
            on_progress=_cell_progress(get_run_logger()) if in_run else None,
        )
        return find_duplicates(
            st.dataset,
            ids=st.ids,
            threshold=threshold,
            method=method,
            keep=keep,
            keep_values=keep_values,
            floor=floor,
            memory_budget=memory_budget,
            partitions=options,
        )


def _flow_dask_client() -> Any:
    """The client of the flow run's ``DaskTaskRunner`` (connected when the flow started, to
    ``--dask-address`` or its ``LocalCluster``), so the cells go to the flow's own cluster
    from a task that runs in the flow's process."""
    runner = getattr(FlowRunContext.get(), "task_runner", None)
    if runner is None or not hasattr(runner, "client"):
        raise RuntimeError("on_dask needs a flow run with a DaskTaskRunner")
    return runner.client


def _cell_progress(logger: Any) -> Callable[[int, int], None]:
    """The partitioned dedupe's progress: a Prefect progress artifact (cells done / total,
    as the embedding's chunk progress) and a log line every tenth."""
    state: dict[str, Any] = {}

    def report(done: int, total: int) -> None:
        if "id" not in state:
            state["id"] = create_progress_artifact(
                progress=0.0,
                key="dedupe-progress",
                description=f"Cells of the partitioned dedupe searched (of {total})",
            )
            state["shown"] = -1
        tenth = 10 * done // max(total, 1)
        if tenth != state["shown"]:
            state["shown"] = tenth
            update_progress_artifact(state["id"], progress=100.0 * done / max(total, 1))
            logger.info("dedupe: %d of %d cells searched", done, total)

    return report


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
