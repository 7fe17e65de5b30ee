"""The README's screenshots of review.html, taken in headless Debian Chromium (Playwright).

    python docs/screenshots.py REVIEW_HTML [--out docs]

Opens the page in a fresh profile, shows it at its run's threshold (``review-start.png``),
then labels a few pairs with the keyboard (the top bands duplicates, the lowest not), moves
the slider to 0.95 and takes ``review-0.95.png``. The README's come from a static-encoder run
on the 63,482 Debian descriptions (threshold 0.91).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("review_html", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--threshold", default="0.95")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1500},
        )  # fmt: skip
        page = context.new_page()
        page.goto(args.review_html.resolve().as_uri())
        page.wait_for_selector("body[data-ready='1']")
        page.screenshot(path=str(args.out / "review-start.png"))
        grid = page.evaluate("JSON.parse(document.getElementById('review-data').textContent)")
        points = [g["threshold"] for g in grid["grid"]]

        def move(index: int) -> None:
            page.focus("#slider")
            page.keyboard.press("Home")
            for _ in range(index):
                page.keyboard.press("ArrowRight")

        for index, key in [(len(points) - 1, "d"), (len(points) - 3, "d"), (0, "n")]:
            move(index)
            for _ in range(4):
                page.keyboard.press(key)
        move(points.index(float(args.threshold)))
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(args.out / f"review-{args.threshold}.png"))
        context.close()


if __name__ == "__main__":
    main()
