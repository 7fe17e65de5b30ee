"""review.html in a real browser, and the loop it closes: a run on ~250 Debian descriptions
(MiniLM, threshold 0.8) writes the page; headless Debian Chromium (Playwright, as in
``tests/test_ui_browser.py``) moves its slider to three thresholds and the counts shown are
checked against what the flow decides there (a CLI rerun with ``--threshold 0.9``, and the
flow's dedupe task at 0.85 and 0.95); pairs are labelled with the keyboard, the page
reloaded (the labels stay), the labels downloaded, a difference model trained on them with
``python -m flows.train_difference`` and the flow run with ``difference_model``.
Skips only when ``/usr/bin/chromium`` is missing (``make browser``).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows.embed_corpus import embed_corpus
from tasks.dedupe import find_duplicates_in_store
from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS, QUIET

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DEBIAN = Path("/work/shared/data/debian-descriptions.csv.gz")
NASTY_ID = "<script>window.pwnedId=1</script>\"'\u202e"
NASTY_TEXT = "<script>window.pwned = 1</script> Shows <b>bold</b> & quotes \" ' as text"


def small_debian(path: Path) -> Path:
    """~250 rows: the packages of 90 Debian sources with 2 to 4 packages each (siblings share
    wording, so pairs form at every threshold), plus two rows whose id and text are markup."""
    from flows.embed_corpus import DEMO_CORPUS

    source = DEBIAN if DEBIAN.exists() else Path(DEMO_CORPUS)
    with gzip.open(source, "rt") if source.suffix == ".gz" else open(source) as handle:
        frame = pd.read_csv(handle, dtype=str, keep_default_na=False)
    sizes = frame.groupby("source")["id" if "id" in frame else "package"].transform("size")
    picked = frame[(sizes >= 2) & (sizes <= 4)]
    picked = picked[picked["source"].isin(picked["source"].drop_duplicates().head(90))]
    rows = pd.DataFrame({"id": picked.get("id", picked["package"]), "text": picked["text"]})
    nasty = pd.DataFrame(
        {"id": [NASTY_ID, "plain-twin"], "text": [NASTY_TEXT, NASTY_TEXT + " too"]}
    )
    pd.concat([rows, nasty]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def api_url(prefect_harness) -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def cli(args: list[str], api_url: str, home: Path) -> str:
    env = {**os.environ, **QUIET, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def summary_artifact(api_url: str) -> str:
    """The newest run summary (markdown) on the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        (latest,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["embed-corpus-summary"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return str(latest.data)


def shown_counts(page) -> dict[str, int]:
    return {
        name: int(page.text_content(f"#c-{name}").replace(",", ""))
        for name in ("pairs", "clusters", "removed", "kept")
    }


def move_slider(page, index: int) -> None:
    """The slider to grid point ``index`` with the keyboard, as a person would."""
    page.focus("#slider")
    page.keyboard.press("Home")
    for _ in range(index):
        page.keyboard.press("ArrowRight")


def test_review_page_slider_labels_and_the_difference_model(api_url, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium: run `make browser`")
    from playwright.sync_api import sync_playwright

    corpus = small_debian(tmp_path / "debian-small.csv")
    n_rows = len(pd.read_csv(corpus, dtype=str, keep_default_na=False))
    run = {
        "input_path": str(corpus),
        "id_column": "id",
        "cache_dir": str(tmp_path / "cache"),
        "chunk_size": 64,
    }
    first = embed_corpus(
        **run, output=str(tmp_path / "a.h5"), report_dir=str(tmp_path / "a"), threshold=0.8
    )
    review = Path(first.review_html)
    assert review == tmp_path / "a" / "review.html" and review.exists()
    assert 'href="review.html"' in (tmp_path / "a" / "report.html").read_text()
    assert str(review) in summary_artifact(api_url).replace("\\", "")  # markdown escapes _

    # the counts at three thresholds: a real rerun at 0.9, the flow's dedupe task at the others
    rerun = cli(
        ["flows.embed_corpus", str(corpus), "--id-column", "id", "--threshold", "0.9",
         "--output", str(tmp_path / "b.h5"), "--report-dir", str(tmp_path / "b"),
         "--cache-dir", run["cache_dir"], "--chunk-size", "64", "--no-progress"],
        api_url, tmp_path / "home",
    )  # fmt: skip
    summary = re.search(r"(\d+) pairs in (\d+) clusters", rerun)
    removed = re.search(r"removed: .*\((\d+) rows\)", rerun)
    assert summary and removed, rerun
    expected = {
        0.9: {
            "pairs": int(summary[1]),
            "clusters": int(summary[2]),
            "removed": int(removed[1]),
            "kept": n_rows - int(removed[1]),
        }
    }
    assert len(pd.read_csv(tmp_path / "b" / "pairs.csv")) == expected[0.9]["pairs"]
    for t in (0.85, 0.95):
        s = find_duplicates_in_store.fn(first.store_path, t, "auto", "first", None, floor=t)
        expected[t] = {k: s.summary()[k] for k in ("pairs", "clusters", "removed", "kept")}
    assert len({e["pairs"] for e in expected.values()}) == 3  # three different decisions

    profile = tmp_path / "chromium-profile"
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1300, "height": 1000},
            accept_downloads=True,
        )
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(review.as_uri())
        page.wait_for_selector("body[data-ready='1']")
        data = json.loads(page.text_content("#review-data"))
        grid = [g["threshold"] for g in data["grid"]]
        assert grid[0] == 0.8 and grid[-1] == 1.0 and data["start"] == 0
        assert shown_counts(page) == {
            "pairs": first.pairs,
            "clusters": first.clusters,
            "removed": first.removed,
            "kept": n_rows - first.removed,
        }
        for t in (0.85, 0.9, 0.95):
            move_slider(page, grid.index(t))
            assert page.text_content("#t-value") == str(t)
            assert shown_counts(page) == expected[t], t
            page.screenshot(path=str(tmp_path / f"review-{t}.png"))

        # markup in ids and texts is text: shown as written, never run
        (nasty,) = [p for p in data["pairs"] if NASTY_ID in (p["a"], p["b"])]
        move_slider(page, nasty["band"])
        card = page.locator(".pair").filter(has_text=NASTY_TEXT).first
        assert card.locator("bdi").first.text_content() in (NASTY_ID, "plain-twin")
        assert page.evaluate("[window.pwned, window.pwnedId]") == [None, None]
        assert page.locator("#pair-list b, #pair-list script").count() == 0

        # label with the keyboard: the top bands duplicates, the lowest not
        labelled = {"1": 0, "0": 0}
        bands = sorted({p["band"] for p in data["pairs"]})
        for band, label in [(b, "1") for b in bands[::-1][:3]] + [(b, "0") for b in bands[:3]]:
            move_slider(page, band)
            for _ in range(min(3, page.locator(".pair").count())):
                page.keyboard.press("d" if label == "1" else "n")
                labelled[label] += 1
        total = labelled["1"] + labelled["0"]
        assert labelled["1"] >= 4 and labelled["0"] >= 4, labelled
        progress = f"{total} labelled, {labelled['1']} duplicates"
        assert page.text_content("#progress").startswith(progress)

        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        assert page.text_content("#progress").startswith(progress)  # kept in localStorage
        assert page.is_visible("#metrics")
        favoured = float(page.text_content("#favoured"))
        table = [r.split("\t") for r in page.locator("#metrics-body tr").all_inner_texts()]
        with page.expect_download() as download:
            page.click("#download")
        labels_csv = tmp_path / "labels.csv"
        download.value.save_as(labels_csv)
        assert errors == []
        context.close()

    labels = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    assert list(labels.columns) == ["id_a", "id_b", "score", "text_a", "text_b", "label"]
    assert len(labels) == total and (labels["label"] == "1").sum() == labelled["1"]
    text_of = dict(pd.read_csv(corpus, dtype=str, keep_default_na=False).values)
    limit = data["max_chars"]

    def cut(text: str) -> str:
        return text if len(text) <= limit else text[: limit - 1] + "…"

    for row in labels.itertuples():
        assert (row.text_a, row.text_b) == (cut(text_of[row.id_a]), cut(text_of[row.id_b]))

    # the page's precision / recall / F1: each label weighted by its band's pairs / sample
    band_of = {(p["a"], p["b"]): p["band"] for p in data["pairs"]}
    bands = [band_of[(a, b)] for a, b in zip(labels["id_a"], labels["id_b"], strict=True)]
    weight = [data["grid"][b]["band_pairs"] / data["grid"][b]["band_sampled"] for b in bands]
    truth = (labels["label"] == "1").tolist()
    f1s = []
    for number, row in enumerate(table):
        said = [b >= number for b in bands]
        tp = sum(w for w, y, p in zip(weight, truth, said, strict=True) if y and p)
        fp = sum(w for w, y, p in zip(weight, truth, said, strict=True) if p and not y)
        fn = sum(w for w, y, p in zip(weight, truth, said, strict=True) if y and not p)
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn)
        f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
        assert float(row[0].lstrip("▶ ")) == grid[number]
        assert row[1] == ("—" if precision is None else f"{precision:.3f}"), (row, precision)
        assert (row[2], row[3]) == (f"{recall:.3f}", f"{f1:.3f}"), row
        f1s.append(round(f1, 9))
    tied = [i for i, f in enumerate(f1s) if f == max(f1s)]
    assert favoured == grid[tied[(len(tied) - 1) // 2]]

    model = tmp_path / "model.skops"
    cli(
        ["flows.train_difference", str(labels_csv), "--text-a", "text_a", "--text-b", "text_b",
         "--label", "label", "--output", str(model), "--cache-dir", str(tmp_path / "cache-train")],
        api_url, tmp_path / "home",
    )  # fmt: skip
    assert model.exists()
    decided = embed_corpus(
        **run,
        output=str(tmp_path / "c.h5"),
        report_dir=str(tmp_path / "c"),
        threshold=0.8,
        difference_model=str(model),
        min_probability=0.5,
    )
    pairs = pd.read_csv(decided.pairs_csv)  # the pairs the model calls duplicates
    assert len(pairs) <= first.pairs and (pairs["probability"] >= 0.5).all()
    assert decided.pairs == len(pairs)
    assert Path(decided.review_html).exists()
