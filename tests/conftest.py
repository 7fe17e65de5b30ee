"""Shared fixtures: offline settings, one Prefect test harness per session, the real model."""

from __future__ import annotations

import json

import pytest

from flows.offline import use_offline_defaults

use_offline_defaults()  # before any model loads; subprocesses of the tests inherit them


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


TINY_CLIP = "embetter-tiny-clip"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A registered tiny architecture, its random weights in memory and as a checkpoint."""
    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("tiny_clip")
    config = folder / f"{TINY_CLIP}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP)
    model.eval()
    checkpoint = folder / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    return {
        "model": model,
        "preprocess": preprocess,
        "tokenizer": open_clip.get_tokenizer(TINY_CLIP),
        "checkpoint": checkpoint,
    }
