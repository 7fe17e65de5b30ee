"""Review: ``review.html`` beside ``report.html``, to choose a threshold by looking at the
pairs and to label pairs for a difference model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embetter_core.corpus import Corpus
from embetter_core.dedupe import DuplicateReport
from embetter_core.review import write_review
from tasks.options import step


@step("write-review")
def write_review_page(
    report: DuplicateReport, corpus: Corpus, report_dir: str, facts: dict[str, Any]
) -> Path:
    """Write ``review.html`` into ``report_dir``: the counts at a grid of thresholds from the
    report's floor to 1.0, and pairs sampled per similarity band (images as thumbnails for
    an image corpus), with the run's ``facts``."""
    folder = Path(report_dir).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return write_review(report, corpus.texts_by_id(), folder, kind=corpus.kind, facts=facts)
