"""Report: pairs.csv, report.html and the Prefect artifacts a person reads in the UI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from embetter_core import report as render
from embetter_core.dedupe import DuplicateReport


@task(name="write-report", cache_policy=NO_CACHE, persist_result=False)
def write_report(
    report: DuplicateReport,
    texts: dict[str, str],
    report_dir: str,
    extra: dict[str, Any],
    artifact_key: str = "embed-corpus",
    probabilities: list[float] | None = None,
) -> dict[str, Path]:
    """Write ``pairs.csv`` and ``report.html``; publish a summary and a top-pairs table.

    ``texts`` maps the ids that appear in pairs or clusters to their texts;
    ``probabilities`` (one per pair) come from a difference model, when the run has one.
    """
    folder = Path(report_dir).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    pairs = render.write_pairs_csv(report, texts, folder / "pairs.csv", probabilities)
    page = render.write_html(report, texts, folder / "report.html", extra=extra)
    summary = render.markdown_summary(report, extra=extra)
    create_markdown_artifact(
        key=f"{artifact_key}-summary",
        markdown=summary + f"\nFiles: `{pairs}`, `{page}`\n",
        description="Near-duplicate summary",
    )
    rows = render.top_pairs_table(report, texts, k=50, probabilities=probabilities)
    create_table_artifact(
        key=f"{artifact_key}-top-pairs",
        table=[{k: str(v) if k.startswith("id") else v for k, v in r.items()} for r in rows]
        or [{"id_a": "", "id_b": "", "score": "", "text_a": "(no pairs)", "text_b": ""}],
        description=f"Top {len(rows)} near-duplicate pairs",
    )
    return {"pairs_csv": pairs, "report_html": page}
