"""Task-level behaviour: retries for transient failures only, one model per process."""

from __future__ import annotations

import numpy as np
import pytest
from prefect import flow

import tasks.embed as embed_module
from embetter_core.spec import EncoderSpec
from tasks.embed import cached_encoder, embed_chunk


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
