"""``review_floor``: the flow searches below its threshold so review.html's slider reaches
there, while pairs.csv and removed.csv stay those of the threshold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from flows.embed_corpus import EmbedParams, embed_corpus

SAMPLE = Path(__file__).resolve().parent.parent / "embetter_core/data/debian-sample.csv.gz"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("review-floor") / "debian.csv"
    pd.read_csv(SAMPLE, keep_default_na=False).head(600).to_csv(path, index=False)
    return path


def run(corpus: Path, out: Path, threshold: float, review_floor: float | None = None):
    return embed_corpus(
        input_path=str(corpus),
        id_column="package",
        encoder="static",
        threshold=threshold,
        review_floor=review_floor,
        output=str(out / "store.h5"),
        cache_dir=str(out.parent / "cache"),
        report_dir=str(out / "report"),
        dedupe_method="exact",
    )


def review_grid(report_dir: Path) -> dict:
    page = (report_dir / "review.html").read_text()
    (block,) = re.findall(r'<script type="application/json" id="review-data">(.*?)</script>', page)
    return json.loads(block)


def test_review_floor_reaches_below_the_threshold_and_changes_no_output(
    prefect_harness, corpus, tmp_path
):
    plain = run(corpus, tmp_path / "plain", 0.9)
    low = run(corpus, tmp_path / "low", 0.9, review_floor=0.8)
    at_085 = run(corpus, tmp_path / "at085", 0.85)
    for name in ("pairs.csv", "removed.csv"):
        assert (tmp_path / "plain/report" / name).read_bytes() == (
            tmp_path / "low/report" / name
        ).read_bytes()
    assert low.pairs == plain.pairs > 0 and low.removed == plain.removed

    data = review_grid(tmp_path / "low/report")
    assert data["floor"] == pytest.approx(0.8)
    assert review_grid(tmp_path / "plain/report")["floor"] == pytest.approx(0.9)
    by_threshold = {round(g["threshold"], 6): g for g in data["grid"]}
    below = by_threshold[0.85]  # what the slider shows at 0.85 is what a run at 0.85 writes
    assert (below["pairs"], below["removed"]) == (at_085.pairs, at_085.removed)
    assert below["pairs"] > plain.pairs
    removed = pd.read_csv(tmp_path / "at085/report/removed.csv", keep_default_na=False)
    assert len(removed) == below["removed"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"threshold": 0.8, "review_floor": 0.9}, "review_floor 0.9 is above the threshold 0.8"),
        ({"review_floor": 0.7, "incremental": True}, "cannot be combined with --incremental"),
        (
            {"encoder": "static", "rescore": "sentence", "review_floor": 0.5},
            "cannot be combined with --rescore",
        ),
        ({"review_floor": 0.0}, "greater than 0"),
    ],
)
def test_review_floor_refusals_name_the_option(extra, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        EmbedParams(**extra)
