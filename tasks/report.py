"""Report: pairs.csv, removed.csv, report.html, the deduplicated corpus, and the Prefect
artifacts a person reads in the UI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from embetter_core import report as render
from embetter_core.corpus import Corpus, Deduplicated, write_deduplicated
from embetter_core.dedupe import DuplicateReport
from tasks.options import step
from tasks.reference import ReferenceOutputs


@step("write-report")
def write_report(
    report: DuplicateReport,
    texts: dict[str, str],
    report_dir: str,
    extra: dict[str, Any],
    artifact_key: str = "embed-corpus",
    probabilities: list[float] | None = None,
    spreadsheet_safe: bool = False,
    sections: list[str] | None = None,
) -> dict[str, Path]:
    """Write ``pairs.csv``, ``removed.csv`` and ``report.html``; publish a summary and a
    top-pairs table.

    ``texts`` maps the ids that appear in pairs or clusters to their texts;
    ``probabilities`` (one per pair) come from a difference model, when the run has one;
    ``spreadsheet_safe`` prefixes CSV cells a spreadsheet would run as formulas with ``'``.
    """
    folder = Path(report_dir).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    pairs = render.write_pairs_csv(
        report, texts, folder / "pairs.csv", probabilities, spreadsheet_safe=spreadsheet_safe
    )
    removed = render.write_removed_csv(
        report, folder / "removed.csv", texts, spreadsheet_safe=spreadsheet_safe
    )
    page = render.write_html(
        report, texts, folder / "report.html", extra=extra, sections=sections or ()
    )
    summary = render.markdown_summary(report, extra=extra)
    create_markdown_artifact(
        key=f"{artifact_key}-summary",
        markdown=summary + f"\nFiles: `{pairs}`, `{removed}`, `{page}`\n",
        description="Near-duplicate summary",
    )
    rows = render.top_pairs_table(report, texts, k=50, probabilities=probabilities)
    create_table_artifact(
        key=f"{artifact_key}-top-pairs",
        table=[{k: str(v) if k.startswith("id") else v for k, v in r.items()} for r in rows]
        or [{"id_a": "", "id_b": "", "score": "", "text_a": "(no pairs)", "text_b": ""}],
        description=f"Top {len(rows)} near-duplicate pairs",
    )
    return {"pairs_csv": pairs, "removed_csv": removed, "report_html": page}


@step("write-deduplicated")
def write_deduplicated_corpus(
    corpus: Corpus, report: DuplicateReport, out_path: str, id_column: str | None
) -> Deduplicated:
    """Write the corpus file without the removed rows (and the rows skipped as invalid), in
    the input's format."""
    return write_deduplicated(
        corpus.source,
        report.removed,
        out_path,
        id_column=None if corpus.kind == "image" else id_column,
        skipped_rows=[s.row for s in corpus.skipped],
    )


@step("publish-outputs")
def publish_outputs(
    report: DuplicateReport,
    store_path: Path,
    removed_csv: Path,
    deduplicated: Deduplicated | None,
    artifact_key: str = "embed-corpus",
    reference: ReferenceOutputs | None = None,
) -> None:
    """A markdown artifact: how many rows were removed, and where the files are."""
    lines = [
        "# Dedupe outputs",
        "",
        f"- {len(report.removed):,} of {report.n:,} rows removed "
        f"(threshold {report.threshold:g}, keep rule {report.keep})",
        f"- removed rows, each with its kept row: `{removed_csv}`",
        f"- the decision in the store (dataset `kept`): `{store_path}`",
    ]
    if deduplicated is not None:
        lines.append(f"- deduplicated corpus ({deduplicated.rows:,} rows): `{deduplicated.path}`")
    if reference is not None:
        lines.append(
            f"- {reference.rows_matched:,} of {report.n:,} rows match the reference "
            f"({reference.matches:,} pairs): `{reference.csv}`"
        )
    create_markdown_artifact(
        key=f"{artifact_key}-outputs",
        markdown="\n".join(lines) + "\n",
        description="Rows removed and the output files",
    )
