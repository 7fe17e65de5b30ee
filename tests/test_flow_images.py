"""The embed-corpus flow on a folder of images, with the tiny open_clip model."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from embetter_core import ClipEncoder
from flows.embed_corpus import embed_corpus
from tests.conftest import TINY_CLIP


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        pixels = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    shutil.copy(folder / "img0.png", folder / "sub" / "copy-of-img0.png")
    (folder / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


@pytest.mark.slow
def test_image_folder_flow(prefect_harness, tiny_clip, tmp_path, image_folder):
    kwargs = {
        "input_path": str(image_folder),
        "encoder": "clip",
        "model": TINY_CLIP,
        "pretrained": str(tiny_clip["checkpoint"]),
        "output": str(tmp_path / "img.h5"),
        "cache_dir": str(tmp_path / "cache"),
        "report_dir": str(tmp_path / "report"),
        "chunk_size": 3,
        "threshold": 0.99,
    }
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        embed_corpus(**kwargs)
    assert not (tmp_path / "img.h5").exists()

    result = embed_corpus(**kwargs, skip_invalid=True)
    assert result.rows == 6 and result.skipped == 1
    with h5py.File(result.store_path) as f:
        ids = [i.decode() for i in f["ids"][:]]
        vectors = f["embeddings"][:]
    assert "sub/broken.jpg" not in ids and "sub/copy-of-img0.png" in ids
    assert vectors.shape == (6, 32)
    enc = ClipEncoder(TINY_CLIP, pretrained=str(tiny_clip["checkpoint"]), device="cpu")
    expected = enc.transform([image_folder / i for i in ids])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert result.cache_hits == 1  # the copied image has the same bytes: one key
    pairs = (tmp_path / "report" / "pairs.csv").read_text()
    assert "img0.png,sub/copy-of-img0.png" in pairs or "sub/copy-of-img0.png,img0.png" in pairs
    review = Path(result.review_html).read_text()  # the pair's two images as thumbnails
    assert review.count('"ia":"data:image/jpeg;base64,') >= 1
    assert review.count('"ib":"data:image/jpeg;base64,') >= 1
