"""Renderings of a :class:`~embetter_core.dedupe.DuplicateReport`: CSV, HTML, markdown.

``pairs.csv`` lists the pairs; ``removed.csv`` the rows to drop, each with the kept row it
duplicates (:func:`write_removed_csv`); ``reference_pairs.csv`` the matches of a search
against a reference set (:func:`write_reference_csv`, shown by :func:`reference_section`).

``texts`` is either a mapping ``id -> text``, a sequence in the report's row order, or
``None``. ``extra`` is a dict of further facts to show (corpus path, model fingerprint,
skipped rows, cache hits / misses...). Nothing here imports Prefect: the flow turns
``markdown_summary`` and ``top_pairs_table`` into artifacts.

>>> import numpy as np, tempfile, pathlib
>>> from embetter_core.dedupe import find_duplicates
>>> vecs = np.array([[1, 0], [0.96, 0.28], [0, 1]], dtype=np.float32)
>>> report = find_duplicates(vecs, ids=["a", "b", "c"], threshold=0.9)
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> texts = {"a": "cat", "b": "<b>cats</b>", "c": "dog"}
>>> print(write_pairs_csv(report, texts, folder / "pairs.csv").read_text().strip())
id_a,id_b,score,text_a,text_b
a,b,0.96,cat,<b>cats</b>
>>> print(write_removed_csv(report, folder / "removed.csv", texts).read_text().strip())
id,kept_id,similarity,cluster,exact
b,a,0.96,0,false
>>> "&lt;b&gt;cats&lt;/b&gt;" in write_html(report, texts, folder / "report.html").read_text()
True
>>> top_pairs_table(report, texts)
[{'id_a': 'a', 'id_b': 'b', 'score': 0.96, 'text_a': 'cat', 'text_b': '<b>cats</b>'}]
"""

from __future__ import annotations

import html
import io
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from embetter_core.dedupe.pair_list import PairList
from embetter_core.dedupe.reference import ReferenceMatches
from embetter_core.dedupe.results import DuplicateReport
from embetter_core.files import csv_field, write_atomic, write_csv_atomic, write_csv_lines_atomic
from embetter_core.files import spreadsheet_safe as safe_cell
from embetter_core.review import REVIEW_HTML

Texts = Mapping[Any, str] | Sequence[str] | None


def _lookup(report: DuplicateReport, texts: Texts) -> Mapping[Any, str] | None:
    """``texts`` as a mapping id -> text (a sequence must follow the report's rows)."""
    if texts is None or isinstance(texts, Mapping):
        return texts
    values = texts.tolist() if hasattr(texts, "tolist") else list(texts)
    if len(values) != report.n:
        raise ValueError(
            f"texts has length {len(values)} but the report has {report.n} rows; "
            "give one text per row, or a mapping id -> text"
        )
    return dict(zip(report.ids, values, strict=True))


def _text(lookup: Mapping[Any, str] | None, key: Any, limit: int | None = None) -> str:
    if lookup is None:
        return ""
    value = lookup.get(key, "")
    value = "" if value is None else str(value)
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "…"
    return value


# ----------------------------------------------------------------------------------------
# CSV and tables
# ----------------------------------------------------------------------------------------
def write_pairs_csv(
    report: DuplicateReport,
    texts: Texts,
    path: str | os.PathLike[str],
    probabilities: Sequence[float] | None = None,
    spreadsheet_safe: bool = False,
) -> Path:
    """Write every pair as CSV: id_a, id_b, score, text_a, text_b (highest score first).

    Text columns are empty when ``texts`` is None. With ``probabilities`` (one per pair, from
    a difference model) a ``probability`` column follows ``score``. Returns the path.

    Ids and texts are written as they are, so a cell such as ``=HYPERLINK(...)`` is a formula
    to a spreadsheet that opens the file. With ``spreadsheet_safe`` an id or text starting
    with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a leading ``'``, which
    spreadsheets hide and read as "this is text" (other CSV readers see the ``'``; see
    :func:`~embetter_core.files.spreadsheet_safe`).

    >>> import numpy as np, tempfile, pathlib
    >>> from embetter_core.dedupe import find_duplicates
    >>> report = find_duplicates(np.ones((2, 2)), ids=["=1+1", "b"], threshold=0.9)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pairs.csv"
    >>> write_pairs_csv(report, None, path, spreadsheet_safe=True).read_text().splitlines()[1]
    "'=1+1,b,1.0,,"
    """
    lookup = _lookup(report, texts)
    probs = _check_probabilities(report, probabilities)
    cell = safe_cell if spreadsheet_safe else _as_is
    header = ["id_a", "id_b", "score", *(["probability"] if probs else []), "text_a", "text_b"]

    # each id's cells are made once, as UTF-8 with the separator that follows them, and each
    # distinct score once; a line is then five or six ready pieces, looked up by position (a
    # row appears in many pairs, its text can be long, and no tuple is made per pair)
    names, at_a, at_b, scores = _coded(report.pairs)
    id_cell = [csv_field(cell(key)).encode("utf-8") + b"," for key in names]
    text = [csv_field(cell(_text(lookup, key))).encode("utf-8") for key in names]
    text_a = [value + b"," for value in text]
    text_b = [value + b"\n" for value in text]
    del text
    distinct, at_score = np.unique(scores, return_inverse=True)
    score_cell = [b"%a," % value for value in distinct.tolist()]  # a float's repr: no quotes
    prob_cell = [b"%a," % round(p, 6) for p in probs] if probs else None

    def lines() -> Iterator[bytes]:
        for lo in range(0, len(at_a), 4096):
            span = slice(lo, lo + 4096)
            a, b, k = at_a[span].tolist(), at_b[span].tolist(), at_score[span].tolist()
            prob = prob_cell[span] if prob_cell else repeat(b"", len(a))
            yield b"".join(
                [
                    b"%s%s%s%s%s%s"
                    % (id_cell[i], id_cell[j], score_cell[s], p, text_a[i], text_b[j])
                    for i, j, s, p in zip(a, b, k, prob, strict=True)
                ]
            )

    return write_csv_lines_atomic(path, header, lines())


def _coded(
    pairs: Sequence[tuple[Any, Any, float]],
) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`PairList.coded <embetter_core.dedupe.pair_list.PairList.coded>` for any list
    of ``(id_a, id_b, score)``: the distinct ids, each pair's two positions among them, and
    the scores."""
    if isinstance(pairs, PairList):
        return pairs.coded()
    where: dict[Any, int] = {}
    at_a = [where.setdefault(a, len(where)) for a, _, _ in pairs]
    at_b = [where.setdefault(b, len(where)) for _, b, _ in pairs]
    scores = np.array([float(s) for *_, s in pairs], dtype=np.float64)
    return list(where), np.array(at_a, dtype=np.int64), np.array(at_b, dtype=np.int64), scores


def ids_in_pairs(pairs: Sequence[tuple[Any, Any, float]]) -> set[Any]:
    """The distinct ids of ``pairs`` (a :class:`~embetter_core.dedupe.pair_list.PairList`
    answers from its arrays, without making a tuple per pair).

    >>> sorted(ids_in_pairs([("a", "b", 0.9), ("b", "c", 0.95)]))
    ['a', 'b', 'c']
    """
    if isinstance(pairs, PairList):
        return set(pairs.members())
    return {key for a, b, _ in pairs for key in (a, b)}


def _as_is(value: object) -> object:
    return value


def write_removed_csv(
    report: DuplicateReport,
    path: str | os.PathLike[str],
    texts: Texts = None,
    spreadsheet_safe: bool = False,
) -> Path:
    """Write one row per removed row: ``id, kept_id, similarity, cluster, exact``.

    ``kept_id`` is the kept row it duplicates, ``similarity`` their cosine (never empty),
    ``cluster`` its index in ``report.clusters``, ``exact`` (``true``/``false``) whether the
    two texts are identical (see :meth:`DuplicateReport.removed_frame`). Rows in input order.
    Ids are written as they are; with ``spreadsheet_safe`` one starting with ``=``, ``+``,
    ``-``, ``@``, tab or carriage return gets a leading ``'``, as in :func:`write_pairs_csv`.
    Returns the path.
    """
    frame = report.removed_frame(_lookup(report, texts))
    cell = safe_cell if spreadsheet_safe else _as_is
    rows = (
        [cell(r.id), cell(r.kept_id), r.similarity, r.cluster, "true" if r.exact else "false"]
        for r in frame.itertuples(index=False)
    )
    return write_csv_atomic(path, list(frame.columns), rows)


def _check_probabilities(
    report: DuplicateReport, probabilities: Sequence[float] | None
) -> list[float] | None:
    if probabilities is None:
        return None
    probs = [float(p) for p in probabilities]
    if len(probs) != len(report.pairs):
        raise ValueError(f"{len(probs)} probabilities for {len(report.pairs)} pairs")
    return probs


def top_pairs_table(
    report: DuplicateReport,
    texts: Texts,
    k: int = 20,
    max_chars: int = 200,
    probabilities: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """The ``k`` best pairs as a list of dicts (a Prefect table artifact), texts cut short.

    >>> import numpy as np
    >>> from embetter_core.dedupe import find_duplicates
    >>> report = find_duplicates(np.ones((3, 4)), threshold=0.9)
    >>> [(row["id_a"], row["id_b"]) for row in top_pairs_table(report, None, k=2)]
    [(0, 1), (0, 2)]
    """
    lookup = _lookup(report, texts)
    probs = _check_probabilities(report, probabilities)
    rows = []
    for i, (a, b, score) in enumerate(report.pairs[:k]):
        row: dict[str, Any] = {"id_a": a, "id_b": b, "score": score}
        if probs:
            row["probability"] = round(probs[i], 4)
        row.update(text_a=_text(lookup, a, max_chars), text_b=_text(lookup, b, max_chars))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------
def _recall_text(report: DuplicateReport) -> str:
    if report.method == "exact":
        return "1.0 (exact search)"
    sample = report.params.get("recall_sample", "?")
    if math.isnan(report.recall_estimate):
        return f"n/a (no duplicate pair among the {sample} rows checked exactly)"
    return f"{report.recall_estimate:.4f} (exact check of {sample} sampled rows)"


def _headline(report: DuplicateReport) -> list[tuple[str, str]]:
    s = report.summary()
    return [
        ("rows", f"{s['rows']:,}"),
        ("method", s["method"]),
        ("threshold", f"{s['threshold']:g}"),
        ("keep rule", s["keep"]),
        ("recall estimate", _recall_text(report)),
        ("duplicate pairs", f"{s['pairs']:,}"),
        ("clusters", f"{s['clusters']:,}"),
        ("largest cluster", f"{s['largest_cluster']:,}"),
        ("rows removed", f"{s['removed']:,}"),
        ("rows kept", f"{s['kept']:,}"),
        ("exact-duplicate groups", f"{s['exact_duplicate_groups']:,}"),
        ("rows in exact-duplicate groups", f"{s['exact_duplicate_rows']:,}"),
        ("zero vectors", f"{s['zero_vectors']:,}"),
        *_incremental_rows(report),
    ]


def incremental_text(report: DuplicateReport) -> str | None:
    """How an incremental dedupe ran (``report.params["incremental"]``): incremental, with
    its counts, or full and why; None for a report of a plain dedupe.

    >>> import numpy as np, tempfile, pathlib
    >>> from embetter_core.dedupe.incremental import find_duplicates_incremental
    >>> state = pathlib.Path(tempfile.mkdtemp()) / "v.dedupe-state.npz"
    >>> vecs = np.array([[1, 0], [0.96, 0.28], [0, 1], [0.05, 1]], dtype=np.float32)
    >>> first = find_duplicates_incremental(vecs[:3], state, ids=["a", "b", "c"], threshold=0.9)
    >>> incremental_text(first)  # doctest: +ELLIPSIS
    'full (no state at ... yet); state written for the next run'
    >>> report = find_duplicates_incremental(vecs, state, ids=list("abcd"), threshold=0.9)
    >>> incremental_text(report)
    'incremental: 1 new or edited rows (0 edited), 0 deleted, 0 rechecked; 1 candidate pairs \
reused'
    """
    run = report.params.get("incremental")
    if not run:
        return None
    if run["mode"] != "incremental":
        return f"full ({run.get('reason') or 'planned'}); state written for the next run"
    return (
        f"incremental: {run['fresh']:,} new or edited rows ({run['edited']:,} edited), "
        f"{run['deleted']:,} deleted, {run['rechecked']:,} rechecked; "
        f"{run['reused_pairs']:,} candidate pairs reused"
    )


def _incremental_rows(report: DuplicateReport) -> list[tuple[str, str]]:
    text = incremental_text(report)
    return [] if text is None else [("dedupe run", text)]


def _extra_rows(extra: dict[str, Any] | None) -> list[tuple[str, str]]:
    return [(str(k), str(v)) for k, v in (extra or {}).items()]


def markdown_summary(report: DuplicateReport, extra: dict[str, Any] | None = None) -> str:
    """A markdown summary (counts, method, recall estimate, ``extra``) for an artifact.

    >>> import numpy as np
    >>> from embetter_core.dedupe import find_duplicates
    >>> text = markdown_summary(find_duplicates(np.eye(3)), extra={"corpus": "demo.csv"})
    >>> "| duplicate pairs | 0 |" in text and "| corpus | demo.csv |" in text
    True
    """

    def cell(value: str) -> str:
        # Ids and texts come from the corpus: escape HTML (the Prefect UI renders it) and the
        # markdown that would make links, images, code or emphasis of them.
        value = html.escape(value, quote=False)
        return value.translate({ord(c): "\\" + c for c in "\\`*_[]|~"}).replace("\n", " ")

    lines = ["# Near-duplicate report", "", "| | |", "|---|---|"]
    lines += [f"| {cell(k)} | {cell(v)} |" for k, v in _headline(report) + _extra_rows(extra)]
    if report.clusters:
        lines += ["", "## Largest clusters", ""]
        for members in report.clusters[:5]:
            shown = ", ".join(str(m) for m in members[:8])
            more = f", … ({len(members) - 8} more)" if len(members) > 8 else ""
            kept = [m for m in members if m not in report.removed]
            named = ", ".join(cell(str(m)) for m in kept[:3])
            named += f" and {len(kept) - 3} more" if len(kept) > 3 else ""
            lines.append(f"- {len(members)} rows, kept {named}: {cell(shown)}{more}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------
def histogram_png(report: DuplicateReport, bins: int = 50) -> bytes:
    """A PNG histogram of each row's nearest-neighbour similarity, threshold marked (for a
    notebook or a file; ``report.html`` draws :func:`histogram_svg`, which needs no
    matplotlib)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = np.asarray(report.nearest, dtype=np.float64)
    values = values[np.isfinite(values)]
    fig = Figure(figsize=(7, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if len(values):
        ax.hist(values, bins=bins, color="#4c72b0")
    ax.axvline(report.threshold, color="#c44e52", linestyle="--", label="threshold")
    ax.set_xlabel("cosine similarity to the nearest other row")
    ax.set_ylabel("rows")
    ax.set_title(f"Nearest-neighbour similarity ({len(values):,} rows)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def histogram_svg(report: DuplicateReport, bins: int = 50) -> str:
    """An inline SVG histogram of each row's nearest-neighbour similarity, threshold marked
    (drawn from ``numpy.histogram``: no plotting library, so the report step stays fast).
    Each bar's ``<title>`` gives its range and count.

    >>> import numpy as np
    >>> from embetter_core.dedupe import find_duplicates
    >>> report = find_duplicates(np.array([[1, 0], [0.96, 0.28], [0, 1]]), threshold=0.9)
    >>> svg = histogram_svg(report, bins=4)
    >>> svg.startswith("<svg") and svg.count('class="bar"'), "threshold 0.9" in svg
    (2, True)
    """
    values = np.asarray(report.nearest, dtype=np.float64)
    values = values[np.isfinite(values)]
    width, height, left, right, top, bottom = 700, 320, 64, 16, 34, 46
    lo = float(min(values.min(), report.threshold)) if len(values) else report.threshold - 0.5
    hi = float(max(values.max(), report.threshold)) if len(values) else report.threshold + 0.5
    if hi - lo < 1e-6:
        lo, hi = lo - 0.01, hi + 0.01
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    peak = max(int(counts.max()) if len(counts) else 0, 1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(value: float) -> float:
        return left + (value - lo) / (hi - lo) * plot_w

    def y(count: float) -> float:
        return top + plot_h - count / peak * plot_h

    esc = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family="sans-serif" font-size="11">',
        f"<title>Nearest-neighbour similarity ({len(values):,} rows)</title>",
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">'
        f"Nearest-neighbour similarity ({len(values):,} rows)</text>",
    ]
    for count, start, end in zip(
        counts.tolist(), edges[:-1].tolist(), edges[1:].tolist(), strict=True
    ):
        if count:
            out.append(
                f'<rect class="bar" x="{x(start):.1f}" y="{y(count):.1f}" '
                f'width="{max(x(end) - x(start) - 0.5, 0.5):.1f}" '
                f'height="{top + plot_h - y(count):.1f}" fill="#4c72b0">'
                f"<title>{start:.4f}–{end:.4f}: {count:,} rows</title></rect>"
            )
    base = top + plot_h
    out.append(
        f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#333"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#333"/>'
    )
    for tick in np.linspace(lo, hi, 6).tolist():
        out.append(
            f'<text x="{x(tick):.1f}" y="{base + 15}" text-anchor="middle">{tick:.3g}</text>'
        )
    for tick in np.linspace(0, peak, 5).tolist():
        out.append(
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:,.0f}</text>'
        )
    at = x(report.threshold)
    out += [
        f'<line class="threshold" x1="{at:.1f}" y1="{top}" x2="{at:.1f}" y2="{base}" '
        'stroke="#c44e52" stroke-dasharray="5,4" stroke-width="1.5"/>',
        f'<text x="{at + 4:.1f}" y="{top + 10}" fill="#c44e52">'
        f"threshold {esc(f'{report.threshold:g}')}</text>",
        f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">'
        "cosine similarity to the nearest other row</text>",
        f'<text transform="translate(14 {top + plot_h / 2}) rotate(-90)" '
        'text-anchor="middle">rows</text>',
        "</svg>",
    ]
    return "".join(out)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.text { white-space: pre-wrap; max-width: 50em; font-size: 0.9em; }
.kept { font-weight: bold; }
"""


def _review_link(path: Path) -> str:
    """A link to the review page when one was written beside the report."""
    if not (path.parent / REVIEW_HTML).exists():
        return ""
    return (
        f'<p class="review"><a href="{REVIEW_HTML}">Choose the threshold and label pairs: '
        f"{REVIEW_HTML}</a></p>"
    )


def write_html(
    report: DuplicateReport,
    texts: Texts,
    path: str | os.PathLike[str],
    title: str = "Near-duplicate report",
    extra: dict[str, Any] | None = None,
    max_clusters: int = 20,
    max_members: int = 10,
    max_chars: int = 500,
    sections: Sequence[str] = (),
) -> Path:
    """Write a self-contained HTML page: counts, a similarity histogram (embedded PNG),
    method and recall estimate, ``extra``, the largest clusters and top pairs with their
    texts (HTML-escaped). ``sections``: ready-made (already escaped) HTML fragments added at
    the end of the page. Returns the path."""
    lookup = _lookup(report, texts)
    esc = html.escape

    def table(rows: list[tuple[str, str]]) -> str:
        body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
        return f"<table>{body}</table>"

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        _review_link(Path(path)),
        '<h2 id="counts">Counts</h2>',
        table(_headline(report)),
    ]
    if extra:
        parts += ['<h2 id="run">Run</h2>', table(_extra_rows(extra))]
    note = (
        "For the ann method a row's value is its best match among the rows it was compared with."
        if report.method == "ann"
        else ""
    )
    parts += [
        '<h2 id="histogram">Nearest-neighbour similarities</h2>',
        histogram_svg(report),
        f"<p>{esc(note)}</p>" if note else "",
        f'<h2 id="clusters">Largest clusters ({len(report.clusters):,} in all)</h2>',
    ]
    if not report.clusters:
        parts.append("<p>No duplicate clusters at this threshold.</p>")
    if report.clusters:
        parts.append(
            f"<p>Rows are taken in keep order ({esc(str(report.keep))}); a row is removed when "
            "it is a near-duplicate of a row already kept, so a cluster can keep several "
            "rows. Kept rows come first.</p>"
        )
    for number, members in enumerate(report.clusters[:max_clusters]):
        kept = [m for m in members if m not in report.removed]
        parts.append(
            f"<h3>Cluster {number + 1}: {len(members):,} rows, {len(kept):,} kept "
            f"<small>(cluster {number} in removed.csv)</small></h3><table>"
        )
        parts.append(
            "<tr><th>id</th><th>role</th><th>duplicate of</th><th>similarity</th><th>text</th></tr>"
        )
        shown = kept + [m for m in members if m in report.removed]
        for member in shown[:max_members]:
            if member in report.removed:
                of, score = report.removed[member]
                role, cells, cls = "removed", f"<td>{esc(str(of))}</td><td>{score:.4f}</td>", ""
            else:
                role, cells, cls = "kept", "<td></td><td></td>", ' class="kept"'
            parts.append(
                f"<tr{cls}><td>{esc(str(member))}</td><td>{role}</td>{cells}"
                f'<td class="text">{esc(_text(lookup, member, max_chars))}</td></tr>'
            )
        parts.append("</table>")
        if len(members) > max_members:
            parts.append(f"<p>… and {len(members) - max_members:,} more rows.</p>")
    top = top_pairs_table(report, texts, k=20, max_chars=max_chars)
    parts.append(f'<h2 id="pairs">Top pairs ({len(report.pairs):,} in all)</h2>')
    if top:
        parts.append(
            "<table><tr><th>id_a</th><th>id_b</th><th>score</th><th>text_a</th><th>text_b</th></tr>"
        )
        for row in top:
            parts.append(
                f"<tr><td>{esc(str(row['id_a']))}</td><td>{esc(str(row['id_b']))}</td>"
                f'<td>{row["score"]:.4f}</td><td class="text">{esc(row["text_a"])}</td>'
                f'<td class="text">{esc(row["text_b"])}</td></tr>'
            )
        parts.append("</table>")
    if report.exact_groups:
        parts.append(
            f'<h2 id="exact">Exact duplicates ({len(report.exact_groups):,} groups)</h2><ul>'
        )
        for group in report.exact_groups[:max_clusters]:
            shown = ", ".join(str(g) for g in group[:max_members])
            more = f" … ({len(group) - max_members} more)" if len(group) > max_members else ""
            parts.append(f"<li>{esc(shown + more)}</li>")
        parts.append("</ul>")
    if report.zero_vector_ids:
        shown = ", ".join(str(i) for i in report.zero_vector_ids[:50])
        parts.append(f'<h2 id="zero">Zero vectors (match nothing)</h2><p>{esc(shown)}</p>')
    parts += list(sections)
    parts.append("</body></html>\n")
    return write_atomic(path, "\n".join(p for p in parts if p))


# ----------------------------------------------------------------------------------------
# Against a reference set
# ----------------------------------------------------------------------------------------
def write_reference_csv(
    matches: ReferenceMatches,
    path: str | os.PathLike[str],
    texts: Mapping[Any, str] | None = None,
    reference_texts: Mapping[Any, str] | None = None,
    spreadsheet_safe: bool = False,
) -> Path:
    """Write every match against the reference as CSV: ``id, reference_id, score, text,
    reference_text`` (highest score first, as :attr:`ReferenceMatches.pairs`); a text column
    is empty where its texts are not given (a reference store holds no texts). Returns the
    path (written atomically). ``spreadsheet_safe``: as for :func:`write_pairs_csv`.

    >>> import numpy as np, tempfile, pathlib
    >>> from embetter_core.dedupe.reference import find_reference_duplicates
    >>> m = find_reference_duplicates(np.eye(2), np.eye(2), ids=["a", "b"], threshold=0.9)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "reference_pairs.csv"
    >>> print(write_reference_csv(m, out, {"a": "cat", "b": "dog"}).read_text().strip())
    id,reference_id,score,text,reference_text
    a,0,1.0,cat,
    b,1,1.0,dog,
    """
    cell = safe_cell if spreadsheet_safe else _as_is
    rows = (
        [cell(a), cell(r), score, cell(_text(texts, a)), cell(_text(reference_texts, r))]
        for a, r, score in matches.pairs
    )
    header = ["id", "reference_id", "score", "text", "reference_text"]
    return write_csv_atomic(path, header, rows)


def reference_facts(matches: ReferenceMatches, source: str) -> dict[str, str]:
    """The rows a report's run table shows about a search against the reference ``source``.

    >>> import numpy as np
    >>> from embetter_core.dedupe.reference import find_reference_duplicates
    >>> m = find_reference_duplicates(np.eye(3), np.eye(3)[:1], threshold=0.9)
    >>> reference_facts(m, "train.csv")["rows matching the reference"]
    '1 of 3 (1 pairs)'
    """
    s = matches.summary()
    return {
        "reference": source,
        "reference rows": f"{s['reference_rows']:,}",
        "rows matching the reference": f"{s['rows_matched']:,} of {s['rows']:,} "
        f"({s['matches']:,} pairs)",
    }


def reference_section(
    matches: ReferenceMatches,
    source: str,
    csv_path: str | os.PathLike[str],
    texts: Mapping[Any, str] | None = None,
    reference_texts: Mapping[Any, str] | None = None,
    max_rows: int = 20,
    max_chars: int = 500,
) -> str:
    """The report page's "Against the reference" section (an HTML fragment for
    :func:`write_html`'s ``sections``): counts, and the best ``max_rows`` matches with their
    texts.

    >>> import numpy as np
    >>> from embetter_core.dedupe.reference import find_reference_duplicates
    >>> m = find_reference_duplicates(np.eye(2), np.eye(2), ids=["a", "<b>"], threshold=0.9)
    >>> page = reference_section(m, "train.csv", "reference_pairs.csv")
    >>> "Against the reference" in page, "&lt;b&gt;" in page
    (True, True)
    """
    esc = html.escape
    s = matches.summary()
    recall = (
        "1.0 (exact search)"
        if matches.method == "exact"
        else f"{matches.recall_estimate:.4f} (exact check of a sample of rows)"
    )
    counts = [
        ("reference", source),
        ("reference rows", f"{s['reference_rows']:,}"),
        ("method", s["method"]),
        ("threshold", f"{s['threshold']:g}"),
        ("recall estimate", recall),
        ("pairs (row, reference row)", f"{s['matches']:,}"),
        ("rows matching the reference", f"{s['rows_matched']:,} of {s['rows']:,}"),
        ("reference rows matched", f"{s['reference_rows_matched']:,}"),
        ("every pair", str(csv_path)),
    ]
    parts = [
        '<h2 id="reference">Against the reference</h2>',
        "<p>Rows of this corpus with a near-duplicate in the reference (every reference row "
        "at or above the threshold, not only the best).</p>",
        "<table>"
        + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in counts)
        + "</table>",
    ]
    if not len(matches):
        parts.append("<p>No row matches the reference at this threshold.</p>")
        return "\n".join(parts)
    parts.append(
        f"<h3>Best {min(max_rows, len(matches)):,} of {len(matches):,} pairs</h3><table>"
        "<tr><th>id</th><th>reference id</th><th>score</th><th>text</th>"
        "<th>reference text</th></tr>"
    )
    for a, r, score in matches.pairs[:max_rows]:
        parts.append(
            f"<tr><td>{esc(str(a))}</td><td>{esc(str(r))}</td><td>{score:.4f}</td>"
            f'<td class="text">{esc(_text(texts, a, max_chars))}</td>'
            f'<td class="text">{esc(_text(reference_texts, r, max_chars))}</td></tr>'
        )
    parts.append("</table>")
    return "\n".join(parts)
