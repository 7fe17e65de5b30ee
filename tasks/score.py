"""Score the report's candidate pairs with a trained ``DifferenceClassifier``."""

from __future__ import annotations

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from embetter_core.difference import DifferenceClassifier, score_pairs
from embetter_core.encoders import EncoderSpec
from tasks.embed import cached_encoder


@task(name="score-pairs", cache_policy=NO_CACHE, persist_result=False)
def score_candidate_pairs(
    model_path: str, texts_a: list[str], texts_b: list[str], spec: EncoderSpec, cache_dir: str
) -> np.ndarray:
    """Probability that each pair is a duplicate, by the model at ``model_path``.

    The model is loaded with the run's cached encoder, so its texts are cache hits, and a
    model trained with another encoder is refused (the error names both fingerprints).
    """
    model = DifferenceClassifier.load(model_path, enc=cached_encoder(spec, cache_dir))
    return score_pairs(model, texts_a, texts_b)
