"""``review.html``: a self-contained page to choose a threshold by looking at the pairs, and
to label pairs for a difference model. ``data`` computes what it shows (the counts at a grid
of thresholds, pairs sampled per similarity band), ``page`` renders it with the inline
``review.js`` and ``review.css``."""

from __future__ import annotations

from embetter_core.review.data import review_data, threshold_grid
from embetter_core.review.page import REVIEW_HTML, embed_json, render_review, write_review

__all__ = [
    "REVIEW_HTML",
    "embed_json",
    "render_review",
    "review_data",
    "threshold_grid",
    "write_review",
]
