"""Embed one chunk through the cached encoder (cache hits read, misses encoded)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from embetter_core.encoders import CachedEncoder, EncoderSpec
from tasks.options import step

_ENCODERS: dict[tuple[str, str], CachedEncoder] = {}
_LOCK = threading.Lock()


def cached_encoder(spec: EncoderSpec, cache_dir: str) -> CachedEncoder:
    """One cached encoder per (spec, cache folder) per process: the model loads once."""
    key = (spec.model_dump_json(), cache_dir)
    with _LOCK:
        enc = _ENCODERS.get(key)
        if enc is None:
            enc = _ENCODERS[key] = CachedEncoder(name=cache_dir, encoder=spec.build())
        return enc


@step("embed-chunk", retrying=True, task_run_name="embed-chunk-{chunk}")
def embed_chunk(
    items: list[Any], chunk: int, spec: EncoderSpec, cache_dir: str
) -> tuple[np.ndarray, dict[str, int]]:
    """Vectors for the items of chunk number ``chunk`` (it names the task run), and its cache
    hit counts."""
    enc = cached_encoder(spec, cache_dir)
    vectors = enc.transform(items)
    return vectors, dict(enc.last_stats_)
