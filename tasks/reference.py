"""Against a reference: which rows of the corpus near-duplicate a row of another corpus (a
test set against a training set, a new batch against last month's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import get_run_logger

from embetter_core import report as render
from embetter_core.dedupe import REFERENCE_PAIRS_CSV, ReferenceMatches, find_reference_duplicates
from embetter_core.store import EmbeddingStore
from tasks.options import step


@dataclass(frozen=True)
class ReferenceOutputs:
    """What a run's report shows of its search against the reference.

    Attributes:
        csv: ``reference_pairs.csv``, every match.
        rows_matched: the corpus rows with at least one match.
        matches: the (row, reference row) pairs.
        facts: rows for the report's run table and summary artifact.
        section: the report page's "Against the reference" section (HTML).
    """

    csv: Path
    rows_matched: int
    matches: int
    facts: dict[str, str] = field(default_factory=dict)
    section: str = ""


@step("find-reference-duplicates")
def find_reference_duplicates_in_store(
    store_path: str, reference_store: str, threshold: float, method: str = "auto"
) -> ReferenceMatches:
    """Every (row, reference row) pair at or above ``threshold``: the rows of the store at
    ``store_path`` against those of ``reference_store`` (refused when another encoder wrote
    it)."""
    with EmbeddingStore.open(store_path) as st:
        matches = find_reference_duplicates(
            st.dataset,
            reference_store,
            ids=st.ids,
            threshold=threshold,
            method=method,
            fingerprint=st.fingerprint,
        )
    get_run_logger().info(
        "against the reference %s: %d of %d rows match (%d pairs, %s)",
        reference_store,
        len(matches.matched_ids),
        len(matches.row_ids),
        len(matches),
        matches.method,
    )
    return matches


@step("write-reference-pairs")
def write_reference_pairs(
    matches: ReferenceMatches,
    report_dir: str,
    source: str,
    texts: dict[str, str] | None = None,
    reference_texts: dict[str, str] | None = None,
    spreadsheet_safe: bool = False,
) -> ReferenceOutputs:
    """Write ``reference_pairs.csv`` into ``report_dir`` and build the report's section on
    the reference ``source``; ``texts`` / ``reference_texts`` map the matched ids to their
    texts (None: no text column); ``spreadsheet_safe`` as for ``pairs.csv``."""
    path = render.write_reference_csv(
        matches,
        Path(report_dir).absolute() / REFERENCE_PAIRS_CSV,
        texts,
        reference_texts,
        spreadsheet_safe=spreadsheet_safe,
    )
    return ReferenceOutputs(
        csv=path,
        rows_matched=len(matches.matched_ids),
        matches=len(matches),
        facts=render.reference_facts(matches, source),
        section=render.reference_section(matches, source, path, texts, reference_texts),
    )
