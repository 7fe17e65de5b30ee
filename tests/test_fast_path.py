"""The device paths (what CUDA runs), exercised on the CPU with the real models.

There is no GPU here. ``SentenceEncoder._encode_pipelined`` and
``ClipEncoder._encode_images(workers=...)`` are the code ``transform`` runs on CUDA; they run
on the CPU unchanged except that nothing is pinned, so these tests call them directly and
compare with today's paths. Pinning itself needs CUDA and is tested only where it exists.
"""

from __future__ import annotations

import json
import pickle
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone

from embetter_core import ClipEncoder, SentenceEncoder, cached
from embetter_core.encoders import device as device_helpers
from embetter_core.encoders import text as text_module
from embetter_core.encoders import vision as vision_module
from tests.conftest import TINY_CLIP


@pytest.fixture(scope="module")
def varied_texts() -> list[str]:
    rng = np.random.default_rng(1)
    words = ["apt", "package", "ünïcode", "kernel-module", "x", "lib", "()", "🙂", "[CLS]"]
    texts = [" ".join(rng.choice(words, size=int(k))) for k in rng.integers(1, 90, size=45)]
    texts += ["", "   ", "word " * 400, "Hello World!", "\ttabs\tand  spaces "]
    texts[7] = texts[40]  # a repeat, far apart
    return texts


@pytest.fixture(scope="module")
def cpu_encoder() -> SentenceEncoder:
    enc = SentenceEncoder(device="cpu", batch_size=8)
    enc.transform(["warm up"])
    return enc


# -- SentenceEncoder ------------------------------------------------------------------------
def test_device_path_gives_encode_vectors_in_input_order(cpu_encoder, varied_texts):
    plain = cpu_encoder.model_.encode(varied_texts, batch_size=8)
    got = cpu_encoder._encode_pipelined(varied_texts)
    assert got.shape == (50, 384) and got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(got, plain, atol=1e-5)
    np.testing.assert_allclose(got, cpu_encoder.transform(varied_texts), atol=1e-5)
    np.testing.assert_array_equal(got[7], got[40])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)  # Normalize ran
    # Reversed input, reversed output: each vector stays with its text.
    np.testing.assert_allclose(
        cpu_encoder._encode_pipelined(varied_texts[::-1]), got[::-1], atol=1e-6
    )


def test_token_plan_rebuilds_the_models_own_features(cpu_encoder, varied_texts):
    plan = cpu_encoder._token_plan()
    assert plan is not None and plan.extra == {"modality": "text"}
    assert set(plan.pads) == {"input_ids", "token_type_ids", "attention_mask"}
    rows = np.arange(len(varied_texts))
    mine = plan.features(plan.tokenize(varied_texts), rows, pin=False)
    reference = cpu_encoder.model_.preprocess(varied_texts)
    for name, value in mine.items():
        assert value.dtype == reference[name].dtype
        assert torch.equal(value, reference[name]), name
    assert mine["input_ids"].shape[1] == cpu_encoder.model_.max_seq_length  # truncated
    assert cpu_encoder._token_plan() is plan  # checked once per model


def test_blocks_and_tokenizer_calls_split_the_work_without_changing_it(
    cpu_encoder, varied_texts, monkeypatch
):
    expected = cpu_encoder._encode_pipelined(varied_texts)
    plan = cpu_encoder._token_plan()
    threads: dict[str, set[str]] = {"tokenize": set(), "features": set()}
    tokenize, features = plan.tokenize, plan.features

    def spy_tokenize(texts):
        threads["tokenize"].add(threading.current_thread().name)
        return tokenize(texts)

    def spy_features(table, rows, pin):
        threads["features"].add(threading.current_thread().name)
        assert pin is False  # no CUDA here: nothing is pinned, the code path is the same
        return features(table, rows, pin)

    monkeypatch.setattr(plan, "tokenize", spy_tokenize)
    monkeypatch.setattr(plan, "features", spy_features)
    monkeypatch.setattr(text_module, "_BLOCK", 16)  # 4 blocks, copied back one by one
    monkeypatch.setattr(text_module, "_TOKENIZE_CALL", 5)  # 4 tokenizer calls per block
    monkeypatch.setattr(text_module, "_TOKENIZE_MIN", 1)
    got = cpu_encoder._encode_pipelined(varied_texts)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # Tokenizing ran on the pool, padding on the prefetch thread: never on this thread.
    assert threads["tokenize"] and all(
        n.startswith("embetter-tokenize") for n in threads["tokenize"]
    )
    assert threads["features"] == {"embetter-prefetch_0"}


def test_device_path_progress_bar_counts_batches(cpu_encoder, varied_texts, capsys):
    enc = clone(cpu_encoder).set_params(show_progress_bar=True)
    enc.__dict__["_lazy_model"] = cpu_encoder.model_
    enc._encode_pipelined(varied_texts[:20])
    err = capsys.readouterr().err
    assert "Batches" in err and "3/3" in err  # 20 texts in batches of 8
    cpu_encoder._encode_pipelined(varied_texts[:20])
    assert "Batches" not in capsys.readouterr().err


def test_transform_takes_the_device_path_on_cuda_and_falls_back(cpu_encoder, monkeypatch):
    class FakeCuda:  # only the dispatch sees "cuda"; nothing runs on it
        type = "cuda"

    enc = SentenceEncoder(device="cpu")
    enc.__dict__["_lazy_model"] = cpu_encoder.model_
    monkeypatch.setattr(type(cpu_encoder.model_), "device", property(lambda self: FakeCuda()))
    sentinel = np.ones((2, 384), dtype=np.float32)
    calls: list[str] = []

    def pipelined(self, texts):
        calls.append("device path")
        return sentinel

    def batched(self, texts):
        calls.append("today's path")
        return sentinel

    contexts: list[tuple] = []
    real_autocast = text_module.autocast
    monkeypatch.setattr(SentenceEncoder, "_encode_pipelined", pipelined)
    monkeypatch.setattr(SentenceEncoder, "_encode_batched", batched)
    monkeypatch.setattr(
        text_module, "autocast", lambda *a: contexts.append(a) or real_autocast("fp32", "cpu")
    )
    assert enc.transform(["a", "b"]) is sentinel
    assert calls == ["device path"] and contexts == []
    # A model the device path cannot serve: today's path, under the precision's autocast.
    monkeypatch.setattr(SentenceEncoder, "_encode_pipelined", lambda self, texts: None)
    assert enc.transform(["a", "b"]) is sentinel
    assert calls == ["device path", "today's path"] and contexts == [("auto", "cuda")]


def test_model_with_a_prompt_keeps_todays_path(varied_texts):
    enc = SentenceEncoder(device="cpu", batch_size=8)
    enc.model_.prompts = {"query": "query: "}
    enc.model_.default_prompt_name = "query"
    assert enc._token_plan() is None
    assert enc._encode_pipelined(varied_texts[:3]) is None  # nothing encoded
    got = enc.transform(varied_texts[:3])  # today's path, which applies the prompt
    np.testing.assert_allclose(got, enc.model_.encode(varied_texts[:3]), atol=1e-5)


# -- precision --------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["half", "FP16", None, 16, "float32"])
def test_bad_precision_is_named(bad):
    enc = SentenceEncoder(precision=bad)  # __init__ stores it, unchecked (scikit-learn)
    assert enc.get_params()["precision"] == bad
    message = "precision must be one of 'auto', 'fp32', 'fp16', 'bf16'; got"
    with pytest.raises(ValueError, match=message):
        enc.transform(["a text"])
    with pytest.raises(ValueError, match=message):
        enc.transform([])  # checked before any work, even with nothing to encode


def test_precision_resolves_per_device():
    assert device_helpers.resolve_precision("auto", "cuda") == "fp16"
    assert device_helpers.resolve_precision("auto", "cpu") == "fp32"
    assert device_helpers.resolve_precision("auto", "mps") == "fp32"
    assert device_helpers.resolve_precision("bf16", "cuda") == "bf16"
    with device_helpers.autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with device_helpers.autocast("auto", "cpu"):
        assert not torch.is_autocast_enabled("cpu")


def test_bf16_stays_within_the_bound_and_shares_the_fingerprint(
    cpu_encoder, varied_texts, tmp_path
):
    texts = [*varied_texts[::3], varied_texts[47]]  # 18 texts, the 400-word one among them
    fp32 = cpu_encoder.transform(texts)
    enc = SentenceEncoder(device="cpu", batch_size=8, precision="bf16")
    enc.__dict__["_lazy_model"] = cpu_encoder.model_
    for got in (enc.transform(texts), enc._encode_pipelined(texts)):
        assert got.dtype == np.float32
        cos = np.sum(got * fp32, axis=1)
        assert cos.min() >= 0.9999  # the project's "same vectors" bound
        assert not np.allclose(got, fp32, atol=1e-6)  # bf16 really ran
    # Precision is not in the fingerprint: a cache filled at one precision serves another.
    assert enc.fingerprint() == SentenceEncoder(precision="fp16").fingerprint()
    assert enc.fingerprint() == cpu_encoder.fingerprint()
    fast = cached(tmp_path / "cache", cpu_encoder)
    filled = fast.transform(varied_texts[:4])
    served = cached(tmp_path / "cache", enc)
    np.testing.assert_array_equal(served.transform(varied_texts[:4]), filled)
    assert served.last_stats_["hits"] == 4
    fast.close()
    served.close()


def test_clone_and_pickle_keep_precision_and_drop_loaded_state(cpu_encoder):
    enc = SentenceEncoder(device="cpu", precision="bf16", batch_size=4)
    enc.__dict__["_lazy_model"] = cpu_encoder.model_
    assert enc._token_plan() is not None
    copy = clone(enc)
    assert copy.get_params()["precision"] == "bf16"
    assert not any(k.startswith("_lazy_") for k in copy.__dict__)
    restored = pickle.loads(pickle.dumps(enc))
    assert restored.precision == "bf16"
    assert not any(k.startswith("_lazy_") for k in restored.__dict__)  # no model, no plan


# -- helpers --------------------------------------------------------------------------------
def test_prefetched_keeps_order_and_reports_the_first_failure():
    import contextlib

    started: list[int] = []

    def work(x: int) -> int:
        started.append(x)
        if x in (3, 5):
            raise ValueError(f"item {x}")
        return x * 10

    ready = device_helpers.prefetched(work, range(8), depth=2)
    got = []
    with pytest.raises(ValueError, match="item 3"), contextlib.closing(ready):
        for value in ready:
            got.append(value)
    assert got == [0, 10, 20]
    assert max(started) <= 5  # never more than `depth` items beyond the one being used


def test_block_copier_writes_rows_once_per_block():
    out = np.full((5, 2), -1.0, dtype=np.float32)
    copier = device_helpers.BlockCopier(out, block_rows=3)
    copier.add([4, 0], torch.tensor([[4.0, 4.0], [0.0, 0.0]]))
    assert (out == -1).all()  # still on the "device"
    copier.add([2, 1], torch.tensor([[2.0, 2.0], [1.0, 1.0]]))  # 4 rows >= 3: copied
    assert out[:, 0].tolist() == [0.0, 1.0, 2.0, -1.0, 4.0]
    copier.add([3], torch.tensor([[3.0, 3.0]], dtype=torch.float16))
    copier.flush()
    assert out[:, 1].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pinned_on_cuda():
    tensor = device_helpers.pinned(np.arange(4), pin=True)
    assert tensor.is_pinned()
    assert device_helpers.can_pin("cuda") and not device_helpers.can_pin("cpu")


def test_nothing_pins_without_cuda():
    assert device_helpers.can_pin("cpu") is False
    tensor = device_helpers.pinned(np.arange(4), pin=False)
    assert tensor.tolist() == [0, 1, 2, 3]


# -- ClipEncoder --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip(tiny_clip):
    enc = ClipEncoder(TINY_CLIP, pretrained=str(tiny_clip["checkpoint"]), device="cpu")
    enc.set_params(batch_size=3)
    enc.transform(["warm up"])
    return enc


@pytest.fixture(scope="module")
def picture_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(3)
    paths = []
    for i in range(7):
        pixels = rng.integers(0, 256, size=(40 + i, 50, 3), dtype=np.uint8)
        image = Image.fromarray(pixels, "RGB").convert("L" if i == 2 else "RGB")
        path = folder / f"p{i}.{'png' if i % 2 else 'jpg'}"
        image.save(path)
        paths.append(path)
    return paths


def _images(enc: ClipEncoder, items: list, workers: int) -> np.ndarray:
    out = np.full((len(items), enc.embedding_dim()), np.nan, dtype=np.float32)
    enc._encode_images(items, list(range(len(items))), out, workers=workers)
    return out


def test_parallel_image_path_gives_the_same_vectors_in_order(clip, picture_files, monkeypatch):
    def inputs() -> list:
        lazy = Image.open(picture_files[1])  # opened, not decoded: decodes on first use
        return [*picture_files, str(picture_files[0]), lazy, lazy, Image.open(picture_files[2])]

    today = _images(clip, inputs(), workers=0)
    names: set[str] = set()
    pixels_of = clip.__dict__["_lazy_preprocess"]

    def spy(image):
        names.add(threading.current_thread().name)
        return pixels_of(image)

    monkeypatch.setitem(clip.__dict__, "_lazy_preprocess", spy)
    monkeypatch.setattr(vision_module, "_IMAGE_BLOCK", 4)  # several copy-back blocks
    parallel = _images(clip, inputs(), workers=3)  # batches of 3 over 11 images
    np.testing.assert_allclose(parallel, today, atol=1e-6)
    np.testing.assert_allclose(parallel[7], parallel[0], atol=1e-6)  # path and str agree
    np.testing.assert_allclose(parallel[8], parallel[1], atol=1e-6)  # lazy PIL = its file
    np.testing.assert_allclose(parallel[9], parallel[8], atol=1e-6)  # one object, twice
    np.testing.assert_allclose(parallel[10], parallel[2], atol=1e-6)  # grayscale file
    assert names and all(n.startswith("embetter-images") for n in names)
    # Each row is its own image: a reordered input gives the reordered vectors.
    np.testing.assert_allclose(_images(clip, inputs()[::-1], workers=2), parallel[::-1], atol=1e-6)


def test_parallel_image_path_names_a_bad_file(clip, picture_files, tmp_path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(picture_files[1].read_bytes()[:200])
    items = [*picture_files[:4], truncated, *picture_files[4:]]
    with pytest.raises(vision_module.UnreadableImageError, match="truncated.png"):
        _images(clip, items, workers=2)


def test_image_workers_only_on_cuda():
    assert vision_module.image_workers("cpu") == 0
    assert vision_module.image_workers("mps") == 0
    assert vision_module.image_workers("cuda") >= 1
    assert vision_module.image_workers("cuda:1") >= 1


# -- the benchmark runs without a GPU -------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke version")
def test_gpu_check_says_no_gpu_and_runs_a_smoke_version(tiny_clip, capsys):
    from benchmarks import gpu_check

    results = gpu_check.main(["--n", "12", "--clip-model", TINY_CLIP, "--images", "4"])
    out = capsys.readouterr().out
    assert "no GPU present" in out and "NOT measured" in out
    assert "GPU figures: not measured" in out
    assert results["min_cos_cpu_fp32"] > 0.99999
    assert results["texts_per_s_fp32"] > 0 and results["images_per_s"] > 0
    assert results["image_max_difference"] < 1e-5  # today's path and the pool agree
    assert "today's path" in out and "thread pool" in out
    assert json.dumps(results)  # plain floats
