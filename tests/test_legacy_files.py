"""Files written before the layout redesign still load: ``tests/data/legacy-*`` were made by
``tests/data/make_legacy_fixtures.py`` at commit de6460c (modules side by side in
``embetter_core/``). Fingerprints name classes, not modules, and pickles that name the old
module paths resolve through :mod:`embetter_core.moved`.
"""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from embetter_core import (
    ClipEncoder,
    DifferenceClassifier,
    DuplicateReport,
    EmbeddingStore,
    EncoderSpec,
    KeepRule,
    ModalEncoder,
    SentenceEncoder,
    cached,
    find_duplicates,
)
from embetter_core.dedupe import DedupeState

DATA = Path(__file__).parent / "data"
EXPECTED = json.loads((DATA / "legacy.json").read_text())


@pytest.fixture(scope="module")
def legacy_vectors() -> np.ndarray:
    with EmbeddingStore.open(DATA / "legacy-store.h5") as store:
        return np.asarray(store.embeddings)


def test_fingerprints_are_unchanged_by_the_move(tmp_path: Path) -> None:
    enc = SentenceEncoder()
    now = {
        "SentenceEncoder()": enc.fingerprint(),
        "ClipEncoder()": ClipEncoder().fingerprint(),
        "ModalEncoder(SentenceEncoder())": ModalEncoder(enc).fingerprint(),
        "cached(SentenceEncoder())": cached(tmp_path / "c", enc).fingerprint(),
    }
    assert now == EXPECTED["fingerprints"]


def test_store_written_before_opens_with_todays_fingerprint(legacy_vectors: np.ndarray) -> None:
    with EmbeddingStore.open(
        DATA / "legacy-store.h5", fingerprint=SentenceEncoder().fingerprint()
    ) as store:
        assert store.ids == EXPECTED["ids"]
        assert store.embeddings.shape == (5, 384)
        assert store.kept is not None and store.kept.tolist() == [True, False, True, True, True]
        assert store.kept_attrs["threshold"] == pytest.approx(0.82)
    report = find_duplicates(legacy_vectors, ids=EXPECTED["ids"], threshold=0.8)
    assert [list(p) for p in report.pairs] == EXPECTED["report_pairs"]


def test_cache_written_before_is_read_not_recomputed(
    tmp_path: Path, legacy_vectors: np.ndarray
) -> None:
    folder = tmp_path / "cache"
    shutil.copytree(DATA / "legacy-cache", folder)  # the cache may write its own bookkeeping
    enc = cached(folder, SentenceEncoder())
    keys = enc.cache_keys(EXPECTED["texts"])
    assert sum(key in enc.cache_ for key in keys) == len(keys)  # all five are hits
    vectors = enc.transform(EXPECTED["texts"])
    np.testing.assert_allclose(vectors, legacy_vectors, atol=1e-6)
    enc.close()


def test_difference_model_saved_before_loads_and_predicts_the_same() -> None:
    model = DifferenceClassifier.load(DATA / "legacy-model.skops")
    texts = EXPECTED["texts"]
    pairs = [(texts[0], texts[1]), (texts[2], texts[3]), (texts[0], texts[2])]
    proba = model.predict_proba([a for a, _ in pairs], [b for _, b in pairs])[:, 1]
    np.testing.assert_allclose(proba, EXPECTED["probabilities"][:3], atol=1e-6)


def test_dedupe_state_saved_before_loads() -> None:
    state = DedupeState.load(DATA / "legacy-store.dedupe-state.npz")
    assert len(state) == 5
    assert [str(i) for i in state.ids] == EXPECTED["ids"]
    assert state.fingerprint == SentenceEncoder().fingerprint()
    assert state.floor <= 0.82


def test_pickles_naming_the_old_module_paths_load() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the old paths warn on import
        pickled = pickle.loads((DATA / "legacy-pickles.pkl").read_bytes())
    pipe = pickled["pipeline"]
    assert isinstance(pipe, Pipeline) and isinstance(pipe[-1], SentenceEncoder)
    assert pipe[-1].batch_size == 8
    assert isinstance(pickled["spec"], EncoderSpec)
    assert pickled["spec"].to_string() == "clip:ViT-B-32@openai"
    assert isinstance(pickled["keep"], KeepRule)
    assert pickled["keep"] == KeepRule.parse("column:stars:asc")
    report = pickled["report"]
    assert isinstance(report, DuplicateReport)
    assert [list(p) for p in report.pairs] == EXPECTED["report_pairs"]
