"""review.html's data and page: the counts at the slider's thresholds are a report's at those
thresholds, the pairs are sampled per band, and nothing from the corpus becomes HTML."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from embetter_core.dedupe import DuplicateReport, find_duplicates
from embetter_core.report import write_html
from embetter_core.review import embed_json, review_data, threshold_grid, write_review


def clustered(n: int = 400, d: int = 16, seed: int = 0) -> np.ndarray:
    """Vectors around 60 centres, so pairs, chains and clusters form at many thresholds."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(60, d))
    spread = rng.uniform(0.03, 0.4, size=(n, 1))  # tight and loose members
    vecs = centres[rng.integers(0, 60, n)] + spread * rng.normal(size=(n, d))
    return vecs.astype(np.float32)


def headline(report: DuplicateReport) -> dict[str, int]:
    s = report.summary()
    return {k: s[k] for k in ("pairs", "clusters", "removed", "kept")}


@pytest.mark.parametrize("keep", ["first", "last", "longest"])
def test_counts_at_each_threshold_are_the_report_at_it(keep):
    vecs = clustered()
    ids = [f"r{i:03d}" for i in range(len(vecs))]
    texts = [f"text {'x' * (i % 7)} {i}" for i in range(len(vecs))]
    report = find_duplicates(
        vecs, ids=ids, threshold=0.9, floor=0.8, keep=keep, keep_values=texts, method="exact"
    )
    grid = [0.8, 0.83, 0.85, 0.9, 0.925, 0.95, 0.99, 1.0]
    counts = report.counts_at(grid)
    assert [c["threshold"] for c in counts] == grid
    for t, got in zip(grid, counts, strict=True):
        fresh = find_duplicates(
            vecs, ids=ids, threshold=t, floor=t, keep=keep, keep_values=texts, method="exact"
        )
        assert {k: got[k] for k in ("pairs", "clusters", "removed", "kept")} == headline(fresh)
        assert headline(report.rethreshold(t)) == headline(fresh)
    assert counts[0]["pairs"] > counts[3]["pairs"] > counts[-2]["pairs"] > 0  # the grid matters
    assert len({c["removed"] for c in counts}) > 4


def test_counts_follow_pairs_a_difference_model_dropped():
    report = find_duplicates(clustered(seed=1), threshold=0.85, floor=0.85, method="exact")
    kept = report.keep_pairs(np.arange(len(report.pairs)) % 3 != 0)
    for t, got in zip([0.85, 0.9, 0.95], kept.counts_at([0.85, 0.9, 0.95]), strict=True):
        again = DuplicateReport.from_candidates(report.ids, kept.candidates, t)
        assert got["pairs"] == len(again.pairs) and got["removed"] == len(again.removed)
        assert got["clusters"] == len(again.clusters)


def test_grid_holds_floor_threshold_and_steps():
    assert threshold_grid(0.9, step=0.025) == [0.9, 0.925, 0.95, 0.975, 1.0]
    assert threshold_grid(0.8, 0.8123, step=0.1) == [0.8, 0.8123, 0.9, 1.0]
    assert len(threshold_grid(-1.0)) <= 101 and threshold_grid(-1.0)[0] == -1.0
    with pytest.raises(ValueError, match="floor must be in"):
        threshold_grid(1.5)


def test_pairs_are_sampled_per_band_and_every_pair_counted():
    vecs = clustered(n=600, seed=2)
    report = find_duplicates(vecs, threshold=0.9, floor=0.8, method="exact")
    texts = {i: f"row {i}" for i in report.ids}
    data = review_data(report, texts, step=0.02, per_band=5)
    grid = data["grid"]
    assert [g["threshold"] for g in grid] == threshold_grid(0.8, 0.9, 0.02)
    assert grid[data["start"]]["threshold"] == 0.9
    assert sum(g["band_pairs"] for g in grid) == len(report.candidates)
    for number, g in enumerate(grid):
        band = [p for p in data["pairs"] if p["band"] == number]
        assert len(band) == g["band_sampled"] == min(5, g["band_pairs"])
        upper = grid[number + 1]["threshold"] if number + 1 < len(grid) else 2.0
        assert all(g["threshold"] <= p["s"] < upper + 1e-6 for p in band), band
        assert all(p["ta"] == f"row {int(p['a'])}" for p in band)
    assert review_data(report, texts, step=0.02, per_band=5)["pairs"] == data["pairs"]  # seeded


def test_long_texts_are_cut():
    report = find_duplicates(np.ones((2, 3), dtype=np.float32), ids=["a", "b"], threshold=0.9)
    data = review_data(report, {"a": "x" * 50, "b": "short"}, max_chars=10)
    assert [(p["ta"], p["tb"]) for p in data["pairs"]] == [("x" * 9 + "…", "short")]


NASTY_ID = '</script><script>alert("id")</script>\u202e\'"'
NASTY_TEXT = "<script>window.pwned = 1</script> & <!-- \u2028\u2029 \ud800 lone \udfff"


def data_block(page: str) -> str:
    found = re.findall(r'<script type="application/json" id="review-data">(.*?)</script>', page)
    assert len(found) == 1
    return found[0]


def test_page_escapes_ids_and_texts(tmp_path):
    report = find_duplicates(
        np.array([[1, 0], [0.99, 0.14], [0, 1]], dtype=np.float32),
        ids=[NASTY_ID, "plain", "other"],
        threshold=0.9,
    )
    texts = {NASTY_ID: NASTY_TEXT, "plain": "a <b>bold</b> text", "other": "x"}
    page = write_review(report, texts, tmp_path, facts={"corpus": "<i>c.csv</i>"}).read_text()
    # the page's own two script elements, and nothing from the data opens or closes one
    assert page.count("<script") == 2 and page.count("</script>") == 2
    block = data_block(page)
    assert not set(block) & set("<>&\u2028\u2029")
    data = json.loads(block)
    (pair,) = data["pairs"]
    assert {pair["a"], pair["b"]} == {NASTY_ID, "plain"}
    nasty = pair["ta"] if pair["a"] == NASTY_ID else pair["tb"]
    assert nasty == NASTY_TEXT.replace("\ud800", "\ufffd").replace("\udfff", "\ufffd")
    assert data["facts"]["corpus"] == "<i>c.csv</i>"
    page.encode("utf-8")  # no lone surrogate left: it encodes


def test_embed_json_round_trips_what_it_can():
    value = {"k\ud83d": ["</SCRIPT>", "a&b", 1.5, None, "\u2028"]}
    assert json.loads(embed_json(value)) == {"k\ufffd": ["</SCRIPT>", "a&b", 1.5, None, "\u2028"]}


def test_image_pairs_carry_thumbnails(tmp_path):
    from PIL import Image

    paths = []
    for i in range(2):
        path = tmp_path / f"im{i}.png"
        Image.new("RGB", (400, 300), (200, 10 * i, 0)).save(path)
        paths.append(str(path))
    report = find_duplicates(np.ones((2, 2), dtype=np.float32), ids=["a", "b"], threshold=0.9)
    data = review_data(report, {"a": paths[0], "b": paths[1]}, kind="image")
    (pair,) = data["pairs"]
    assert pair["ia"].startswith("data:image/jpeg;base64,") and pair["ta"] == paths[0]
    assert pair["ib"].startswith("data:image/jpeg;base64,")


def test_report_links_the_review_page_beside_it(tmp_path):
    report = find_duplicates(np.eye(2, dtype=np.float32), threshold=0.9)
    assert (
        'href="review.html"' not in write_html(report, None, tmp_path / "report.html").read_text()
    )
    write_review(report, None, tmp_path)
    assert 'href="review.html"' in write_html(report, None, tmp_path / "report.html").read_text()


def test_a_run_without_pairs_still_gets_a_page(tmp_path):
    report = find_duplicates(np.eye(3, dtype=np.float32), ids=["a", "b", "c"], threshold=0.9)
    data = json.loads(data_block(write_review(report, None, tmp_path).read_text()))
    assert data["pairs"] == [] and {g["pairs"] for g in data["grid"]} == {0}
    assert {g["kept"] for g in data["grid"]} == {3}
