"""Difference models: a classifier on pairs of embeddings that decides near-duplicates
better than a cosine cut (``model``), and its evaluation against one (``evaluation``).

>>> from embetter_core.difference import FEATURES
>>> FEATURES[:2]
('absdiff', 'product')
"""

from __future__ import annotations

from embetter_core.difference.evaluation import (
    evaluate_against_cosine,
    pair_metrics,
    parse_labels,
    read_pairs,
    split_pairs,
    tune_threshold,
)
from embetter_core.difference.model import FEATURES, DifferenceClassifier, cosine, score_pairs

__all__ = [
    "FEATURES",
    "DifferenceClassifier",
    "cosine",
    "evaluate_against_cosine",
    "pair_metrics",
    "parse_labels",
    "read_pairs",
    "score_pairs",
    "split_pairs",
    "tune_threshold",
]
