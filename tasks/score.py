"""Score the report's candidate pairs with a trained ``DifferenceClassifier``, and keep the
pairs it calls duplicates."""

from __future__ import annotations

import numpy as np
from prefect import get_run_logger

from embetter_core.dedupe import DuplicateReport
from embetter_core.difference import DifferenceClassifier, score_pairs
from embetter_core.encoders import EncoderSpec
from tasks.embed import cached_encoder
from tasks.options import step


@step("score-pairs")
def score_candidate_pairs(
    model_path: str, texts_a: list[str], texts_b: list[str], spec: EncoderSpec, cache_dir: str
) -> np.ndarray:
    """Probability that each pair is a duplicate, by the model at ``model_path``.

    The model is loaded with the run's cached encoder, so its texts are cache hits, and a
    model trained with another encoder is refused (the error names both fingerprints).
    """
    model = DifferenceClassifier.load(model_path, enc=cached_encoder(spec, cache_dir))
    return score_pairs(model, texts_a, texts_b)


@step("keep-likely-pairs")
def keep_likely_pairs(
    report: DuplicateReport, probabilities: np.ndarray, min_probability: float
) -> tuple[DuplicateReport, np.ndarray]:
    """The report with only the pairs whose ``probabilities`` (one per pair) reach
    ``min_probability``, clusters and removals recomputed, and those pairs' probabilities."""
    keep = probabilities >= min_probability
    get_run_logger().info("difference model keeps %d of %d pairs", keep.sum(), len(keep))
    return report.keep_pairs(keep), probabilities[keep]
