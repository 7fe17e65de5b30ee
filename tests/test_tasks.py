"""Task-level behaviour: the shared options, retries for transient failures only, one model
per process."""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest
from prefect import Task, flow
from prefect.cache_policies import NO_CACHE

import tasks
import tasks.embed as embed_module
from embetter_core.encoders import EncoderSpec
from tasks.embed import cached_encoder, embed_chunk


def all_tasks() -> dict[str, Task]:
    """Every Prefect task defined in ``tasks/``, by its name."""
    found = {}
    for info in pkgutil.iter_modules(tasks.__path__, "tasks."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, Task) and value.fn.__module__ == module.__name__:
                found[value.name] = value
    return found


def test_every_task_has_the_shared_options():
    """``tasks.options.step``: no task is cached or persists its result; the ones that touch
    models or disks per chunk retry transient errors; names and run names stay as the UI
    shows them."""
    found = all_tasks()
    assert {"ingest", "embed-chunk", "persist-chunk", "find-duplicates", "fit_model"} <= set(found)
    for name, one in found.items():
        assert one.cache_policy is NO_CACHE and one.persist_result is False, name
    retrying = {name for name, one in found.items() if one.retries}
    assert retrying == {"embed-chunk", "persist-chunk"}
    assert found["embed-chunk"].task_run_name == "embed-chunk-{chunk}"
    assert found["persist-chunk"].task_run_name == "persist-chunk-{chunk}"


class FlakyEncoder:
    """Fails the first ``failures`` calls with ``error``, then returns zeros."""

    def __init__(self, error: BaseException, failures: int) -> None:
        self.error, self.failures, self.calls = error, failures, 0
        self.last_stats_ = {"hits": 0, "misses": 0}

    def transform(self, items):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        self.last_stats_ = {"hits": 0, "misses": len(items)}
        return np.zeros((len(items), 3), dtype=np.float32)


@pytest.mark.slow
def test_embed_chunk_retries_transient_errors_only(prefect_harness, monkeypatch):
    flaky = FlakyEncoder(OSError("disk busy"), failures=1)
    monkeypatch.setattr(embed_module, "cached_encoder", lambda spec, folder: flaky)

    @flow
    def one_chunk():
        return embed_chunk(["a", "b"], 0, EncoderSpec(), "unused")

    vectors, stats = one_chunk()
    assert vectors.shape == (2, 3) and stats["misses"] == 2
    assert flaky.calls == 2  # failed once, retried once

    bad = FlakyEncoder(ValueError("text input at position 1 is None"), failures=5)
    monkeypatch.setattr(embed_module, "cached_encoder", lambda spec, folder: bad)
    with pytest.raises(ValueError, match="position 1 is None"):
        one_chunk()
    assert bad.calls == 1  # bad input is not retried


def test_cached_encoder_is_built_once_per_spec_and_folder(tmp_path):
    spec = EncoderSpec(batch_size=8)
    first = cached_encoder(spec, str(tmp_path / "a"))
    assert cached_encoder(EncoderSpec(batch_size=8), str(tmp_path / "a")) is first
    assert cached_encoder(spec, str(tmp_path / "b")) is not first
    assert first.encoder.batch_size == 8


def test_fit_model_builds_its_encoder_from_a_spec(tmp_path, sentence_encoder):
    import pandas as pd

    from embetter_core.encoders import CachedEncoder
    from tasks.train import fit_model

    frame = pd.DataFrame(
        {
            "a": ["a cat", "a dog", "red car", "blue sky"],
            "b": ["the cat", "a cat", "red car!", "green tea"],
            "label": [1, 0, 1, 0],
        }
    )
    spec = EncoderSpec(batch_size=2)
    model = fit_model.fn(frame, np.arange(4), spec, ["absdiff", "product"], str(tmp_path))
    assert isinstance(model.enc, CachedEncoder) and model.enc.encoder.batch_size == 2
    assert model.features == ("absdiff", "product")
    assert (tmp_path / "cache.db").exists()  # the texts went through the cache
    assert model.enc.fingerprint() == sentence_encoder.fingerprint()
    plain = fit_model.fn(frame, np.arange(4), spec, ["absdiff"])
    assert not isinstance(plain.enc, CachedEncoder)
    np.testing.assert_allclose(
        plain.enc.transform(["a cat"]), sentence_encoder.transform(["a cat"]), atol=1e-5
    )


def test_report_bookkeeping(tmp_path):
    from embetter_core.corpus import Corpus
    from embetter_core.dedupe import find_duplicates
    from flows.embed_report import run_facts, texts_in_report

    corpus = Corpus.from_texts(
        ["one", "", "two", "one again"], ["a", "b", "c", "d"], skip_invalid=True
    )
    vectors = np.array([[1, 0], [0, 1], [1, 0.01]], dtype=np.float32)
    report = find_duplicates(vectors, ids=corpus.ids, threshold=0.9)
    assert texts_in_report(report, corpus) == {"a": "one", "d": "one again"}
    facts = run_facts(corpus, tmp_path / "s.h5", {"hits": 1, "misses": 2}, "fp")
    assert facts["rows"] == 3 and facts["skipped rows"] == 1 and "first skipped" in facts
    assert facts["cache hits / misses"] == "1 / 2" and facts["encoder"] == "fp"
    assert "difference model" not in facts
    scored = run_facts(corpus, tmp_path / "s.h5", {"hits": 0, "misses": 0}, "fp", "m.skops", 0.5)
    assert (scored["difference model"], scored["min probability"]) == ("m.skops", 0.5)
