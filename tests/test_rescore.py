"""Two-stage dedupe: ``embetter_core.dedupe.rescore`` and the flow's ``--encoder static --rescore
sentence``, the threshold each encoder recommends, and the combinations refused before work.

The static model is the real distilled all-MiniLM-L6-v2 from the user's cache (or the one
``tests/test_static.py`` distils for the session); the first use here distils it once.
"""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from embetter_core import SentenceEncoder, StaticEncoder
from embetter_core.dedupe import DEFAULT_THRESHOLD, candidate_rows, find_duplicates, rescore_report
from embetter_core.encoders import EncoderSpec
from embetter_core.errors import FingerprintMismatchError
from flows.embed_corpus import (
    DEMO_CORPUS,
    EmbedParams,
    cache_folder,
    check_before_work,
    embed_corpus,
    main,
)


# -- the library ------------------------------------------------------------------------------
def planted(n: int = 60, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fast and a precise view of ``n`` rows with a few near-duplicate groups: the fast
    vectors are the precise ones with more noise, and rows 12 and 13 look alike only to
    the fast view (a false candidate the second stage rejects)."""
    rng = np.random.default_rng(seed)
    precise = rng.normal(size=(n, d)).astype(np.float32)
    for a, b in [(3, 40), (7, 8), (7, 50), (20, 21), (33, 59)]:
        precise[b] = precise[a] + 0.15 * rng.normal(size=d)
    fast = precise + 0.2 * rng.normal(size=(n, d)).astype(np.float32)
    fast[13] = fast[12] + 0.1 * rng.normal(size=d)
    return fast, precise


def test_candidate_rows_are_the_rows_in_a_pair():
    fast, _ = planted()
    first = find_duplicates(fast, threshold=0.8)
    rows = candidate_rows(first)
    assert rows.tolist() == sorted({i for a, b, _ in first.pairs for i in (a, b)})
    assert rows.tolist() == [3, 7, 8, 12, 13, 20, 21, 33, 40, 50, 59]
    assert candidate_rows(find_duplicates(np.eye(4), threshold=0.9)).tolist() == []


@pytest.mark.parametrize("keep", ["first", "last"])
def test_rescore_equals_a_search_of_the_second_vectors_on_the_candidate_rows(keep):
    fast, precise = planted()
    ids = [f"row{i}" for i in range(len(fast))]
    first = find_duplicates(fast, ids=ids, threshold=0.8, keep=keep)
    rows = candidate_rows(first)
    final = rescore_report(first, rows, precise[rows], threshold=0.9)
    alone = find_duplicates(precise[rows], ids=[ids[i] for i in rows], threshold=0.9, keep=keep)

    assert final.pairs == alone.pairs and len(final.pairs) == 6
    assert ("row12", "row13") in [p[:2] for p in first.pairs]  # rejected by the second stage
    assert final.clusters == alone.clusters and final.removed == alone.removed
    assert final.ids == ids and str(final.keep) == keep and final.threshold == 0.9
    outside = np.setdiff1d(np.arange(len(ids)), rows)
    assert final.kept_mask[outside].all()  # a row in no first-stage pair stays
    assert np.isnan(final.nearest[outside]).all()
    np.testing.assert_allclose(final.nearest[rows], alone.nearest)
    assert final.params["first_stage"]["threshold"] == 0.8
    assert final.params["first_stage"]["rows"] == len(rows)


def test_rescore_over_every_row_equals_a_plain_run():
    fast, precise = planted(seed=1)
    ids = [f"r{i}" for i in range(len(fast))]
    first = find_duplicates(fast, ids=ids, threshold=0.8)
    every = np.arange(len(ids))
    final = rescore_report(first, every, precise, threshold=0.9)
    plain = find_duplicates(precise, ids=ids, threshold=0.9)
    assert final.pairs == plain.pairs and final.clusters == plain.clusters
    assert final.removed == plain.removed
    np.testing.assert_array_equal(final.kept_mask, plain.kept_mask)


def test_rescore_of_no_rows_keeps_everything():
    first = find_duplicates(np.eye(3), ids=list("abc"), threshold=0.9)
    final = rescore_report(first, [], np.zeros((0, 1), dtype=np.float32), threshold=0.9)
    assert final.pairs == [] and final.removed == {} and final.kept_mask.all()


@pytest.mark.parametrize(
    ("rows", "n_vectors", "message"),
    [
        ([0, 5], 2, r"positions 0\.\.3"),
        ([-1, 2], 2, r"positions 0\.\.3"),
        ([2, 1], 2, "ascending and unique"),
        ([1, 1], 2, "ascending and unique"),
        ([0, 1, 2], 2, "got 2 vectors for 3 rows"),
        ([[0, 1]], 1, "positions"),
    ],
)
def test_bad_rows_or_vectors_are_refused(rows, n_vectors, message):
    first = find_duplicates(np.eye(4), ids=list("abcd"), threshold=0.9)
    with pytest.raises(ValueError, match=message):
        rescore_report(first, rows, np.eye(4)[:n_vectors], threshold=0.9)


# -- the flow: thresholds and refusals (no flow run) ----------------------------------------------
def test_threshold_choice_names_its_source(tmp_path):
    assert EmbedParams(threshold=0.7).threshold_choice() == (0.7, "given (--threshold)")
    value, source = EmbedParams(encoder="static").threshold_choice()
    assert value == StaticEncoder.recommended_threshold
    assert source.startswith("recommended for the static encoder (best removal F1")
    value, source = EmbedParams(encoder="static", rescore="sentence").threshold_choice()
    assert value == SentenceEncoder.recommended_threshold  # the deciding encoder's
    assert source.startswith("recommended for the sentence encoder")
    value, source = EmbedParams(model="paraphrase-MiniLM-L3-v2").threshold_choice()
    assert source.endswith("measured with its default model, not paraphrase-MiniLM-L3-v2")

    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"")
    clip = EmbedParams(input_path=str(images), encoder="clip")
    assert clip.threshold_choice() == (
        DEFAULT_THRESHOLD,
        "default, not measured for the clip encoder",
    )
    with pytest.raises(ValidationError, match="greater than 0"):
        EmbedParams(threshold=0)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"rescore": "sentence"}, r"--rescore sentence is the --encoder itself"),
        (
            {"rescore": "static"},
            r"needs a fast first-stage --encoder.*\(static\).*--encoder static",
        ),
        ({"encoder": "static", "rescore": "sentence", "backend": "modal"}, "--backend modal"),
        ({"encoder": "static", "rescore": "sentence", "incremental": True}, "--incremental"),
    ],
)
def test_rescore_combinations_are_refused_by_name(given, message):
    with pytest.raises(ValidationError, match=message):
        EmbedParams(**given)


def test_rescore_on_images_or_with_a_reference_is_refused(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"")
    with pytest.raises(ValidationError, match="--rescore re-encodes texts.*folder of images"):
        EmbedParams(input_path=str(images), encoder="clip", rescore="sentence")
    reference = tmp_path / "ref.csv"
    pd.DataFrame({"text": ["a", "b"]}).to_csv(reference, index=False)
    with pytest.raises(ValidationError, match="--rescore does not combine with --reference"):
        EmbedParams(encoder="static", rescore="sentence", reference=str(reference))


def test_cli_refuses_before_any_work(tmp_path, capsys):
    output = tmp_path / "never.h5"
    code = main(["--encoder", "static", "--rescore", "static", "--output", str(output)])
    assert code == 1 and not output.exists()
    assert "--rescore static is the --encoder itself" in capsys.readouterr().err


def test_difference_model_must_be_the_rescore_encoders(tmp_path, sentence_encoder):
    from embetter_core import DifferenceClassifier

    a = ["apt package manager", "a photo editor", "chess engine", "web browser"]
    b = ["the apt package manager", "a music player", "chess engine (UCI)", "a compiler"]
    y = [1, 0, 1, 0]
    for name, enc in [("static", StaticEncoder()), ("sentence", sentence_encoder)]:
        DifferenceClassifier(enc).fit(a, b, y).save(tmp_path / f"{name}.skops")

    def params(model: str) -> EmbedParams:
        return EmbedParams(
            encoder="static",
            rescore="sentence",
            difference_model=str(tmp_path / model),
            output=str(tmp_path / "out" / "e.h5"),
            cache_dir=str(tmp_path / "cache"),
            report_dir=str(tmp_path / "report"),
        )

    good = params("sentence.skops")
    check_before_work(good, good.encoder_spec(), cache_folder(good.cache_dir, good.encoder_spec()))
    bad = params("static.skops")
    with pytest.raises(FingerprintMismatchError, match="with --rescore sentence the difference"):
        check_before_work(bad, bad.encoder_spec(), cache_folder(bad.cache_dir, bad.encoder_spec()))


# -- the flow: a run ------------------------------------------------------------------------------
@pytest.fixture
def near_duplicates_csv(tmp_path) -> Path:
    """30 Debian descriptions and two edited copies (of rows 3 and 10)."""
    frame = pd.read_csv(DEMO_CORPUS, keep_default_na=False, dtype=str).head(30)
    frame = frame[["package", "text"]].reset_index(drop=True)
    text = frame["text"]
    frame.loc[30] = ["edited-3", text[3].replace("The ", "This ", 1) + " (new upstream release)"]
    frame.loc[31] = ["edited-10", text[10].rstrip(".") + ", now with fewer bugs."]
    path = tmp_path / "near.csv"
    frame.to_csv(path, index=False)
    return path


def read_pairs(path: str) -> list[tuple[str, str, float]]:
    with open(path, newline="") as fh:
        return [(r["id_a"], r["id_b"], float(r["score"])) for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_two_stage_flow_decides_the_candidate_rows_with_the_rescore_encoder(
    prefect_harness, tmp_path, near_duplicates_csv, sentence_encoder
):
    run = {
        "input_path": str(near_duplicates_csv),
        "id_column": "package",
        "output": str(tmp_path / "emb.h5"),
        "cache_dir": str(tmp_path / "cache"),
        "chunk_size": 8,
        "encoder": "static",
    }
    # static alone, no --threshold: its recommended threshold, said in the report
    plain = embed_corpus(**run, report_dir=str(tmp_path / "plain"))
    static_t = StaticEncoder.recommended_threshold
    assert plain.threshold == static_t and plain.rescored_rows is None
    assert plain.threshold_source.startswith("recommended for the static encoder")
    page = Path(plain.report_html).read_text()
    assert f"{static_t:g} — recommended for the static encoder" in page

    result = embed_corpus(**run, rescore="sentence", report_dir=str(tmp_path / "two"))
    frame = pd.read_csv(near_duplicates_csv, keep_default_na=False, dtype=str)
    ids, texts = frame["package"].tolist(), frame["text"].tolist()
    with h5py.File(result.store_path) as f:
        static_vectors = f["embeddings"][:]
        kept = f["kept"][:].astype(bool)
    assert static_vectors.shape == (32, 256)  # the store keeps the first stage's vectors
    first = find_duplicates(static_vectors, ids=ids, threshold=StaticEncoder.candidate_threshold)
    rows = candidate_rows(first)
    assert 0 < len(rows) < len(ids)
    threshold = SentenceEncoder.recommended_threshold
    expected = find_duplicates(
        sentence_encoder.transform([texts[i] for i in rows]),
        ids=[ids[i] for i in rows],
        threshold=threshold,
    )

    got = read_pairs(result.pairs_csv)
    assert [(a, b) for a, b, _ in got] == [(a, b) for a, b, _ in expected.pairs]
    np.testing.assert_allclose([s for *_, s in got], [s for *_, s in expected.pairs], atol=1e-3)
    edited = {frozenset(("edited-3", ids[3])), frozenset(("edited-10", ids[10]))}
    assert edited <= {frozenset(p[:2]) for p in got}
    assert result.threshold == threshold and result.rescored_rows == len(rows)
    assert result.threshold_source.startswith("recommended for the sentence encoder")
    assert result.cache_hits == 32  # the static vectors came from the first run's cache
    assert kept.tolist() == [i not in expected.removed for i in ids]  # the final decision

    page = Path(result.report_html).read_text()
    assert f"{threshold:g} — recommended for the sentence encoder" in page
    assert "two-stage dedupe" in page
    assert f"at candidate threshold {StaticEncoder.candidate_threshold:g}" in page
    assert f"{len(rows)} of 32 rows in a candidate pair" in page
    rescore_cache = cache_folder(str(tmp_path / "cache"), EncoderSpec(kind="sentence"))
    assert Path(rescore_cache).is_dir()  # its own cache folder, beside the static one
    assert f"<th>rescore cache hits / misses</th><td>0 / {len(rows)}</td>" in page
