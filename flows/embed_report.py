"""The embed flow's last stage and its result: the report written (files, artifacts, the
store's kept flags, the deduplicated corpus) through the report tasks, and the run's
:class:`EmbedResult` built from what they wrote."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger
from prefect.utilities.annotations import quote
from pydantic import BaseModel

from embetter_core import report as render
from embetter_core.corpus import Corpus
from embetter_core.dedupe import DuplicateReport
from tasks.dedupe import record_kept
from tasks.reference import ReferenceOutputs
from tasks.report import publish_outputs, write_deduplicated_corpus, write_report
from tasks.review import write_review_page


class EmbedResult(BaseModel):
    """What a run produced, and what it cost."""

    store_path: str
    pairs_csv: str
    report_html: str
    review_html: str = ""
    rows: int
    skipped: int
    pairs: int
    clusters: int
    cache_hits: int
    cache_misses: int
    dedupe_method: str
    seconds: float
    removed_csv: str = ""
    removed: int = 0
    deduplicated: str | None = None
    reference_pairs_csv: str | None = None
    reference_rows_matched: int = 0
    incremental: str | None = None
    threshold: float | None = None
    threshold_source: str = ""
    rescored_rows: int | None = None


def run_facts(
    corpus: Corpus,
    store_path: Path,
    counts: dict[str, int],
    encoder: str,
    difference_model: str | None = None,
    min_probability: float | None = None,
) -> dict[str, Any]:
    """The rows a report shows about its run: the corpus, what was skipped, the encoder, the
    cache hits and misses, the store, the difference model."""
    facts: dict[str, Any] = {
        "corpus": corpus.source,
        "rows": len(corpus),
        "skipped rows": len(corpus.skipped),
    }
    if corpus.skipped:
        facts["first skipped"] = "; ".join(map(str, corpus.skipped[:5]))
    facts["encoder"] = encoder
    facts["cache hits / misses"] = f"{counts['hits']} / {counts['misses']}"
    facts["store"] = str(store_path)
    if difference_model:
        facts["difference model"] = difference_model
        facts["min probability"] = min_probability
    return facts


def threshold_facts(
    report: DuplicateReport, source: str, two_stage: dict[str, Any] | None = None
) -> dict[str, str]:
    """The rows a report shows about its threshold: the one that ran and where it came from
    (``source``), and, for a two-stage dedupe (``two_stage``, from the flow's rescore step),
    its first stage and how many rows the second encoder re-encoded.

    >>> from embetter_core.dedupe import find_duplicates
    >>> threshold_facts(find_duplicates(np.eye(2), threshold=0.9), "given (--threshold)")
    {'threshold chosen': '0.9 — given (--threshold)'}
    """
    facts = {"threshold chosen": f"{report.threshold:g} — {source}"}
    if two_stage:
        facts["two-stage dedupe"] = (
            f"first stage {two_stage['first_encoder']} (the stored vectors) at candidate "
            f"threshold {two_stage['candidate_threshold']:g}: {two_stage['rows']:,} of "
            f"{two_stage['of']:,} rows in a candidate pair, re-encoded and decided by the "
            "rescore encoder"
        )
        facts["rescore encoder"] = two_stage["rescore_encoder"]
        cache = two_stage["cache"]
        facts["rescore cache hits / misses"] = f"{cache['hits']} / {cache['misses']}"
    return facts


def texts_in_report(report: DuplicateReport, corpus: Corpus) -> dict[str, str]:
    """The texts of the ids that appear in the report's pairs or clusters."""
    text_of = corpus.texts_by_id()
    wanted = render.ids_in_pairs(report.pairs)
    wanted.update(i for members in report.clusters for i in members)
    return {i: text_of[i] for i in wanted}


def publish_report(
    report: DuplicateReport,
    corpus: Corpus,
    store_path: Path,
    counts: dict[str, int],
    *,
    report_dir: str,
    encoder: str,
    started: float,
    difference_model: str | None = None,
    min_probability: float | None = None,
    probabilities: np.ndarray | None = None,
    deduplicated: str | None = None,
    id_column: str | None = None,
    spreadsheet_safe: bool = False,
    reference: ReferenceOutputs | None = None,
    threshold_source: str = "",
    two_stage: dict[str, Any] | None = None,
) -> EmbedResult:
    """Write the report (files and artifacts) of a run that began at ``started``
    (``time.perf_counter()``), record the decision in the store, write the deduplicated
    corpus to ``deduplicated`` when given, and return its :class:`EmbedResult`.

    ``counts`` holds the cache ``hits`` and ``misses``; ``encoder`` is the fingerprint;
    ``spreadsheet_safe``: see :func:`~tasks.report.write_report`; ``reference``: the search
    against a reference set (its facts and section join the report); ``threshold_source``
    and ``two_stage``: see :func:`threshold_facts`.
    """
    facts = run_facts(corpus, store_path, counts, encoder, difference_model, min_probability)
    facts |= threshold_facts(report, threshold_source or "given", two_stage)
    # before the report: report.html links review.html, the summary names its path
    facts["review page"] = str(write_review_page(quote(report), quote(corpus), report_dir, facts))
    # quote(): Prefect would walk a big argument's every element before the task runs
    # (seconds for a report of 100,000s of pairs); these hold no futures to resolve
    paths = write_report(
        quote(report),
        quote(texts_in_report(report, corpus)),
        report_dir,
        {**facts, **(reference.facts if reference else {})},
        probabilities=None if probabilities is None else quote(probabilities.tolist()),
        spreadsheet_safe=spreadsheet_safe,
        sections=[reference.section] if reference else None,
    )
    record_kept(str(store_path), quote(report))
    written = None
    if deduplicated:
        written = write_deduplicated_corpus(quote(corpus), quote(report), deduplicated, id_column)
    publish_outputs(quote(report), store_path, paths["removed_csv"], written, reference=reference)
    result = EmbedResult(
        store_path=str(store_path),
        pairs_csv=str(paths["pairs_csv"]),
        report_html=str(paths["report_html"]),
        review_html=facts["review page"],
        rows=len(corpus),
        skipped=len(corpus.skipped),
        pairs=len(report.pairs),
        clusters=len(report.clusters),
        cache_hits=counts["hits"],
        cache_misses=counts["misses"],
        dedupe_method=report.method,
        seconds=round(time.perf_counter() - started, 2),
        removed_csv=str(paths["removed_csv"]),
        removed=len(report.removed),
        deduplicated=None if written is None else str(written.path),
        reference_pairs_csv=None if reference is None else str(reference.csv),
        reference_rows_matched=0 if reference is None else reference.rows_matched,
        incremental=render.incremental_text(report),
        threshold=report.threshold,
        threshold_source=threshold_source,
        rescored_rows=None if two_stage is None else two_stage["rows"],
    )
    get_run_logger().info("done: %s", result.model_dump_json())
    return result
