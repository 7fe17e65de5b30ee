"""review.html at scale: its write time, its size and the slider's response in Chromium.

    python -m benchmarks.review_page [--rows 1000000] [--pairs 6000000] [--store STORE.h5]
                                     [--threshold 0.91] [--no-browser]

Without ``--store``: a synthetic 1M-row run (``--rows``) whose ``--pairs`` candidate pairs
form clusters of 2 to 12 rows, scored from the floor (``--threshold``) to 1.0, every text
2,000 characters (the most the page holds of one): the page's worst case. With ``--store``
(e.g. the one ``benchmarks.static_flow`` or a run with ``--encoder static`` on the Debian
corpus writes): that store searched as the flow does (``floor=threshold``), the texts from
``benchmarks.data.DEBIAN``.

Prints the seconds ``write_review`` takes against one decision at the run's threshold
(``rethreshold``, the baseline in the same process), the page's size, and, in headless
Chromium, the slowest slider move over every grid point (from the input event to the
layout of the new counts and pairs).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from embetter_core.dedupe import Candidates, DuplicateReport, find_duplicates
from embetter_core.review import write_review

WORDS = ["package", "tool", "library", "data", "file", "system", "network", "python", "module"]


def synthetic(rows: int, pairs: int, floor: float, seed: int = 0) -> DuplicateReport:
    """A report over ``rows`` rows with about ``pairs`` candidate pairs inside clusters."""
    rng = np.random.default_rng(seed)
    a_parts, b_parts, made, start = [], [], 0, 0
    while made < pairs and start < rows - 12:
        size = int(rng.integers(2, 13))
        members = np.arange(start, start + size)
        a, b = np.triu_indices(size, 1)
        a_parts.append(members[a])
        b_parts.append(members[b])
        made += len(a)
        start += size + int(rng.integers(0, 4))
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    scores = np.sort(rng.uniform(floor, 1.0, len(a)).astype(np.float32))[::-1]
    order = rng.permutation(len(a))  # scores unrelated to the cluster layout
    cand = Candidates(a=a[order], b=b[order], scores=scores, rank=np.arange(rows), floor=floor)
    return DuplicateReport.from_candidates(range(rows), cand, floor)


def texts_for(report: DuplicateReport) -> dict:
    rng = np.random.default_rng(1)
    words = np.array(WORDS)

    class Texts(dict):  # every id's text made on demand: 1M texts of 2,000 characters
        def get(self, key, default=None):
            picked = words[rng.integers(0, len(words), 300)]
            return " ".join(picked.tolist())[:2000]

    return Texts()


def slowest_slider_ms(page_path: Path) -> tuple[float, int]:
    from playwright.sync_api import sync_playwright

    from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(page_path.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=120_000)
        times = page.evaluate(
            """() => {
            const slider = document.getElementById("slider");
            const out = [];
            for (let i = Number(slider.max); i >= 0; i--) {
              const t0 = performance.now();
              slider.value = String(i);
              slider.dispatchEvent(new Event("input"));
              void document.body.offsetHeight;  // layout included
              out.push(performance.now() - t0);
            }
            return out;
        }"""
        )
        browser.close()
    return max(times), len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=6_000_000)
    parser.add_argument("--store", default=None)
    parser.add_argument("--threshold", type=float, default=0.91)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()}")
    t0 = time.perf_counter()
    if args.store:
        import pandas as pd

        from benchmarks.data import DEBIAN
        from embetter_core.store import EmbeddingStore

        with EmbeddingStore.open(args.store) as st:
            report = find_duplicates(
                st.dataset, ids=st.ids, threshold=args.threshold, floor=args.threshold
            )
        frame = pd.read_csv(DEBIAN, dtype=str, keep_default_na=False)
        texts: dict = dict(zip(frame["id"], frame["text"], strict=True))
        what = f"store {args.store}"
    else:
        report = synthetic(args.rows, args.pairs, args.threshold)
        texts = texts_for(report)
        what = "synthetic clusters, 2,000-character texts"
    print(f"{what}: {report.n:,} rows, {len(report.candidates):,} candidate pairs "
          f"(set up in {time.perf_counter() - t0:.1f} s)")  # fmt: skip

    t0 = time.perf_counter()
    report.rethreshold(args.threshold)
    baseline = time.perf_counter() - t0
    folder = Path(tempfile.mkdtemp(prefix="review-bench-"))
    t0 = time.perf_counter()
    page = write_review(report, texts, folder)
    seconds = time.perf_counter() - t0
    size = page.stat().st_size / 2**20
    print(f"one decision (rethreshold at {args.threshold:g}), the baseline: {baseline:.2f} s")
    print(f"write_review: {seconds:.2f} s ({seconds / baseline:.2f}x the baseline)")
    print(f"review.html: {size:.2f} MiB (target < 25 MiB: {'PASS' if size < 25 else 'FAIL'})")
    if not args.no_browser:
        slowest, moves = slowest_slider_ms(page)
        verdict = "PASS" if slowest < 200 else "FAIL"
        print(
            f"slider in Chromium: slowest of {moves} moves {slowest:.1f} ms "
            f"(target < 200 ms: {verdict})"
        )
    print(f"load after: {os.getloadavg()}; page kept at {page}")


if __name__ == "__main__":
    main()
