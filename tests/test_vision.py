"""ClipEncoder and ImageLoader on a real, tiny open_clip model.

No pretrained CLIP weights are reachable offline, so the tests register a small open_clip
architecture, save its randomly initialised weights as a checkpoint file and load that file
through ``ClipEncoder(name=..., pretrained=<path>)``: every step is real open_clip code.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import shutil

import diskcache
import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from embetter_core import ClipEncoder, FingerprintMismatchError, ImageLoader, cached
from embetter_core.errors import UnreadableImageError
from tests.conftest import TINY_CLIP

TINY = TINY_CLIP


@pytest.fixture(scope="module")
def encoder(tiny_clip):
    enc = ClipEncoder(TINY, pretrained=str(tiny_clip["checkpoint"]), device="cpu", batch_size=3)
    enc.transform(["warm up"])
    return enc


def _image(seed: int, size=(80, 60), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for seed, name in enumerate(["a.png", "b.PNG", "c.bmp", "d.tiff"]):
        path = folder / name
        _image(seed).save(path)
        paths.append(path)
    return paths


def _reference(tiny_clip, images=(), texts=()) -> np.ndarray:
    """Vectors from the in-memory model the checkpoint was saved from."""
    import torch

    model, rows = tiny_clip["model"], []
    with torch.inference_mode():
        if images:
            pixels = torch.stack([tiny_clip["preprocess"](im.convert("RGB")) for im in images])
            rows.append(model.encode_image(pixels, normalize=True).numpy())
        if texts:
            rows.append(model.encode_text(tiny_clip["tokenizer"](list(texts)), normalize=True))
    return np.concatenate([np.asarray(r) for r in rows])


def test_checkpoint_vectors_equal_in_memory_model(encoder, tiny_clip, image_files):
    images = [Image.open(p) for p in image_files]
    texts = ["a photo of a cat", "a red square", ""]
    got = encoder.transform(images + texts)
    assert got.shape == (7, 32)
    assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(got, _reference(tiny_clip, images, texts), atol=1e-5)
    # Random weights still separate inputs: no two rows are the same vector.
    sims = got @ got.T
    assert np.all(sims[~np.eye(7, dtype=bool)] < 0.9999)


def test_pil_path_and_str_inputs_agree(encoder, image_files):
    path = image_files[0]
    pil = encoder.transform([Image.open(path)])
    by_path = encoder.transform([path])
    by_str = encoder.transform([str(path)])
    np.testing.assert_allclose(by_path, pil, atol=1e-6)
    np.testing.assert_allclose(by_str, pil, atol=1e-6)
    # A grayscale PIL image is converted to RGB before resizing, like its file.
    gray = _image(7, mode="L")
    gray_path = path.parent / "gray.jpeg"
    gray.save(gray_path, quality=100)
    np.testing.assert_allclose(
        encoder.transform([gray_path]), encoder.transform([Image.open(gray_path)]), atol=1e-6
    )


def test_mixed_inputs_keep_order_across_batches(encoder, image_files):
    # batch_size=3: five images and four texts span several batches of each kind.
    texts = ["one", "two", "three", "four"]
    images = [Image.open(p) for p in image_files] + [_image(9)]
    mixed = [texts[0], images[0], image_files[1], texts[1], str(image_files[2]), texts[2]]
    mixed += [images[3], images[4], texts[3]]
    got = encoder.transform(mixed)
    singles = np.concatenate([encoder.transform([item]) for item in mixed])
    np.testing.assert_allclose(got, singles, atol=1e-5)
    np.testing.assert_allclose(got[1], encoder.transform([images[0]])[0], atol=1e-5)
    np.testing.assert_allclose(got[8], encoder.transform(["four"])[0], atol=1e-5)


def test_empty_input_and_bad_items(encoder):
    assert encoder.transform([]).shape == (0, 32)
    with pytest.raises(ValueError, match="position 1 is None"):
        encoder.transform(["a", None])
    with pytest.raises(ValueError, match="position 2 is NaN"):
        encoder.transform(["a", "b", math.nan])
    with pytest.raises(ValueError, match="position 0 is int"):
        encoder.transform([3])
    with pytest.raises(ValueError, match="single item"):
        encoder.transform("a photo")


def test_missing_and_corrupt_files_name_the_file(encoder, tmp_path, image_files):
    missing = tmp_path / "nowhere.jpg"
    with pytest.raises(FileNotFoundError, match="nowhere.jpg") as info:
        encoder.transform(["text", image_files[0], str(missing)])
    assert info.value.filename == str(missing)
    assert "position 2" in str(info.value)

    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image")
    with pytest.raises(UnreadableImageError, match="garbage.png") as info:
        encoder.transform([image_files[0], garbage])
    assert info.value.path == str(garbage)

    # A truncated file passes the header check and fails while decoding, still named.
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(image_files[0].read_bytes()[:200])
    with pytest.raises(UnreadableImageError, match="truncated.png"):
        encoder.transform([truncated])
    with pytest.raises(UnreadableImageError, match="truncated.png"):
        ImageLoader().transform([image_files[0], truncated])
    with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
        ImageLoader().transform([missing])


def test_image_loader_and_pipeline(encoder, image_files):
    loaded = ImageLoader().transform(image_files)
    assert [im.mode for im in loaded] == ["RGB"] * 4
    assert loaded[0].size == (80, 60)
    assert ImageLoader(convert="L").transform([image_files[0]])[0].mode == "L"
    assert ImageLoader(convert=None).fit().transform([image_files[0]])[0].mode == "RGB"

    pipe = make_pipeline(ImageLoader(), clone(encoder))
    got = pipe.fit_transform([str(p) for p in image_files])
    np.testing.assert_allclose(got, encoder.transform(image_files), atol=1e-6)
    assert clone(ImageLoader(convert="L")).get_params() == {"convert": "L"}


def test_clone_and_pickle_round_trip(encoder, image_files):
    assert "_lazy_model" in encoder.__dict__
    inputs = [image_files[0], "a caption"]
    expected = encoder.transform(inputs)

    copy = clone(encoder)
    assert copy.get_params() == encoder.get_params()
    assert not any(k.startswith("_lazy_") for k in copy.__dict__)
    np.testing.assert_allclose(copy.transform(inputs), expected, atol=1e-6)

    blob = pickle.dumps(encoder)
    assert len(blob) < 2000  # parameters only: the 13 MB model is not pickled
    restored = pickle.loads(blob)
    assert "_lazy_model" not in restored.__dict__
    np.testing.assert_allclose(restored.transform(inputs), expected, atol=1e-6)
    assert restored.fingerprint() == encoder.fingerprint()


def test_cache_keys_images_by_content_and_texts_by_text(encoder, tmp_path, image_files):
    first = tmp_path / "first.png"
    twin = tmp_path / "twin.png"  # another path, the same bytes
    shutil.copyfile(image_files[0], first)
    shutil.copyfile(image_files[0], twin)
    folder = tmp_path / "cache"
    enc = cached(folder, encoder)

    got = enc.transform([first, "a caption", str(twin)])
    assert enc.last_stats_ == {"items": 3, "unique": 2, "hits": 0, "misses": 2}
    np.testing.assert_allclose(got[0], got[2])
    key = ("sha256", hashlib.sha256(first.read_bytes()).hexdigest())
    assert encoder.cache_keys([first, str(twin), "a caption"]) == [key, key, "a caption"]
    pil = Image.open(first)
    assert encoder.cache_keys([pil])[0] != key  # a PIL image is keyed by its pixels
    with diskcache.Cache(folder) as store:
        np.testing.assert_allclose(store["a caption"], got[1])
        np.testing.assert_allclose(store[key], got[0])

    again = enc.transform([twin, "a caption", pil])
    assert enc.last_stats_ == {"items": 3, "unique": 3, "hits": 2, "misses": 1}
    np.testing.assert_allclose(again[:2], got[:2], atol=1e-6)
    np.testing.assert_allclose(again[2], got[0], atol=1e-6)

    _image(42).save(first)  # new bytes at the same path: a new key and a new vector
    new_key = encoder.cache_keys([first])[0]
    assert new_key != key
    changed = enc.transform([first])
    assert enc.last_stats_["misses"] == 1
    assert float(changed[0] @ got[0]) < 0.9999
    np.testing.assert_allclose(changed, encoder.transform([first]), atol=1e-6)
    enc.close()


def test_bad_file_in_cached_call_keeps_earlier_vectors(encoder, tmp_path, image_files):
    folder = tmp_path / "cache"
    enc = cached(folder, encoder)
    enc.transform([image_files[0], "kept"])
    with pytest.raises(FileNotFoundError, match="gone.png"):
        enc.transform([image_files[1], tmp_path / "gone.png"])
    enc.transform(["kept", image_files[0]])
    assert enc.last_stats_["hits"] == 2
    enc.close()


def test_checkpoint_fingerprint(encoder, tiny_clip, tmp_path):
    import torch

    fields = json.loads(encoder.fingerprint())
    checkpoint = tiny_clip["checkpoint"]
    assert fields["model"] == TINY
    assert fields["pretrained"] == str(checkpoint.resolve())
    assert fields["size"] == checkpoint.stat().st_size
    assert fields["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()

    # Other weights at another path: another fingerprint, and the cache refuses them.
    state = {
        k: v + 0.01 if v.is_floating_point() else v
        for k, v in tiny_clip["model"].state_dict().items()
    }
    other_path = tmp_path / "other.pt"
    torch.save(state, other_path)
    other = ClipEncoder(TINY, pretrained=other_path, device="cpu")
    assert json.loads(other.fingerprint())["sha256"] != fields["sha256"]
    folder = tmp_path / "cache"
    cached(folder, encoder).transform(["x"])
    with pytest.raises(FingerprintMismatchError):
        cached(folder, other).transform(["x"])


def test_named_tags_and_bad_weights_offline(tmp_path):
    import open_clip

    assert ClipEncoder().fingerprint() == (
        '{"encoder": "ClipEncoder", "model": "ViT-B-32", "pretrained": "openai"}'
    )
    with pytest.raises(ValueError, match="'no-such-tag'.*'ViT-B-32'") as info:
        ClipEncoder("ViT-B-32", pretrained="no-such-tag").transform(["x"])
    assert "openai" in str(info.value)  # the known tags are listed
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-B-33'"):
        ClipEncoder("ViT-B-33").transform(["x"])
    with pytest.raises(ValueError, match="pretrained must name"):
        ClipEncoder("ViT-B-32", pretrained=None).transform(["x"])
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ClipEncoder("ViT-B-32", pretrained=str(tmp_path / "missing.pt")).fingerprint()

    # A real tag goes to open_clip's download; offline it fails with the tag named.
    assert "openai" in open_clip.list_pretrained_tags_by_model("ViT-B-32")
    enc = ClipEncoder("ViT-B-32", pretrained="openai", device="cpu")
    try:
        vectors = enc.transform(["a photo"])
    except RuntimeError as exc:
        assert "pretrained='openai'" in str(exc) and "ViT-B-32" in str(exc)
    else:  # the weights were already in the local cache
        assert vectors.shape == (1, 512)


# -- issue 12: huge and cut-short images --------------------------------------------------------
def test_huge_image_is_refused_before_it_is_decoded(encoder, tmp_path, image_files):
    """A 144 Mpx PNG of 20 KB: refused from its header, naming the file, its size and the limit;
    decoding it would take 144 MB (PIL keeps a byte per pixel) and 576 MB more as RGB."""
    import resource

    from embetter_core.encoders.vision import MAX_IMAGE_PIXELS, load_image
    from embetter_core.errors import ImageTooLargeError
    from tests.test_bad_input import write_png

    huge = write_png(tmp_path / "huge.png", 12_000, 12_000)
    assert huge.stat().st_size < 100_000 and MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(ImageTooLargeError) as info:
        load_image(huge)
    assert info.value.path == str(huge) and info.value.size == (12_000, 12_000)
    assert "12000 x 12000 = 144,000,000 pixels); the limit is 50,000,000 pixels" in str(info.value)
    assert pickle.loads(pickle.dumps(info.value)).size == (12_000, 12_000)
    with pytest.raises(ImageTooLargeError, match="input position 1: image file .*huge.png"):
        encoder.transform([image_files[0], huge])
    with pytest.raises(ImageTooLargeError, match="huge.png"):
        ImageLoader().transform([huge])
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown_mb < 100, f"peak memory grew by {grown_mb:.0f} MB"


def test_large_images_are_decoded_reduced_and_normal_ones_as_they_are(encoder, tmp_path):
    from embetter_core.encoders import FileBytes
    from embetter_core.encoders.vision import REDUCE_ABOVE_PIXELS, load_image
    from tests.test_bad_input import write_png

    # Above the limit: the smallest whole factor that fits (PNG: reduce; JPEG: draft).
    assert load_image(write_png(tmp_path / "big.png", 6000, 6000)).size == (3000, 3000)
    kept_mode = ImageLoader(convert=None).transform([tmp_path / "big.png"])[0]
    assert (kept_mode.mode, kept_mode.size) == ("L", (3000, 3000))
    big = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize((6000, 4000)),
            Image.radial_gradient("L").resize((6000, 4000)),
            Image.linear_gradient("L").rotate(90).resize((6000, 4000)),
        ],
    )
    big.save(tmp_path / "big.jpg", quality=90)
    reduced = load_image(tmp_path / "big.jpg")
    assert reduced.size == (3000, 2000) and reduced.mode == "RGB"
    assert reduced.width * reduced.height <= REDUCE_ABOVE_PIXELS
    # The model sees 224 px: the vector barely moves.
    with Image.open(tmp_path / "big.jpg") as full:
        full.load()
        vectors = encoder.transform([tmp_path / "big.jpg", full.convert("RGB")])
    assert float(vectors[0] @ vectors[1]) > 0.99
    # Modal containers decode the bytes the same way.
    packed = FileBytes("big.jpg", (tmp_path / "big.jpg").read_bytes())
    unpacked = encoder.unpack_items([packed])[0]
    assert unpacked.size == reduced.size and unpacked.tobytes() == reduced.tobytes()

    # At the limit and below: decoded as they are, so vectors are unchanged.
    edge = load_image(write_png(tmp_path / "edge.png", 4096, 4096))
    assert edge.size == (4096, 4096) and edge.mode == "RGB"
    small = tmp_path / "small.png"
    _image(5, size=(300, 200)).save(small)
    with Image.open(small) as image:
        assert load_image(small).tobytes() == image.convert("RGB").tobytes()


def test_check_image_decodes_what_verify_lets_through(tmp_path, image_files):
    from embetter_core.encoders.vision import check_image
    from tests.test_bad_input import truncated_jpeg, write_png

    for path in (
        write_png(tmp_path / "short.png", 64, 64, finish=False),
        truncated_jpeg(tmp_path / "cut.jpg"),
    ):
        with Image.open(path) as image:
            image.verify()  # what ingest used to rely on
        with pytest.raises(UnreadableImageError, match=f"{path.name}.*truncated") as info:
            check_image(path)
        assert info.value.path == str(path)
    for path in image_files:
        check_image(path)
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        check_image(tmp_path / "nowhere.png")
