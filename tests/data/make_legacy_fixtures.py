"""Write the files in ``tests/data/legacy-*``: a store, a cache, a saved difference model and
a dedupe state and pickles made by embetter-core before the layout redesign (issue 18; run at commit
de6460c). ``tests/test_legacy_files.py`` checks that today's code still reads them: the
fingerprints name classes, not modules, so moving modules must not orphan a user's files.

    python tests/data/make_legacy_fixtures.py   # only ever at the commit named above

It uses only the names the package exported then and exports now.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
from sklearn.pipeline import make_pipeline

from embetter_core import (
    ClipEncoder,
    ColumnGrabber,
    DifferenceClassifier,
    EmbeddingStore,
    EncoderSpec,
    ModalEncoder,
    SentenceEncoder,
    cached,
    find_duplicates,
)

HERE = Path(__file__).parent
TEXTS = [
    "apt is the package manager of Debian",
    "the apt package manager of Debian",
    "a vector graphics editor",
    "an editor for vector graphics",
    "a library for reading HDF5 files",
]
PAIRS = [  # (text_a, text_b, label)
    (TEXTS[0], TEXTS[1], 1),
    (TEXTS[2], TEXTS[3], 1),
    (TEXTS[0], TEXTS[2], 0),
    (TEXTS[1], TEXTS[4], 0),
    (TEXTS[3], TEXTS[4], 0),
    (TEXTS[0], TEXTS[0] + "!", 1),
]


def main() -> None:
    enc = SentenceEncoder()
    cache_dir = HERE / "legacy-cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    vectors = cached(cache_dir, enc).transform(TEXTS)
    store = HERE / "legacy-store.h5"
    store.unlink(missing_ok=True)
    ids = [f"row-{i}" for i in range(len(TEXTS))]
    with EmbeddingStore.create(
        store, n=len(TEXTS), dim=vectors.shape[1], fingerprint=enc.fingerprint(), source="legacy"
    ) as writer:  # noqa: E501
        writer.write(0, ids, vectors)
    from embetter_core.store import write_kept  # the module path before the redesign

    write_kept(store, [True, False, True, True, True], ids=ids, threshold=0.82, keep="first")
    model = DifferenceClassifier(enc).fit(*zip(*PAIRS, strict=True))
    model.save(HERE / "legacy-model.skops")
    from embetter_core.incremental import find_duplicates_incremental, state_path

    state = state_path(store)
    state.unlink(missing_ok=True)
    find_duplicates_incremental(
        vectors, state, ids=ids, threshold=0.82, fingerprint=enc.fingerprint()
    )
    expected = {
        "texts": TEXTS,
        "ids": ids,
        "fingerprints": {
            "SentenceEncoder()": enc.fingerprint(),
            "ClipEncoder()": ClipEncoder().fingerprint(),
            "ModalEncoder(SentenceEncoder())": ModalEncoder(enc).fingerprint(),
            "cached(SentenceEncoder())": cached(cache_dir, enc).fingerprint(),
        },
        "report_pairs": [list(p) for p in find_duplicates(vectors, ids=ids, threshold=0.8).pairs],
        "probabilities": model.predict_proba([a for a, _, _ in PAIRS], [b for _, b, _ in PAIRS])[
            :, 1
        ].tolist(),
    }
    # pickles name their classes' modules: a pipeline a user pickled must load after moves
    from embetter_core.keep import KeepRule  # the module path before the redesign

    pickled = {
        "pipeline": make_pipeline(ColumnGrabber("text"), SentenceEncoder(batch_size=8)),
        "spec": EncoderSpec.parse("clip:ViT-B-32@openai"),
        "keep": KeepRule.parse("column:stars:asc"),
        "report": find_duplicates(vectors, ids=ids, threshold=0.8),
    }
    (HERE / "legacy-pickles.pkl").write_bytes(pickle.dumps(pickled))
    (HERE / "legacy.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(np.round(vectors[:, :3], 4))


if __name__ == "__main__":
    main()
