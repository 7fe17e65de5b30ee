"""``review.html``: one self-contained page (inline script and styles, no server, no network)
for choosing a threshold and labelling pairs; see :mod:`embetter_core.review.data` for what
it holds. The data goes in as JSON in a ``<script type="application/json">`` element
(:func:`embed_json`), and the script puts every text into the page with ``textContent``.

>>> import numpy as np, tempfile, pathlib
>>> from embetter_core.dedupe import find_duplicates
>>> report = find_duplicates(np.ones((2, 2)), ids=["<script>", "b"], threshold=0.9)
>>> path = write_review(report, {"<script>": "x", "b": "y"}, pathlib.Path(tempfile.mkdtemp()))
>>> page = path.read_text()
>>> path.name, page.count("<script"), "\\\\u003cscript\\\\u003e" in page
('review.html', 2, True)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from embetter_core.dedupe.results import DuplicateReport
from embetter_core.files import write_atomic
from embetter_core.review.data import GRID_STEP, MAX_CHARS, review_data

#: The page's file name, beside ``report.html``.
REVIEW_HTML = "review.html"

_SURROGATE = re.compile("[\ud800-\udfff]")
# what could end the <script> element or start a comment in it, and JavaScript's two
# line terminators that JSON allows in strings: all as JSON escapes
_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _clean(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def embed_json(value: Any) -> str:
    """``value`` as JSON that is safe inside ``<script type="application/json">``: lone
    surrogates replaced by U+FFFD, and ``<``, ``>``, ``&``, U+2028 and U+2029 as escapes.

    >>> embed_json({"t": "</script><!-- \\u2028 & \\ud800"})
    '{"t":"\\\\u003c/script\\\\u003e\\\\u003c!-- \\\\u2028 \\\\u0026 \\ufffd"}'
    """
    text = json.dumps(_clean(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _UNSAFE[m.group()], text)


def _asset(name: str) -> str:
    return resources.files("embetter_core.review").joinpath(name).read_text(encoding="utf-8")


def render_review(data: Mapping[str, Any], title: str = "Review near-duplicate pairs") -> str:
    """The page for ``data`` (from :func:`~embetter_core.review.data.review_data`)."""
    import html

    return _PAGE.format(
        title=html.escape(title),
        css=_asset("review.css"),
        js=_asset("review.js"),
        data=embed_json(dict(data)),
    )


def write_review(
    report: DuplicateReport,
    texts: Mapping[Any, str] | None,
    folder: str | os.PathLike[str],
    *,
    kind: str = "text",
    facts: Mapping[str, Any] | None = None,
    step: float = GRID_STEP,
    per_band: int | None = None,
    max_chars: int = MAX_CHARS,
) -> Path:
    """Write ``review.html`` into ``folder`` (atomically) and return its path. ``texts`` maps
    ids to texts (for ``kind="image"``, to image paths); it needs at least the ids of the
    candidate pairs. See :func:`~embetter_core.review.data.review_data` for the rest."""
    data = review_data(
        report, texts, kind=kind, step=step, per_band=per_band, max_chars=max_chars, facts=facts
    )
    return write_atomic(Path(folder) / REVIEW_HTML, render_review(data))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style></head>
<body>
<h1>{title}</h1>
<p class="note">Beside <a href="report.html">report.html</a>. Move the slider to see what a
rerun at that threshold would decide; label the pairs shown, download the labels and train a
difference model on them (<code>python -m flows.train_difference labels.csv ...</code>).</p>
<noscript><p>This page needs JavaScript (it runs locally; nothing is sent anywhere).</p></noscript>
<div class="panel">
<section>
<h2><label for="slider">Threshold</label> <output id="t-value"></output></h2>
<input type="range" id="slider" min="0" step="1">
<table id="counts">
<tr><th>pairs</th><td id="c-pairs"></td></tr>
<tr><th>clusters</th><td id="c-clusters"></td></tr>
<tr><th>rows removed</th><td id="c-removed"></td></tr>
<tr><th>rows kept</th><td id="c-kept"></td></tr>
</table>
<p class="note">The same numbers as a rerun with <code id="rerun"></code>.</p>
<p class="note" id="sample-note"></p>
</section>
<section>
<h2>Labels</h2>
<p id="progress"></p>
<p><button type="button" id="download">Download labels (CSV)</button>
<button type="button" id="clear">Forget labels</button></p>
<p class="note" id="storage-note"></p>
<div id="metrics" hidden>
<p>The labels favour threshold <strong id="favoured"></strong> (F1 <span id="favoured-f1"></span>)
<button type="button" id="go-favoured">Go there</button></p>
<p class="note">Precision and recall over the candidate pairs, estimated from the labels: each
labelled pair stands for the pairs of its band (pairs there / pairs sampled there).</p>
<table><thead><tr><th>threshold</th><th>precision</th><th>recall</th><th>F1</th></tr></thead>
<tbody id="metrics-body"></tbody></table>
</div>
</section>
<section>
<details><summary><h2 class="inline">Run</h2></summary>
<table id="facts"></table></details>
</section>
</div>
<h2 id="band-title"></h2>
<p class="note" id="band-note"></p>
<div id="pair-list"></div>
<script type="application/json" id="review-data">{data}</script>
<script>{js}</script>
</body></html>
"""
