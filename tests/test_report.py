"""The report renderings: pairs.csv, report.html, the markdown summary, the top-pairs table."""

from __future__ import annotations

import copy
import csv
import io
import re

import numpy as np
import pytest
from PIL import Image

from embetter_core.dedupe import find_duplicates
from embetter_core.report import (
    histogram_png,
    histogram_svg,
    markdown_summary,
    top_pairs_table,
    write_html,
    write_pairs_csv,
    write_removed_csv,
)


@pytest.fixture
def report_and_texts():
    """40 rows: a cluster of 4, two pairs, one zero vector, the rest unrelated."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 32)).astype(np.float32)
    X[[1, 2, 3]] = X[0] + 0.05 * rng.standard_normal((3, 32))
    X[11] = X[10] + 0.05 * rng.standard_normal(32)
    X[21] = X[20]
    X[39] = 0.0
    ids = [f"pkg-{i}" for i in range(40)]
    texts = {i: f"description of {i}" for i in ids}
    texts["pkg-0"] = 'A <script>alert("x")</script> & "quoted", with commas'
    texts["pkg-1"] = "line one\nline two | with a pipe"
    texts["pkg-20"] = texts["pkg-21"] = "same text"
    report = find_duplicates(X, ids=ids, threshold=0.9, texts=texts)
    return report, texts


def test_pairs_csv_columns_and_rows(tmp_path, report_and_texts) -> None:
    report, texts = report_and_texts
    path = write_pairs_csv(report, texts, tmp_path / "out" / "pairs.csv")
    assert path == tmp_path / "out" / "pairs.csv"
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id_a", "id_b", "score", "text_a", "text_b"]
    assert len(rows) - 1 == len(report.pairs) == 6 + 1 + 1  # 4-cluster: 6 pairs
    for row, (a, b, score) in zip(rows[1:], report.pairs, strict=True):
        assert row[:2] == [a, b]
        assert float(row[2]) == pytest.approx(score)
        assert row[3:] == [texts[a], texts[b]]  # commas, quotes and newlines round-trip
    scores = [float(r[2]) for r in rows[1:]]
    assert scores == sorted(scores, reverse=True)
    assert [p.name for p in path.parent.iterdir()] == ["pairs.csv"]  # no temp file left


def test_removed_csv(tmp_path, report_and_texts) -> None:
    report, texts = report_and_texts
    path = write_removed_csv(report, tmp_path / "out" / "removed.csv", texts)
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "kept_id", "similarity", "cluster", "exact"]
    assert [r["id"] for r in rows] == [i for i in report.ids if i in report.removed]  # 5 rows
    assert len(rows) == len(report.removed) == 5
    pairs = {frozenset(p[:2]): p[2] for p in report.pairs}
    for row in rows:
        assert row["similarity"] != "" and float(row["similarity"]) >= 0.9  # never empty
        assert float(row["similarity"]) == pairs[frozenset((row["id"], row["kept_id"]))]
        assert row["kept_id"] not in report.removed
        assert row["id"] in report.clusters[int(row["cluster"])]
        assert row["kept_id"] in report.clusters[int(row["cluster"])]
    exact = {r["id"]: r["exact"] for r in rows}
    assert exact["pkg-21"] == "true" and exact["pkg-1"] == "false"  # same text / not
    assert [p.name for p in path.parent.iterdir()] == ["removed.csv"]
    # without texts: the exact-duplicate groups (here from the texts given to find_duplicates)
    assert write_removed_csv(report, tmp_path / "r2.csv").read_text() == path.read_text()
    empty = find_duplicates(np.eye(3, dtype=np.float32))
    assert write_removed_csv(empty, tmp_path / "e.csv").read_text() == (
        "id,kept_id,similarity,cluster,exact\n"
    )


def test_html_and_markdown_show_every_kept_row_of_a_chain(tmp_path) -> None:
    angle = np.arccos(0.95)
    vecs = np.array([[np.cos(k * angle), np.sin(k * angle)] for k in range(3)])
    report = find_duplicates(vecs, ids=["a", "b", "c"], threshold=0.9)
    assert report.selected == ["a", "c"]
    text = markdown_summary(report)
    assert "- 3 rows, kept a, c: a, b, c" in text and "| keep rule | first |" in text
    page = write_html(report, None, tmp_path / "r.html").read_text()
    assert "Cluster 1: 3 rows, 2 kept" in page
    assert "<td>b</td><td>removed</td><td>a</td><td>0.9500</td>" in page
    page = write_html(report, None, tmp_path / "s.html", sections=['<h2 id="x">X</h2>'])
    assert page.read_text().endswith('<h2 id="x">X</h2>\n</body></html>\n')


def test_pairs_csv_without_texts_or_with_a_sequence(tmp_path, report_and_texts) -> None:
    report, texts = report_and_texts
    bare = write_pairs_csv(report, None, tmp_path / "bare.csv").read_text().splitlines()
    assert bare[1].endswith(",,") and len(bare) == len(report.pairs) + 1
    seq = [texts[i] for i in report.ids]
    path = write_pairs_csv(report, seq, tmp_path / "seq.csv")
    assert path.read_text() == write_pairs_csv(report, texts, tmp_path / "map.csv").read_text()
    with pytest.raises(ValueError, match="texts has length 3 but the report has 40 rows"):
        write_pairs_csv(report, ["a", "b", "c"], tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_html_page(tmp_path, report_and_texts) -> None:
    report, texts = report_and_texts
    extra = {"corpus": "/data/<corpus>.csv", "cache hits / misses": "30 / 10"}
    path = write_html(report, texts, tmp_path / "report.html", title="Demo & co", extra=extra)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<title>Demo &amp; co</title>" in page
    # counts
    for label, value in [
        ("rows", "40"),
        ("method", "exact"),
        ("duplicate pairs", "8"),
        ("clusters", "3"),
        ("largest cluster", "4"),
        ("rows removed", "5"),
        ("rows kept", "35"),
        ("exact-duplicate groups", "1"),
        ("zero vectors", "1"),
        ("recall estimate", "1.0 (exact search)"),
    ]:
        assert f"<tr><th>{label}</th><td>{value}</td></tr>" in page, label
    # extra, escaped
    assert "<td>/data/&lt;corpus&gt;.csv</td>" in page and "30 / 10" in page
    # the inline histogram counts every finite nearest-neighbour value once
    assert page.count("<svg") == 1 and "data:image/png" not in page
    finite = int(np.isfinite(np.asarray(report.nearest, dtype=float)).sum())
    counted = sum(int(c.replace(",", "")) for c in re.findall(r": ([\d,]+) rows</title>", page))
    assert counted == finite
    # clusters with escaped texts; nothing executable slips through
    assert "Cluster 1: 4 rows" in page
    assert "A &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp;" in page
    assert "<script>" not in page
    assert "line one\nline two | with a pipe" in page
    assert "pkg-39" in page  # the zero vector is listed
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_html_for_an_empty_report_and_for_ann(tmp_path) -> None:
    empty = find_duplicates(np.eye(5, dtype=np.float32))
    page = write_html(empty, None, tmp_path / "empty.html").read_text()
    assert "No duplicate clusters at this threshold." in page
    assert "<tr><th>duplicate pairs</th><td>0</td></tr>" in page
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 16)).astype(np.float32)
    X[1:30] = X[0] + 0.01 * rng.standard_normal((29, 16))
    ann = find_duplicates(X, threshold=0.9, method="ann", recall_sample=100)
    page = write_html(ann, None, tmp_path / "ann.html").read_text()
    assert "<tr><th>method</th><td>ann</td></tr>" in page
    assert re.search(r"recall estimate</th><td>[01]\.\d{4} \(exact check of 100 sampled", page)


def test_histogram_svg_bars_and_threshold(report_and_texts) -> None:
    report, _ = report_and_texts
    svg = histogram_svg(report, bins=10)
    values = np.asarray(report.nearest, dtype=float)
    values = values[np.isfinite(values)]
    counts = [int(c) for c in re.findall(r": (\d+) rows</title></rect>", svg)]
    assert sum(counts) == len(values) and 0 < len(counts) <= 10
    # the tallest bar spans the plot's height; the threshold line lies inside the axis
    heights = [float(h) for h in re.findall(r'class="bar"[^>]*height="([\d.]+)"', svg)]
    assert max(heights) == pytest.approx(320 - 34 - 46)
    line = re.search(r'class="threshold" x1="([\d.]+)"', svg)
    assert line and 64 <= float(line.group(1)) <= 700 - 16
    assert f"threshold {report.threshold:g}" in svg


def test_histogram_marks_only_finite_values(report_and_texts) -> None:
    report, _ = report_and_texts
    png = histogram_png(report)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(png)).size == (700, 320)


def test_markdown_summary(report_and_texts) -> None:
    report, _ = report_and_texts
    text = markdown_summary(report, extra={"model": "minilm | v2", "skipped rows": 3})
    assert text.startswith("# Near-duplicate report\n")
    assert "| duplicate pairs | 8 |" in text and "| rows removed | 5 |" in text
    assert "| method | exact |" in text and "| recall estimate | 1.0 (exact search) |" in text
    assert "| model | minilm \\| v2 |" in text and "| skipped rows | 3 |" in text
    assert "- 4 rows, kept pkg-0: pkg-0, pkg-1, pkg-2, pkg-3" in text  # helper-10: no backticks


def test_top_pairs_table(report_and_texts) -> None:
    report, texts = report_and_texts
    table = top_pairs_table(report, texts, k=3, max_chars=20)
    assert len(table) == 3
    assert [(r["id_a"], r["id_b"], r["score"]) for r in table] == report.pairs[:3]
    assert all(set(r) == {"id_a", "id_b", "score", "text_a", "text_b"} for r in table)
    assert all(len(r["text_a"]) <= 20 for r in table)
    assert top_pairs_table(report, texts, k=100) == top_pairs_table(report, texts, k=8)


def test_report_of_real_minilm_vectors(tmp_path, sentence_encoder, texts) -> None:
    vecs = sentence_encoder.transform(texts)
    report = find_duplicates(vecs, texts=texts)
    page = write_html(report, texts, tmp_path / "report.html").read_text()
    assert "A fast embedding cache for text corpora." in page
    assert "<tr><th>exact-duplicate groups</th><td>1</td></tr>" in page
    rows = list(csv.reader(write_pairs_csv(report, texts, tmp_path / "p.csv").open()))
    assert rows[1][:2] == ["0", "3"] and float(rows[1][2]) == pytest.approx(1.0)


def test_pairs_csv_round_trip_with_tricky_texts_and_probabilities(tmp_path) -> None:
    texts = ["plain", 'say "hi", twice', "line\nbreak", "cr\ronly", "é 🙂 e\u0301", "=1+1", ""]
    ids = [f"id-{i}" if i else "=cmd" for i in range(len(texts))]
    report = find_duplicates(np.ones((len(texts), 4), dtype=np.float32), ids=ids, threshold=0.9)
    probs = [i / 100 for i in range(len(report.pairs))]
    text_of = dict(zip(ids, texts, strict=True))
    path = write_pairs_csv(report, text_of, tmp_path / "p.csv", probs)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(report.pairs) == 21
    for row, (a, b, score), prob in zip(rows, report.pairs, probs, strict=True):
        assert (row["id_a"], row["id_b"], float(row["score"])) == (a, b, score)
        assert (row["text_a"], row["text_b"]) == (text_of[a], text_of[b])
        assert float(row["probability"]) == prob
    safe = write_pairs_csv(report, text_of, tmp_path / "s.csv", spreadsheet_safe=True)
    with open(safe, newline="", encoding="utf-8") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert "'=cmd" in cells and "'=1+1" in cells and "=cmd" not in cells


def test_pairs_csv_from_a_pair_list_and_from_tuples_is_the_same(tmp_path) -> None:
    """The writer makes each id's cells and each distinct score once and looks them up by
    position: the file must hold every pair's own ids, score and texts, in order, whether
    the pairs come as a search's PairList or as plain tuples."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((30, 8)).astype(np.float32)
    X = np.vstack([base, base + 0.05 * rng.standard_normal((30, 8)).astype(np.float32)])
    ids = [f"r{i:02d}" for i in range(len(X))]
    report = find_duplicates(X, ids=ids, threshold=0.5, method="exact")
    assert type(report.pairs).__name__ == "PairList" and len(report.pairs) > 50
    assert len({s for *_, s in report.pairs}) > 20  # many distinct scores
    texts = {key: f'text "{key}", {len(key) * "é"}' for key in ids}
    as_tuples = copy.copy(report)
    as_tuples.pairs = list(report.pairs)
    probs = rng.random(len(report.pairs)).tolist()
    one = write_pairs_csv(report, texts, tmp_path / "one.csv", probs).read_bytes()
    two = write_pairs_csv(as_tuples, texts, tmp_path / "two.csv", probs).read_bytes()
    assert one == two
    rows = list(csv.DictReader(io.StringIO(one.decode("utf-8"))))
    got = [(r["id_a"], r["id_b"], float(r["score"]), r["text_a"], r["text_b"]) for r in rows]
    assert got == [(a, b, s, texts[a], texts[b]) for a, b, s in report.pairs]
    assert [float(r["probability"]) for r in rows] == [round(p, 6) for p in probs]
