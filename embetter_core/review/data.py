"""What ``review.html`` shows, computed in Python: the decision's counts at a grid of
thresholds (exact: the same decision as a rerun at that threshold), and a sample of pairs
per similarity band (the band between two grid points), with their texts.

The page's slider snaps to the grid, so every count it shows is one computed here. What is
sampled: at most ``per_band`` pairs of each band (seeded, so a rerun on the same data
samples the same pairs); every other number is over all the candidate pairs.

>>> import numpy as np
>>> from embetter_core.dedupe import find_duplicates
>>> vecs = np.array([[1, 0], [0.96, 0.28], [0.9, 0.44], [0, 1]], dtype=np.float32)
>>> report = find_duplicates(vecs, ids=["a", "b", "c", "d"], threshold=0.9, floor=0.85)
>>> data = review_data(report, {"a": "cat", "b": "cats", "c": "a cat"}, step=0.05)
>>> [(g["threshold"], g["pairs"], g["removed"]) for g in data["grid"]]
[(0.85, 3, 2), (0.9, 2, 1), (0.95, 2, 1), (1.0, 0, 0)]
>>> data["start"], [(p["a"], p["b"], p["band"]) for p in data["pairs"]]
(1, [('b', 'c', 2), ('a', 'b', 2), ('a', 'c', 0)])
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from embetter_core.dedupe.results import DuplicateReport

#: Grid step of the threshold slider; doubled until the grid has at most ``MAX_POINTS``.
GRID_STEP = 0.005
MAX_POINTS = 101
#: Pairs sampled per band (text corpora), and for image corpora (their thumbnails weigh more).
PER_BAND = 20
PER_BAND_IMAGES = 6
#: A text longer than this is cut (the page, and the labels file, hold the cut text).
MAX_CHARS = 2000
THUMBNAIL_PX = 160


def threshold_grid(
    floor: float, threshold: float | None = None, step: float = GRID_STEP
) -> list[float]:
    """The slider's thresholds: ``floor``, ``threshold`` (the run's, when given) and every
    multiple of ``step`` between them and 1.0, ascending; ``step`` doubles until there are at
    most :data:`MAX_POINTS`.

    >>> threshold_grid(0.91, step=0.01)
    [0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0]
    >>> threshold_grid(0.887, 0.9, step=0.05)
    [0.887, 0.9, 0.95, 1.0]
    >>> threshold_grid(0.9000001, step=0.05)  # the floor as it is: a rerun's threshold
    [0.9000001, 0.95, 1.0]
    """
    if not -1.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [-1, 1], got {floor}")
    while (1.0 - floor) / step > MAX_POINTS - 1:
        step *= 2
    first = math.ceil(round(floor / step, 9))
    last = math.floor(round(1.0 / step, 9))
    given = [float(floor)] + ([] if threshold is None else [float(threshold)])
    steps = [round(k * step, 6) for k in range(first, last + 1)] + [1.0]
    # floor and threshold as they are (both valid thresholds), the steps between them
    points = set(given) | {p for p in steps if min(abs(p - g) for g in given) > 1e-9}
    return sorted(p for p in points if floor <= p <= 1.0)


def review_data(
    report: DuplicateReport,
    texts: Mapping[Any, str] | None,
    *,
    kind: str = "text",
    step: float = GRID_STEP,
    per_band: int | None = None,
    max_chars: int = MAX_CHARS,
    seed: int = 0,
    facts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the page needs, as plain JSON-able values.

    ``grid``: per threshold of :func:`threshold_grid` (floor to 1.0), the counts
    :meth:`DuplicateReport.counts_at` gives (``pairs``, ``clusters``, ``removed``, ``kept``)
    and ``band_pairs`` (candidate pairs from this threshold up to the next); ``start``: the
    index of the run's threshold; ``pairs``: up to ``per_band`` pairs sampled per band (ids as
    strings, score, texts cut to ``max_chars``, for ``kind="image"`` a JPEG thumbnail of each
    image, which ``texts`` holds as file paths), highest band first. ``key`` names the sample
    (the browser keeps labels under it).
    """
    if kind not in ("text", "image"):
        raise ValueError(f"kind must be 'text' or 'image', got {kind!r}")
    if per_band is None:
        per_band = PER_BAND_IMAGES if kind == "image" else PER_BAND
    cand = report.candidates
    grid = threshold_grid(report.floor, report.threshold, step)
    counts = report.counts_at(grid)
    # a pair's band: the highest grid point it reaches (the decision's own float32 compare)
    band_of = np.searchsorted(np.asarray(grid, dtype=np.float32), cand.scores, side="right") - 1
    band_total = np.bincount(band_of, minlength=len(grid))
    rng = np.random.default_rng(seed)
    ids = report.ids
    text_of = {} if texts is None else texts
    pairs: list[dict[str, Any]] = []
    for band in range(len(grid) - 1, -1, -1):
        members = np.flatnonzero(band_of == band)
        if len(members) > per_band:
            members = np.sort(rng.choice(members, size=per_band, replace=False))
        for row in members.tolist():
            a, b = ids[int(cand.a[row])], ids[int(cand.b[row])]
            pair = {
                "a": str(a),
                "b": str(b),
                "s": round(float(cand.scores[row]), 6),
                "band": band,
                "ta": _cut(text_of.get(a), max_chars),
                "tb": _cut(text_of.get(b), max_chars),
            }
            if kind == "image":
                pair["ia"], pair["ib"] = thumbnail(text_of.get(a)), thumbnail(text_of.get(b))
            pairs.append(pair)
    sampled = np.bincount([p["band"] for p in pairs], minlength=len(grid)) if pairs else None
    for number, row in enumerate(counts):
        row["band_pairs"] = int(band_total[number])
        row["band_sampled"] = 0 if sampled is None else int(sampled[number])
    key = hashlib.sha256(
        "\0".join(
            [str(report.n), str(report.floor)] + [p["a"] + "\1" + p["b"] for p in pairs]
        ).encode("utf-8", "replace")
    ).hexdigest()[:16]
    return {
        "version": 1,
        "key": key,
        "kind": kind,
        "rows": report.n,
        "method": report.method,
        "keep": str(report.keep),
        "floor": report.floor,
        "threshold": report.threshold,
        "start": grid.index(float(report.threshold)),
        "per_band": per_band,
        "max_chars": max_chars,
        "grid": counts,
        "pairs": pairs,
        "facts": {str(k): str(v) for k, v in (facts or {}).items()},
    }


def _cut(text: Any, limit: int) -> str:
    value = "" if text is None else str(text)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def thumbnail(path: str | None, size: int = THUMBNAIL_PX) -> str:
    """A JPEG ``data:`` URI of the image at ``path``, at most ``size`` px a side; ``""``
    when it cannot be read (the page then shows the path only)."""
    if not path:
        return ""
    try:
        from PIL import Image

        with Image.open(path) as image:
            image.thumbnail((size, size))
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=80)
    except (OSError, ValueError):
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
