"""Shared fixtures: offline settings, one Prefect test harness per session, the real model."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server and database for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def sentence_encoder():
    """The real packaged all-MiniLM-L6-v2, loaded once per session."""
    from embetter_core import SentenceEncoder

    enc = SentenceEncoder()
    enc.transform(["warm up"])
    return enc


@pytest.fixture
def texts() -> list[str]:
    return [
        "A fast embedding cache for text corpora.",
        "Prefect flows schedule nightly jobs.",
        "",
        "A fast embedding cache for text corpora.",
        "Near-duplicate detection with cosine similarity.",
    ]
