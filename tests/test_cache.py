"""cached(): the seed contract, batching, content keys, the fingerprint guard, two processes."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from typing import Any

import diskcache
import numpy as np
import pytest
from sklearn.base import clone

from embetter_core import FingerprintMismatchError, SentenceEncoder, cached
from embetter_core.encoders import EmbeddingEncoder
from embetter_core.encoders.cache import FINGERPRINT_KEY


class RecordingEncoder(SentenceEncoder):
    """The real SentenceEncoder, recording what each transform call received."""

    def transform(self, X: Any) -> np.ndarray:
        self.__dict__.setdefault("_lazy_calls", []).append(list(X))
        return super().transform(X)


class ProjectionEncoder(EmbeddingEncoder):
    """Arrays to vectors by a fixed random projection: an encoder for non-text items."""

    def __init__(self, dim: int = 8, seed: int = 0) -> None:
        self.dim = dim
        self.seed = seed

    def _fingerprint_fields(self) -> dict[str, Any]:
        return {"dim": self.dim, "seed": self.seed}

    def validate_input(self, X: Any) -> list[Any]:
        return list(X)

    def transform(self, X: Any) -> np.ndarray:
        self.__dict__.setdefault("_lazy_calls", []).append(len(X))
        proj = np.random.default_rng(self.seed).normal(size=(4, self.dim))
        return np.array([np.asarray(x, dtype=np.float64) @ proj for x in X], dtype=np.float32)


def test_seed_contract(tmp_path, sentence_encoder):
    folder = str(tmp_path / "sentence-enc")
    texts = [f"this is a pretty long text, which is more expensive {i}" for i in range(5)]
    out = cached(folder, sentence_encoder).transform(texts)
    expected = sentence_encoder.transform(texts)
    store = diskcache.Cache(folder)
    for text, vec in zip(texts, expected, strict=True):
        assert isinstance(store[text], np.ndarray)
        np.testing.assert_allclose(store[text], vec, atol=1e-5)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_cached_returns_a_new_estimator_and_leaves_the_original_alone(tmp_path):
    enc = SentenceEncoder()
    wrapped = cached(tmp_path / "c", enc)
    assert wrapped is not enc and wrapped.encoder is enc
    assert type(enc).transform is SentenceEncoder.transform
    assert "transform" not in enc.__dict__


def test_misses_encoded_once_in_one_call_and_order_kept(tmp_path, texts):
    inner = RecordingEncoder()
    enc = cached(tmp_path / "c", inner)
    first = enc.transform(texts)
    assert inner._lazy_calls == [[texts[0], texts[1], texts[2], texts[4]]]  # repeat encoded once
    assert enc.last_stats_ == {"items": 5, "unique": 4, "hits": 0, "misses": 4}
    np.testing.assert_allclose(first, SentenceEncoder().transform(texts), atol=1e-5)

    more = ["brand new text", texts[1], "another new one", texts[0]]
    second = enc.transform(more)
    assert inner._lazy_calls[-1] == ["brand new text", "another new one"]
    assert enc.last_stats_ == {"items": 4, "unique": 4, "hits": 2, "misses": 2}
    np.testing.assert_allclose(second[1], first[1], atol=1e-6)
    np.testing.assert_allclose(second[3], first[0], atol=1e-6)

    calls = len(inner._lazy_calls)
    warm = enc.transform(list(reversed(texts)))
    assert len(inner._lazy_calls) == calls  # all hits: the model is not called
    np.testing.assert_array_equal(warm, first[::-1])


def test_empty_input(tmp_path):
    out = cached(tmp_path / "c", SentenceEncoder()).transform([])
    assert out.shape == (0, 384) and out.dtype == np.float32


def test_non_string_items_are_keyed_by_content_hash(tmp_path):
    enc = cached(tmp_path / "arr", ProjectionEncoder())
    a, b = np.arange(4.0), np.ones(4)
    out = enc.transform([a, b, a.copy()])
    assert enc.encoder._lazy_calls == [2]
    np.testing.assert_array_equal(out[0], out[2])
    keys = [k for k in diskcache.Cache(str(tmp_path / "arr")) if k != FINGERPRINT_KEY]
    assert len(keys) == 2
    assert all(k[0] == "sha256" and len(k[1]) == 64 for k in keys)
    assert not any(repr(a) in str(k) for k in keys)
    # the same content in another object is a hit; different content is a miss
    enc.transform([np.arange(4.0), np.full(4, 2.0)])
    assert enc.last_stats_["hits"] == 1 and enc.last_stats_["misses"] == 1


def test_fingerprint_guard_names_both_encoders(tmp_path):
    folder = tmp_path / "c"
    cached(folder, ProjectionEncoder(seed=0)).transform([np.zeros(4)])
    with pytest.raises(FingerprintMismatchError) as err:
        cached(folder, ProjectionEncoder(seed=1)).transform([np.zeros(4)])
    assert '"seed": 0' in str(err.value) and '"seed": 1' in str(err.value)
    with pytest.raises(FingerprintMismatchError, match="SentenceEncoder"):
        cached(folder, SentenceEncoder()).transform(["text"])
    assert diskcache.Cache(str(folder))[FINGERPRINT_KEY] == ProjectionEncoder(seed=0).fingerprint()


def test_bad_input_loses_nothing_cached(tmp_path, sentence_encoder):
    folder = tmp_path / "c"
    enc = cached(folder, sentence_encoder)
    enc.transform(["kept one", "kept two"])
    with pytest.raises(ValueError, match="position 1 is None"):
        enc.transform(["new text", None])
    with pytest.raises(ValueError, match="position 0 is NaN"):
        enc.transform([float("nan")])
    store = diskcache.Cache(str(folder))
    assert "kept one" in store and "kept two" in store and "new text" not in store
    assert enc.transform(["kept one"]).shape == (1, 384) and enc.last_stats_["hits"] == 1


def test_clone_and_pickle(tmp_path, sentence_encoder):
    enc = cached(tmp_path / "c", sentence_encoder)
    first = enc.transform(["pickle me"])
    restored = pickle.loads(pickle.dumps(enc))
    assert "_lazy_cache" not in restored.__dict__
    np.testing.assert_array_equal(restored.transform(["pickle me"]), first)
    assert restored.last_stats_["hits"] == 1
    cloned = clone(enc)
    assert cloned.get_params()["name"] == enc.name
    np.testing.assert_array_equal(cloned.transform(["pickle me"]), first)


WORKER = textwrap.dedent(
    """
    import sys
    from embetter_core import SentenceEncoder, cached
    folder, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    enc = cached(folder, SentenceEncoder(batch_size=16))
    texts = [f"shared text number {i}" for i in range(start, stop)]
    for i in range(0, len(texts), 10):  # many small transactions, interleaved with the peer
        enc.transform(texts[i : i + 10])
    print("done", start, stop)
    """
)


@pytest.mark.slow
def test_two_processes_fill_one_cache_consistently(tmp_path, sentence_encoder):
    folder = str(tmp_path / "shared")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [
        subprocess.Popen([sys.executable, str(script), folder, "0", "120"]),
        subprocess.Popen([sys.executable, str(script), folder, "60", "180"]),
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    texts = [f"shared text number {i}" for i in range(180)]
    store = diskcache.Cache(folder)
    assert len(store) == 180 + 1  # every text once, plus the fingerprint
    assert store[FINGERPRINT_KEY] == sentence_encoder.fingerprint()
    stored = np.stack([store[t] for t in texts])
    np.testing.assert_allclose(stored, sentence_encoder.transform(texts), atol=1e-5)
    enc = cached(folder, sentence_encoder)
    enc.transform(texts)
    assert enc.last_stats_ == {"items": 180, "unique": 180, "hits": 180, "misses": 0}


def test_read_many_matches_diskcache_get_for_every_kind_of_value(tmp_path):
    from embetter_core.encoders.cache import read_many

    store = diskcache.Cache(str(tmp_path / "c"))
    rng = np.random.default_rng(0)
    values = {
        "a": rng.normal(size=8).astype(np.float32),
        "b": rng.normal(size=8).astype(np.float32),
        ("sha256", "00ff"): rng.normal(size=8).astype(np.float32),  # a pickled key
        "float64": rng.normal(size=8),  # pickled differently: the slow path
        "other-dim": rng.normal(size=5).astype(np.float32),
        "in-a-file": rng.normal(size=20_000).astype(np.float32),  # > 32 kB: kept in a file
        "c": rng.normal(size=8).astype(np.float32),
    }
    for key, value in values.items():
        store.set(key, value)
    keys = [*values, "missing", ("sha256", "nothing")]
    got = read_many(store, keys)
    assert got[-2:] == [None, None]
    for key, vec in zip(keys, got, strict=False):
        if key in values:
            assert vec.dtype == values[key].dtype
            np.testing.assert_array_equal(vec, values[key])
            np.testing.assert_array_equal(vec, store[key])


# -- issue 12: the cache checks what it reads -------------------------------------------------
def _sql(folder, query: str, *args) -> list:
    import sqlite3

    con = sqlite3.connect(str(folder / "cache.db"))
    try:
        with con:
            return con.execute(query, args).fetchall()
    finally:
        con.close()


def test_a_vector_copied_over_another_is_encoded_again_and_logged(tmp_path, caplog):
    """Row 10 took row 200's bytes (and checksum): it was served silently, a pair at 1.0."""
    folder = tmp_path / "c"
    texts = [f"text number {i}" for i in range(201)]
    inner = RecordingEncoder()
    first = cached(folder, inner).transform(texts)
    _sql(
        folder,
        "UPDATE Cache SET value = (SELECT value FROM Cache WHERE key = ?),"
        " tag = (SELECT tag FROM Cache WHERE key = ?) WHERE key = ?",
        texts[200],
        texts[200],
        texts[10],
    )
    assert np.array_equal(diskcache.Cache(str(folder))[texts[10]], first[200])  # the damage

    enc = cached(folder, inner)
    with caplog.at_level("WARNING", logger="embetter_core.encoders.cache"):
        again = enc.transform(texts)
    assert inner._lazy_calls[1:] == [[texts[10]]]  # only the damaged row is encoded again
    assert enc.last_stats_ == {"items": 201, "unique": 201, "hits": 200, "misses": 1}
    np.testing.assert_allclose(again, first, atol=1e-5)
    assert float(again[10] @ again[200]) < 0.99
    [record] = [r for r in caplog.records if r.name == "embetter_core.encoders.cache"]
    assert record.levelname == "WARNING" and "1 cached vector(s) failed their checksum" in (
        record.getMessage()
    )
    assert str(folder) in record.getMessage()
    enc.transform(texts)  # repaired on disk: all hits now
    assert enc.last_stats_["hits"] == 201 and len(inner._lazy_calls) == 2


def test_one_flipped_byte_is_a_miss(tmp_path, sentence_encoder, caplog):
    folder = tmp_path / "c"
    first = cached(folder, sentence_encoder).transform(["alpha", "beta"])
    [(blob,)] = _sql(folder, "SELECT value FROM Cache WHERE key = 'beta'")
    flipped = bytearray(blob)
    flipped[-20] ^= 0x01  # one bit of one float
    _sql(folder, "UPDATE Cache SET value = ? WHERE key = 'beta'", bytes(flipped))
    enc = cached(folder, sentence_encoder)
    with caplog.at_level("WARNING", logger="embetter_core.encoders.cache"):
        np.testing.assert_allclose(enc.transform(["alpha", "beta"]), first, atol=1e-5)
    assert enc.last_stats_["misses"] == 1 and "failed their checksum" in caplog.text


def test_vectors_without_checksum_are_encoded_again_once(tmp_path, sentence_encoder, caplog):
    """A cache written before checksums (diskcache rows without a tag): each such vector is a
    miss once, encoded again and stored with its checksum; an info line says how many."""
    folder = tmp_path / "old"
    enc = cached(folder, sentence_encoder)
    fresh = enc.transform(["one", "two", "three"])
    _sql(folder, "UPDATE Cache SET tag = NULL WHERE key IN ('one', 'two')")  # as before
    with caplog.at_level("INFO", logger="embetter_core.encoders.cache"):
        np.testing.assert_allclose(enc.transform(["one", "two", "three"]), fresh, atol=1e-5)
    assert enc.last_stats_["misses"] == 2 and "2 cached vector(s) have no checksum" in caplog.text
    enc.transform(["one", "two", "three"])
    assert enc.last_stats_["hits"] == 3
    assert len(diskcache.Cache(str(folder))) == 3 + 1  # replaced, not duplicated


def test_vectors_kept_in_files_are_checked_too(tmp_path):
    """Vectors over 32 kB live in files beside the database; a changed file is a miss."""
    folder = tmp_path / "big"
    enc = cached(folder, ProjectionEncoder(dim=10_000))
    items = [np.arange(4.0), np.ones(4)]
    first = enc.transform(items)
    files = sorted(p for p in folder.rglob("*.val"))
    assert len(files) == 2
    data = bytearray(files[0].read_bytes())
    data[-30] ^= 0xFF
    files[0].write_bytes(bytes(data))
    np.testing.assert_array_equal(enc.transform(items), first)
    assert enc.last_stats_["misses"] == 1 and enc.encoder._lazy_calls == [2, 1]
    enc.transform(items)
    assert enc.last_stats_["hits"] == 2
    assert len(list(folder.rglob("*.val"))) == 2  # the damaged file was replaced, not left


def test_damaged_database_is_named_and_never_retried(tmp_path, sentence_encoder):
    from embetter_core.errors import CacheCorruptError
    from tasks.retry import is_transient
    from tests.test_bad_input import not_a_database

    folder = not_a_database(tmp_path / "mycache")
    with pytest.raises(CacheCorruptError) as info:
        cached(folder, sentence_encoder).transform(["x"])
    assert info.value.folder == str(folder)
    message = str(info.value)
    assert f"the embedding cache {str(folder)!r} is damaged" in message
    assert "Delete the folder" in message and "--cache-dir" in message
    again = pickle.loads(pickle.dumps(info.value))  # crosses process boundaries whole
    assert type(again) is CacheCorruptError and again.folder == str(folder)

    class Failed:  # the one method of a Prefect state that is_transient calls
        def result(self):
            raise info.value

    assert is_transient(None, None, Failed()) is False


def test_busy_database_is_not_called_damaged(tmp_path):
    import sqlite3

    from embetter_core.encoders.cache import named_if_damaged

    locked = pytest.raises(sqlite3.OperationalError, match="database is locked")
    with locked, named_if_damaged(str(tmp_path)):
        raise sqlite3.OperationalError("database is locked")
