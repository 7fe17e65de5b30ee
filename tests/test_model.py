"""DifferenceClassifier with the real MiniLM model: the seed example, the scikit-learn contract,
skops persistence with the fingerprint guard, bad input, and the evaluation helpers."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

from embetter_core import DifferenceClassifier, FingerprintMismatchError, SentenceEncoder, cached
from embetter_core.difference import (
    FEATURES,
    cosine,
    evaluate_against_cosine,
    pair_metrics,
    read_pairs,
    score_pairs,
    split_pairs,
    tune_threshold,
)
from embetter_core.encoders import EncoderSpec
from embetter_core.errors import CorpusError

SAMPLE = os.path.join(
    os.path.dirname(__file__), "..", "embetter_core", "data", "debian-sample.csv.gz"
)


def debian_pairs(n: int = 16, seed: int = 0) -> pd.DataFrame:
    """Real pairs from the bundled Debian slice (first lines only, to keep encoding quick):
    ``n`` pairs of packages from the same source (label 1), ``n`` from different ones (0)."""
    frame = pd.read_csv(SAMPLE, keep_default_na=False)
    frame["short"] = frame["text"].str.split("\n").str[0]
    rng = np.random.default_rng(seed)
    rows = []
    for source, group in frame.groupby("source"):
        if len(group) >= 2 and len(rows) < n:
            a, b = group["short"].iloc[0], group["short"].iloc[1]
            rows.append({"a": a, "b": b, "label": 1, "source": source})
    while len(rows) < 2 * n:
        i, j = rng.choice(len(frame), size=2, replace=False)
        if frame["source"].iloc[i] != frame["source"].iloc[j]:
            a, b = frame["short"].iloc[i], frame["short"].iloc[j]
            rows.append({"a": a, "b": b, "label": 0, "source": frame["source"].iloc[i]})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def pairs() -> pd.DataFrame:
    return debian_pairs()


@pytest.fixture(scope="module")
def fitted(sentence_encoder, pairs) -> DifferenceClassifier:
    return DifferenceClassifier(enc=sentence_encoder).fit(pairs["a"], pairs["b"], pairs["label"])


class CountingEncoder(SentenceEncoder):
    """The real SentenceEncoder, recording how many items each transform call gets."""

    def transform(self, X):
        self.__dict__.setdefault("calls_", []).append(len(X))
        return super().transform(X)


# -- item 1: the estimator ------------------------------------------------------------------
def test_seed_example_runs_verbatim():
    from embetter_core import DifferenceClassifier, SentenceEncoder

    mod = DifferenceClassifier(enc=SentenceEncoder())
    texts1 = ["hello", "firehydrant", "greetings"]
    texts2 = ["no", "yes", "greeting"]
    similar = [0, 0, 1]
    mod.fit(X1=texts1, X2=texts2, y=similar)
    mod.predict(X1=texts1, X2=texts2)
    mod.predict_proba(X1=texts1, X2=texts2)
    mod.clf_head  # noqa: B018  (verbatim from the seed)

    assert mod.clf_head is mod.clf_head_  # the seed's contract: the fitted head
    assert isinstance(mod.clf_head_, LogisticRegression)
    assert mod.clf_head_.get_params()["class_weight"] == "balanced"
    assert list(mod.classes_) == [0, 1]
    assert mod.predict(X1=texts1, X2=texts2).tolist() == similar
    proba = mod.predict_proba(X1=texts1, X2=texts2)
    assert proba.shape == (3, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert proba[2, 1] > proba[0, 1] and proba[2, 1] > proba[1, 1]


def test_seed_clf_head_saved_separately_with_joblib(tmp_path):
    """The seed documentation: "The classifier head is a scikit-learn model, which you could
    save separately if you like. The model can be accessed via: `mod.clf_head`"."""
    import joblib

    mod = DifferenceClassifier(enc=SentenceEncoder())
    texts1 = ["hello", "firehydrant", "greetings"]
    texts2 = ["no", "yes", "greeting"]
    mod.fit(X1=texts1, X2=texts2, y=[0, 0, 1])
    joblib.dump(mod.clf_head, tmp_path / "head.joblib")
    head = joblib.load(tmp_path / "head.joblib")

    assert isinstance(head, LogisticRegression) and head.get_params()["class_weight"] == "balanced"
    feats = mod.pair_features(*mod.pair_vectors(texts1, texts2))
    assert feats.shape == (3, 2 * 384)
    np.testing.assert_array_equal(
        head.predict_proba(feats), mod.predict_proba(X1=texts1, X2=texts2)
    )
    np.testing.assert_array_equal(head.coef_, mod.clf_head_.coef_)


def test_clf_head_contract(sentence_encoder, pairs, fitted):
    """clf_head is None until fit, then the fitted head; clone, params and pickle keep working."""
    one, two = DifferenceClassifier(sentence_encoder), DifferenceClassifier(sentence_encoder)
    assert one.clf_head is None and two.clf_head is None
    few = pairs.iloc[[0, 1, 2, -3, -2, -1]]
    one.fit(few["a"], few["b"], few["label"])
    two.fit(few["a"][::-1], few["b"][::-1], 1 - few["label"][::-1])
    assert one.clf_head is not two.clf_head  # two models never share a head
    assert one.clf_head.coef_.shape == two.clf_head.coef_.shape == (1, 768)
    assert not np.array_equal(one.clf_head.coef_, two.clf_head.coef_)
    kept, coef = one.clf_head, one.clf_head.coef_.copy()
    one.fit(few["a"], few["b"], 1 - few["label"])  # a refit starts from a fresh clone
    assert one.clf_head is not kept and np.array_equal(kept.coef_, coef)

    params = fitted.get_params()
    assert params["clf_head"] is fitted.clf_head_
    assert params["clf_head__class_weight"] == "balanced" and params["clf_head__max_iter"] == 1000

    twin = clone(fitted)  # the head cloned too: an unfitted copy with the same settings
    assert twin.clf_head is not fitted.clf_head and not hasattr(twin.clf_head, "coef_")
    assert twin.clf_head.get_params() == fitted.clf_head.get_params()
    assert not hasattr(twin, "clf_head_")
    twin.set_params(clf_head__C=0.25, features=("absdiff",))
    assert twin.clf_head.C == 0.25 and fitted.clf_head.C == 1.0
    twin.fit(few["a"], few["b"], few["label"])
    assert twin.clf_head is twin.clf_head_ and twin.clf_head.C == 0.25
    assert twin.clf_head.coef_.shape == (1, 384)

    before = fitted.clf_head.coef_.copy()
    refit = clone(twin).set_params(clf_head=LogisticRegression(C=2.0))
    refit.fit(few["a"], few["b"], few["label"])
    assert refit.clf_head.C == 2.0 and refit.get_params()["clf_head__C"] == 2.0
    np.testing.assert_array_equal(fitted.clf_head.coef_, before)  # others untouched

    again = pickle.loads(pickle.dumps(fitted))
    assert again.clf_head is again.clf_head_  # one object, also after pickling
    np.testing.assert_array_equal(again.clf_head.coef_, fitted.clf_head.coef_)


def test_fit_learns_real_pairs(fitted, pairs):
    proba = fitted.predict_proba(pairs["a"], pairs["b"])[:, 1]
    truth = pairs["label"].to_numpy()
    assert proba[truth == 1].mean() > proba[truth == 0].mean() + 0.2
    assert fitted.score(pairs["a"], pairs["b"], pairs["label"]) >= 0.9
    assert fitted.n_features_in_ == 384


def test_clone_and_custom_head_not_modified(sentence_encoder, pairs, fitted):
    head = LogisticRegression(C=0.5, max_iter=500)
    mod = DifferenceClassifier(sentence_encoder, clf_head=head, features=("absdiff",))
    twin = clone(mod)
    assert twin.get_params(deep=False)["features"] == ("absdiff",)
    assert twin.clf_head is not head and twin.clf_head.C == 0.5
    mod.fit(pairs["a"], pairs["b"], pairs["label"])
    assert not hasattr(head, "coef_")  # the given head is cloned, never fitted in place
    assert mod.clf_head is mod.clf_head_ and mod.clf_head is not head and mod.clf_head_.C == 0.5
    assert mod.clf_head_.coef_.shape == (1, 384)

    unfitted = clone(fitted)
    assert not hasattr(unfitted, "clf_head_")
    with pytest.raises(NotFittedError):
        unfitted.predict(["a"], ["b"])


def test_pickle_round_trip(fitted, pairs):
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(
        again.predict_proba(pairs["a"], pairs["b"]), fitted.predict_proba(pairs["a"], pairs["b"])
    )


def test_lists_series_and_arrays_agree(fitted, pairs):
    a, b = pairs["a"], pairs["b"]
    expected = fitted.predict_proba(a, b)
    for conv in (list, tuple, np.asarray, lambda s: s.to_numpy(dtype=object)):
        np.testing.assert_array_equal(fitted.predict_proba(conv(a), conv(b)), expected)


def test_union_is_encoded_once_per_call():
    enc = CountingEncoder()
    texts1 = ["red car", "blue sky", "red car", "green tea"]
    texts2 = ["blue sky", "red car", "a red car", "green tea"]
    mod = DifferenceClassifier(enc).fit(texts1, texts2, [0, 0, 1, 1])
    assert enc.calls_ == [4]  # one call, each distinct text once
    mod.predict(texts1[:2], texts2[:2])
    assert enc.calls_ == [4, 2]


def test_works_with_cached_encoder(tmp_path, sentence_encoder, pairs, fitted):
    enc = cached(tmp_path / "cache", sentence_encoder)
    mod = DifferenceClassifier(enc).fit(pairs["a"], pairs["b"], pairs["label"])
    distinct = len(set(pairs["a"]) | set(pairs["b"]))
    assert enc.last_stats_ == {"items": distinct, "unique": distinct, "hits": 0, "misses": distinct}
    proba = mod.predict_proba(pairs["a"], pairs["b"])
    assert enc.last_stats_["hits"] == distinct and enc.last_stats_["misses"] == 0
    np.testing.assert_allclose(proba, fitted.predict_proba(pairs["a"], pairs["b"]), atol=1e-6)


@pytest.mark.parametrize("name", FEATURES)
def test_each_feature(sentence_encoder, pairs, name):
    mod = DifferenceClassifier(sentence_encoder, features=(name,))
    a, b = mod.pair_vectors(pairs["a"][:4], pairs["b"][:4])
    width = {"concat": 768, "cosine": 1}.get(name, 384)
    assert mod.pair_features(a, b).shape == (4, width)
    if name == "cosine":
        np.testing.assert_allclose(mod.pair_features(a, b)[:, 0], (a * b).sum(axis=1), atol=1e-5)


def test_gradient_boosted_head_saves_and_loads(tmp_path, sentence_encoder, pairs):
    head = HistGradientBoostingClassifier(max_iter=20, min_samples_leaf=2)
    mod = DifferenceClassifier(sentence_encoder, clf_head=head, features=("cosine", "absdiff"))
    mod.fit(pairs["a"], pairs["b"], pairs["label"])
    mod.save(tmp_path / "hgb.skops")
    again = DifferenceClassifier.load(tmp_path / "hgb.skops", enc=sentence_encoder)
    assert isinstance(again.clf_head_, HistGradientBoostingClassifier)
    np.testing.assert_array_equal(
        again.predict_proba(pairs["a"], pairs["b"]), mod.predict_proba(pairs["a"], pairs["b"])
    )


# -- item 2: persistence ---------------------------------------------------------------------
def test_save_load_round_trip(tmp_path, fitted, pairs, sentence_encoder):
    path = tmp_path / "model.skops"
    fitted.save(path)
    expected = fitted.predict_proba(pairs["a"], pairs["b"])

    rebuilt = DifferenceClassifier.load(path)  # encoder rebuilt from the stored parameters
    assert isinstance(rebuilt.enc, SentenceEncoder)
    assert rebuilt.enc.get_params() == sentence_encoder.get_params()
    assert rebuilt.features == fitted.features and list(rebuilt.classes_) == [0, 1]
    np.testing.assert_allclose(rebuilt.predict_proba(pairs["a"], pairs["b"]), expected, atol=1e-6)

    with_cache = DifferenceClassifier.load(path, enc=cached(tmp_path / "c", sentence_encoder))
    np.testing.assert_allclose(
        with_cache.predict_proba(pairs["a"], pairs["b"]), expected, atol=1e-6
    )
    np.testing.assert_allclose(score_pairs(path, pairs["a"], pairs["b"]), expected[:, 1], atol=1e-6)
    np.testing.assert_array_equal(score_pairs(fitted, pairs["a"], pairs["b"]), expected[:, 1])


def test_saved_cached_model_stores_the_bare_encoder(tmp_path, sentence_encoder, pairs):
    enc = cached(tmp_path / "cache", sentence_encoder)
    assert EncoderSpec.from_encoder(enc) == EncoderSpec.from_encoder(sentence_encoder)
    few = pairs.iloc[[0, 1, -2, -1]]
    mod = DifferenceClassifier(enc).fit(few["a"], few["b"], few["label"])
    mod.save(tmp_path / "m.skops")
    assert isinstance(DifferenceClassifier.load(tmp_path / "m.skops").enc, SentenceEncoder)


def test_load_with_another_encoder_names_both_fingerprints(tmp_path, fitted):
    path = tmp_path / "model.skops"
    fitted.save(path)
    other = SentenceEncoder(name="sentence-transformers/paraphrase-MiniLM-L3-v2")
    with pytest.raises(FingerprintMismatchError) as info:
        DifferenceClassifier.load(path, enc=other)
    message = str(info.value)
    assert fitted.enc.fingerprint() in message and other.fingerprint() in message
    assert str(path) in message


def test_load_refuses_untrusted_types(tmp_path):
    path = tmp_path / "evil.skops"
    skops.io.dump({"format": "x", "clf_head_": FunctionTransformer(func=os.system)}, str(path))
    with pytest.raises(ValueError, match="refusing to load .*system"):
        DifferenceClassifier.load(path)
    junk = tmp_path / "junk.skops"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a model saved by"):
        DifferenceClassifier.load(junk)
    with pytest.raises(FileNotFoundError, match="no model file"):
        DifferenceClassifier.load(tmp_path / "missing.skops")


def test_save_is_atomic(tmp_path, fitted, pairs, monkeypatch):
    """A save that fails or dies mid-write leaves the previous file whole and no temp files."""
    path = tmp_path / "model.skops"
    fitted.save(path)
    good = path.read_bytes()

    broken = pickle.loads(pickle.dumps(fitted))
    broken.clf_head_.unsaveable_ = (i for i in range(3))  # skops cannot write a generator
    with pytest.raises(TypeError, match="generator"):
        broken.save(path)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["model.skops"]

    real_dump = skops.io.dump

    def dies_half_way(obj, file, **kwargs):  # a process killed while the zip is written
        real_dump(obj, file, **kwargs)
        with open(file, "r+b") as handle:
            handle.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(skops.io, "dump", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        fitted.save(path)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["model.skops"]
    monkeypatch.undo()

    # A file from before clf_head was the fitted head (it stored the parameter, None).
    payload = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=str(path)))
    skops.io.dump({**payload, "clf_head": None}, str(tmp_path / "old.skops"))
    old = DifferenceClassifier.load(tmp_path / "old.skops", enc=fitted.enc)
    assert old.clf_head is old.clf_head_ and old.get_params()["clf_head__max_iter"] == 1000

    fitted.save(tmp_path / "new" / "model.skops")  # folders are created
    again = DifferenceClassifier.load(tmp_path / "new" / "model.skops", enc=fitted.enc)
    assert again.clf_head is again.clf_head_
    np.testing.assert_array_equal(
        again.predict_proba(pairs["a"], pairs["b"]), fitted.predict_proba(pairs["a"], pairs["b"])
    )


# -- item 5: bad input -----------------------------------------------------------------------
def test_lengths_differ(sentence_encoder):
    mod = DifferenceClassifier(sentence_encoder)
    with pytest.raises(ValueError) as info:
        mod.fit(["a", "b", "c"], ["a", "b"], [0, 1, 0])
    assert "len(X1)=3, len(X2)=2, len(y)=3" in str(info.value)
    with pytest.raises(ValueError, match=r"len\(X1\)=2, len\(X2\)=2, len\(y\)=3"):
        mod.fit(["a", "b"], ["a", "b"], [0, 1, 0])


def test_one_class_only(sentence_encoder):
    with pytest.raises(ValueError, match=r"two classes .* got 1: \[1\]"):
        DifferenceClassifier(sentence_encoder).fit(["a", "b"], ["a", "c"], [1, 1])


def test_predict_before_fit(sentence_encoder, tmp_path):
    mod = DifferenceClassifier(sentence_encoder)
    for call in (mod.predict, mod.predict_proba):
        with pytest.raises(NotFittedError):
            call(["a"], ["b"])
    with pytest.raises(NotFittedError):
        mod.save(tmp_path / "m.skops")
    assert not (tmp_path / "m.skops").exists()


def test_bad_texts_and_features_name_the_problem(sentence_encoder, fitted):
    with pytest.raises(ValueError, match="X2: text input at position 1 is None"):
        fitted.predict(["a", "b"], ["a", None])
    with pytest.raises(ValueError, match=r"len\(X1\)=1, len\(X2\)=2"):
        fitted.predict(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="unknown pair features"):
        DifferenceClassifier(sentence_encoder, features=("absdif",)).fit(
            ["a", "b"], ["a", "c"], [1, 0]
        )
    assert fitted.predict([], []).shape == (0,)


# -- evaluation helpers ----------------------------------------------------------------------
def test_tune_threshold_and_metrics():
    scores = np.array([0.2, 0.3, 0.55, 0.6, 0.7, 0.9])
    truth = np.array([0, 0, 1, 0, 1, 1])
    assert tune_threshold(scores, truth) == 0.55
    m = pair_metrics(truth, scores, 0.55)
    assert m["recall"] == 1.0 and m["precision"] == 0.75
    assert m["f1"] == pytest.approx(6 / 7) and m["roc_auc"] == pytest.approx(8 / 9)
    assert np.isnan(pair_metrics([1, 1], [0.1, 0.2], 0.5)["roc_auc"])
    np.testing.assert_allclose(cosine(np.eye(2), np.ones((2, 2))), [0.70710678] * 2, rtol=1e-6)


def test_split_pairs_grouped_and_stratified():
    y = np.array([0, 1] * 20)
    groups = np.repeat(np.arange(10), 4)
    train, test = split_pairs(y, test_size=0.3, seed=1, groups=groups)
    assert not set(groups[train]) & set(groups[test])
    assert len(train) + len(test) == 40 and set(y[test]) == {0, 1}
    train, test = split_pairs(y, test_size=0.25, seed=0)
    assert len(test) == 10 and y[test].sum() == 5
    with pytest.raises(ValueError, match="label 1 has 1"):
        split_pairs([0, 0, 0, 1])
    with pytest.raises(ValueError, match="no grouped split"):
        split_pairs([0, 0, 1, 1], groups=["g", "g", "h", "h"])


def test_evaluate_against_cosine(fitted, pairs):
    half = len(pairs) // 2
    tr = pairs.iloc[::2]
    te = pairs.iloc[1::2]
    out = evaluate_against_cosine(
        fitted, (tr["a"], tr["b"], tr["label"]), (te["a"], te["b"], te["label"])
    )
    assert out["n_train"] == half and out["n_test"] == half
    assert out["test_positives"] == int(te["label"].sum())
    for key in ("f1", "roc_auc", "precision", "recall", "threshold"):
        assert 0 <= out["model"][key] <= 1 and -1 <= out["cosine"][key] <= 1
    assert out["model"]["threshold"] == 0.5


def test_read_pairs_errors(tmp_path):
    good = tmp_path / "p.csv"
    good.write_text("x,y,same\nred car,a red car,true\nred car,blue sky,0\n")
    assert read_pairs(good, "x", "y", "same")["label"].tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"no column\(s\) \['lbl'\]"):
        read_pairs(good, "x", "y", "lbl")
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,same\nred car,a red car,1\nred car,,0\n")
    with pytest.raises(ValueError, match=r"bad.csv': row 2 has no value in 'y'"):
        read_pairs(bad, "x", "y", "same")
    bad.write_text("x,y,same\nred car,a red car,yes\n")
    with pytest.raises(ValueError, match="row 1 has label 'yes'"):
        read_pairs(bad, "x", "y", "same")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"x": "a", "y": "b", "same": 1}\n{"x": "c", "y": "d", "same": 0}\n')
    assert read_pairs(jsonl, "x", "y", "same")["a"].tolist() == ["a", "c"]


def test_read_pairs_uses_the_corpus_readers(tmp_path):
    """Pair files go through corpus.read_table: same formats (.csv.gz too), same NA rules."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    body = "x,y,same,src\nNA,null,1,g1\nred car,blue sky,FALSE,g2\n"
    with gzip.open(tmp_path / "p.csv.gz", "wt") as handle:
        handle.write(body)
    out = read_pairs(tmp_path / "p.csv.gz", "x", "y", "same", group="src")
    assert out.to_dict("list") == {
        "a": ["NA", "red car"],  # "NA" and "null" are texts, as in read_corpus
        "b": ["null", "blue sky"],
        "label": [1, 0],
        "group": ["g1", "g2"],
    }
    table = pa.table({"x": ["a", "b"], "y": ["c", None], "same": [True, False]})
    pq.write_table(table, tmp_path / "p.parquet")
    with pytest.raises(ValueError, match=r"p.parquet': row 2 has no value in 'y'"):
        read_pairs(tmp_path / "p.parquet", "x", "y", "same")
    pq.write_table(table.drop_null(), tmp_path / "p.parquet")
    assert read_pairs(tmp_path / "p.parquet", "x", "y", "same")["label"].tolist() == [1]
    (tmp_path / "m.jsonl").write_text('{"x": "a", "y": "b", "same": 1}\n{"x": "c", "same": 0}\n')
    with pytest.raises(ValueError, match=r"m.jsonl': row 2 has no value in 'y'"):
        read_pairs(tmp_path / "m.jsonl", "x", "y", "same")
    (tmp_path / "w.csv").write_text("x,y,same\na,b,1\n  ,d,0\n")
    with pytest.raises(ValueError, match=r"w.csv': row 2 has no value in 'x'"):
        read_pairs(tmp_path / "w.csv", "x", "y", "same")  # blank, as read_corpus sees it
    (tmp_path / "p.tsv").write_text("x\ty\tsame\na\tb\t1\n")
    with pytest.raises(CorpusError, match=r"p.tsv: unknown table format 'p.tsv'; .*\.csv\.gz"):
        read_pairs(tmp_path / "p.tsv", "x", "y", "same")
    (tmp_path / "r.csv").write_text("x,y,same\na,b,1\na,b,0,extra\n")
    with pytest.raises(CorpusError, match="r.csv: cannot read it as CSV.*line 3"):
        read_pairs(tmp_path / "r.csv", "x", "y", "same")
    with pytest.raises(FileNotFoundError, match="pair file .*nope.csv' does not exist"):
        read_pairs(tmp_path / "nope.csv", "x", "y", "same")


# -- issue 12: trust only what save writes ----------------------------------------------------
def test_saved_types_are_exactly_what_save_writes(tmp_path, sentence_encoder, pairs):
    """SAVED_TYPES is derived from saving every head the project uses, with every feature: each
    file's types beyond skops' defaults are in it, together they are all of it, and each loads."""
    from sklearn.model_selection import TunedThresholdClassifierCV

    from embetter_core.difference.model import SAVED_TYPES

    heads = {
        "default": None,
        "hgb": HistGradientBoostingClassifier(max_iter=5, min_samples_leaf=2),
        "tuned": TunedThresholdClassifierCV(LogisticRegression(), scoring="f1", cv=2),
    }
    seen: set[str] = set()
    for name, head in heads.items():
        mod = DifferenceClassifier(sentence_encoder, clf_head=head, features=FEATURES)
        mod.fit(pairs["a"], pairs["b"], pairs["label"])
        mod.save(tmp_path / f"{name}.skops")
        types = set(skops.io.get_untrusted_types(file=str(tmp_path / f"{name}.skops")))
        assert types <= SAVED_TYPES, types - SAVED_TYPES
        seen |= types
        again = DifferenceClassifier.load(tmp_path / f"{name}.skops", enc=sentence_encoder)
        np.testing.assert_array_equal(
            again.predict_proba(pairs["a"][:4], pairs["b"][:4]),
            mod.predict_proba(pairs["a"][:4], pairs["b"][:4]),
        )
    assert seen == SAVED_TYPES
    assert not any(t.startswith("numpy.testing") for t in SAVED_TYPES)


def test_crafted_model_runs_no_code_on_load(tmp_path):
    from tests.test_bad_input import crafted_model, nothing_ran

    path = crafted_model(tmp_path)
    assert "numpy.testing._private.utils.runstring" in skops.io.get_untrusted_types(file=str(path))
    with pytest.raises(ValueError) as info:
        DifferenceClassifier.load(path)
    assert "numpy.testing._private.utils.runstring" in str(info.value)
    assert "trusted=" in str(info.value)  # how to load a head of one's own
    with pytest.raises(ValueError, match="runstring"):  # naming another type does not help
        DifferenceClassifier.load(path, trusted=["sklearn.tree._tree.Tree"])
    nothing_ran(tmp_path)


def test_head_of_ones_own_loads_only_with_its_types_named(tmp_path, sentence_encoder, pairs):
    from sklearn.tree import DecisionTreeClassifier

    mod = DifferenceClassifier(sentence_encoder, clf_head=DecisionTreeClassifier(max_depth=2))
    mod.fit(pairs["a"], pairs["b"], pairs["label"])
    mod.save(tmp_path / "tree.skops")
    with pytest.raises(ValueError, match=r"\['sklearn.tree._tree.Tree'\]"):
        DifferenceClassifier.load(tmp_path / "tree.skops", enc=sentence_encoder)
    with pytest.raises(TypeError, match="list of exact type names"):
        DifferenceClassifier.load(tmp_path / "tree.skops", trusted="sklearn.tree._tree.Tree")
    again = DifferenceClassifier.load(
        tmp_path / "tree.skops", enc=sentence_encoder, trusted=["sklearn.tree._tree.Tree"]
    )
    np.testing.assert_array_equal(
        again.predict(pairs["a"], pairs["b"]), mod.predict(pairs["a"], pairs["b"])
    )


def test_model_file_missing_keys_is_a_clear_error(tmp_path):
    from tests.test_bad_input import skops_payload

    for key in ("fingerprint", "features", "n_features_in", "encoder"):
        path = skops_payload(tmp_path / f"no-{key}.skops", {}, drop=(key,))
        with pytest.raises(ValueError, match=rf"lacks \['{key}'\]; it is damaged or was not"):
            DifferenceClassifier.load(path)
    path = tmp_path / "no-head.skops"
    skops.io.dump(
        {**skops.io.load(skops_payload(path, {}), trusted=[]), "clf_head_": None}, str(path)
    )
    with pytest.raises(ValueError, match="holds no fitted classifier head"):
        DifferenceClassifier.load(path)
