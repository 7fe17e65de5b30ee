"""EncoderSpec, the one description of an encoder: the string form, ``from_encoder`` for each
registered kind, ``build``, the errors, and a new encoder kind registered with one line (a toy
encoder defined here) going end to end: spec strings, caches, a saved DifferenceClassifier
and the Modal wire, run through the container's plain functions and ``Embedder.encode.local``
(a Modal GPU cannot run here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
import skops.io

from embetter_core import (
    ClipEncoder,
    DifferenceClassifier,
    ModalEncoder,
    SentenceEncoder,
    cached,
)
from embetter_core.encoders import ENCODERS, EmbeddingEncoder, EncoderSpec, encoder_class, kind_of
from embetter_core.offload.remote import (
    ModalSettings,
    check_baked,
    encode_batch,
    remote_packages,
    wire_spec,
)

ROOT = Path(__file__).resolve().parent.parent


# -- the string form ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "kind", "model", "pretrained"),
    [
        ("all-MiniLM-L6-v2", "sentence", "all-MiniLM-L6-v2", None),
        ("sentence-transformers/x", "sentence", "sentence-transformers/x", None),
        ("sentence:hf-hub:org/name", "sentence", "hf-hub:org/name", None),
        ("hf-hub:org/name", "sentence", "hf-hub:org/name", None),
        ("sentence:models:v2", "sentence", "models:v2", None),
        ("sentence:clip", "sentence", "clip", None),
        ("sentence", "sentence", None, None),
        ("clip", "clip", None, None),
        ("clip:ViT-B-32@openai", "clip", "ViT-B-32", "openai"),
        ("clip:ViT-L-14@/models/ckpt@v2.pt", "clip", "ViT-L-14", "/models/ckpt@v2.pt"),
        ("  clip:ViT-B-32@laion2b_s34b_b79k ", "clip", "ViT-B-32", "laion2b_s34b_b79k"),
    ],
)
def test_parse_forms(text, kind, model, pretrained):
    spec = EncoderSpec.parse(text)
    assert (spec.kind, spec.model, spec.pretrained) == (kind, model, pretrained)
    assert spec.batch_size == 32 and spec.backend == "local"


@pytest.mark.parametrize(
    "text",
    [
        "all-MiniLM-L6-v2",
        "sentence-transformers/paraphrase-MiniLM-L3-v2",
        "hf-hub:org/name",
        "sentence:models:v2",
        "sentence:clip",
        "sentence",
        "clip",
        "clip:ViT-B-32@openai",
        "clip:ViT-L-14@/models/ckpt@v2.pt",
    ],
)
def test_canonical_strings_round_trip(text):
    assert EncoderSpec.parse(text).to_string() == text
    assert str(EncoderSpec.parse(text)) == text


@pytest.mark.parametrize(
    "spec",
    [
        EncoderSpec(),
        EncoderSpec(model="all-MiniLM-L6-v2", batch_size=8, device="cpu"),
        EncoderSpec(model="a:b", backend="modal", gpu="T4"),
        EncoderSpec(model="clip"),
        EncoderSpec(kind="clip"),
        EncoderSpec(kind="clip", model="ViT-B-32", pretrained="openai", batch_size=4),
        EncoderSpec(kind="clip", model="RN50", pretrained="/tmp/w.pt", backend="modal"),
    ],
    ids=str,
)
def test_spec_round_trips_through_its_string(spec):
    rest = spec.model_dump(exclude={"kind", "model", "pretrained"})
    assert EncoderSpec.parse(str(spec), **rest) == spec


def test_string_fills_the_kind_default_for_a_half_given_clip_spec():
    spec = EncoderSpec(kind="clip", model="RN50")
    assert str(spec) == "clip:RN50@openai"
    again = EncoderSpec.parse(str(spec))
    assert again.build_local().fingerprint() == spec.build_local().fingerprint()


def test_parse_overrides_and_conflicts():
    spec = EncoderSpec.parse("clip:ViT-B-32@openai", batch_size=8, device="cpu", pretrained=None)
    assert (spec.pretrained, spec.batch_size, spec.device) == ("openai", 8, "cpu")
    with pytest.raises(ValueError, match=r"sets pretrained='openai', but pretrained='x'"):
        EncoderSpec.parse("clip:ViT-B-32@openai", pretrained="x")
    with pytest.raises(ValueError, match=r"sets kind='sentence', but kind='clip'"):
        EncoderSpec.parse("all-MiniLM-L6-v2", kind="clip")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty encoder name"),
        ("   ", "empty encoder name"),
        ("clip:ViT-B-32", r"clip:ARCH@TAG"),
        ("clip:@openai", r"clip:ARCH@TAG"),
        ("clip:ViT-B-32@", r"clip:ARCH@TAG"),
        ("clip:", r"no model after the colon; write 'clip' alone"),
        ("clp:ViT-B-32@openai", r"unknown encoder kind 'clp'; registered kinds: \['clip', "),
    ],
)
def test_parse_errors_name_the_string(text, message):
    with pytest.raises(ValueError, match=message):
        EncoderSpec.parse(text)


def test_modal_models_setting_uses_the_same_strings():
    s = ModalSettings.from_env({"EMBETTER_MODAL_MODELS": "all-MiniLM-L6-v2,clip,sentence:x"})
    assert s.models == ("all-MiniLM-L6-v2", "clip", "sentence:x")
    with pytest.raises(ValueError, match=r"EMBETTER_MODAL_MODELS entry 'clp:x@y'.*'clp'"):
        ModalSettings.from_env({"EMBETTER_MODAL_MODELS": "all-MiniLM-L6-v2,clp:x@y"})


# -- from_encoder and build ----------------------------------------------------------------------
def test_from_encoder_for_each_kind(tmp_path):
    sentence = SentenceEncoder("paraphrase-MiniLM-L3-v2", device="cpu", batch_size=8)
    assert EncoderSpec.from_encoder(sentence) == EncoderSpec(
        kind="sentence",
        model="paraphrase-MiniLM-L3-v2",
        device="cpu",
        batch_size=8,
        precision="auto",
    )
    bf16 = EncoderSpec.from_encoder(SentenceEncoder(precision="bf16"))
    assert bf16.precision == "bf16"
    assert bf16.build().fingerprint() == SentenceEncoder(precision="bf16").fingerprint()
    checkpoint = tmp_path / "w.pt"
    clip = ClipEncoder("RN50", pretrained=checkpoint, batch_size=4)
    assert EncoderSpec.from_encoder(clip) == EncoderSpec(
        kind="clip", model="RN50", pretrained=str(checkpoint), batch_size=4
    )
    assert str(EncoderSpec.from_encoder(clip)) == f"clip:RN50@{checkpoint}"


def test_from_encoder_looks_through_wrappers(tmp_path, sentence_encoder):
    bare = EncoderSpec.from_encoder(sentence_encoder)
    assert EncoderSpec.from_encoder(cached(tmp_path / "c", sentence_encoder)) == bare
    remote = ModalEncoder(sentence_encoder, gpu="T4", batch_size=512)
    expected = bare.model_copy(update={"backend": "modal", "gpu": "T4"})
    assert EncoderSpec.from_encoder(remote) == expected
    assert EncoderSpec.from_encoder(cached(tmp_path / "m", remote)) == expected


def test_from_encoder_refuses_unregistered_classes():
    class MySentenceEncoder(SentenceEncoder):
        pass

    for enc in (MySentenceEncoder(), object()):
        with pytest.raises(TypeError, match=r"not a registered encoder.*\['clip', 'sentence', "):
            EncoderSpec.from_encoder(enc)


@pytest.mark.parametrize(
    "spec",
    [
        EncoderSpec(model="paraphrase-MiniLM-L3-v2", batch_size=8, device="cpu", precision="fp16"),
        EncoderSpec(kind="clip", model="RN50", pretrained="openai", batch_size=4),
        EncoderSpec(kind="clip", model="ViT-B-32", pretrained="openai", backend="modal", gpu="L4"),
    ],
    ids=str,
)
def test_build_then_describe_gives_the_spec_back(spec):
    assert EncoderSpec.from_encoder(spec.build()) == spec


def test_build_makes_the_encoders_of_today():
    local = EncoderSpec(batch_size=8, device="cpu").build()
    assert isinstance(local, SentenceEncoder)
    assert local.get_params() == SentenceEncoder(device="cpu", batch_size=8).get_params()
    clip = EncoderSpec(kind="clip").build_local()
    assert clip.get_params() == ClipEncoder().get_params()
    remote = EncoderSpec(backend="modal", gpu="T4", batch_size=64).build()
    assert isinstance(remote, ModalEncoder) and (remote.gpu, remote.batch_size) == ("T4", 256)
    assert remote.encoder.batch_size == 64
    assert EncoderSpec(kind="clip").model_name == "ViT-B-32"
    assert EncoderSpec(model="x/y").model_name == "x/y"


def test_unknown_kind_and_misplaced_weights_are_refused():
    with pytest.raises(pydantic.ValidationError, match=r"unknown encoder kind 'nope'.*'sentence'"):
        EncoderSpec(kind="nope")
    with pytest.raises(
        ValueError, match=r"kind 'sentence' \(SentenceEncoder\) takes no pretrained"
    ):
        EncoderSpec(pretrained="openai").build_local()
    with pytest.raises(ValueError, match=r"kind 'clip' \(ClipEncoder\) takes no precision"):
        EncoderSpec(kind="clip", precision="fp16").build_local()
    with pytest.raises(pydantic.ValidationError, match="extra"):
        EncoderSpec(name="all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="unknown encoder kind 'nope'"):
        encoder_class("nope")


def test_importing_the_spec_loads_no_encoder_module():
    code = (
        "import sys\nfrom embetter_core.encoders.spec import EncoderSpec\n"
        "EncoderSpec(kind='clip')\n"
        "print(sorted(m for m in ('embetter_core.encoders.text', "
        "'embetter_core.encoders.vision', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_model_saved_in_the_older_format_still_loads(tmp_path, sentence_encoder):
    """Files written before EncoderSpec stored ``{"class": ..., "params": ...}``."""
    path = tmp_path / "m.skops"
    mod = DifferenceClassifier(sentence_encoder).fit(["a", "b"], ["a", "c"], [1, 0])
    mod.save(path)
    payload = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=str(path)))
    assert payload["encoder"] == EncoderSpec.from_encoder(sentence_encoder).model_dump()
    payload["encoder"] = {
        "class": "embetter_core.encoders.text.SentenceEncoder",
        "params": sentence_encoder.get_params(),
    }
    skops.io.dump(payload, str(path))
    again = DifferenceClassifier.load(path)
    assert again.enc.get_params() == sentence_encoder.get_params()
    np.testing.assert_array_equal(
        again.predict_proba(["a"], ["b"]), mod.predict_proba(["a"], ["b"])
    )
    payload["encoder"] = {"class": "somewhere.Else", "params": {}}
    skops.io.dump(payload, str(path))
    with pytest.raises(ValueError, match=r"saved with encoder 'somewhere.Else'.*pass enc="):
        DifferenceClassifier.load(path)


# -- a new kind: one module (here, this one), one registry line ----------------------------------
class ToyEncoder(EmbeddingEncoder):
    """Texts to letter-count vectors; ``name="lower"`` counts case-blind."""

    remote_packages = ("toy-encoder-package",)

    def __init__(self, name: str = "plain", batch_size: int = 32, offset: int = 0) -> None:
        self.name = name
        self.batch_size = batch_size
        self.offset = offset  # a setting EncoderSpec has no field for

    def _fingerprint_fields(self) -> dict[str, Any]:
        return {"model": self.name, "offset": self.offset}

    def transform(self, X: Any) -> np.ndarray:
        texts = self.validate_input(X)
        out = np.full((len(texts), 26), self.offset, dtype=np.float32)
        for row, text in enumerate(texts):
            for char in text.lower() if self.name == "lower" else text:
                if "a" <= char <= "z":
                    out[row, ord(char) - ord("a")] += 1
        return out


@pytest.fixture
def toy(monkeypatch):
    """The one line that registers the toy kind (undone after the test)."""
    monkeypatch.setitem(ENCODERS, "toy", f"{ToyEncoder.__module__}:ToyEncoder")
    return ToyEncoder


def test_a_registered_kind_works_end_to_end(toy, tmp_path, monkeypatch):
    spec = EncoderSpec.parse("toy:lower", batch_size=4)
    enc = spec.build()
    assert isinstance(enc, ToyEncoder)
    assert enc.get_params() == {"name": "lower", "batch_size": 4, "offset": 0}
    assert kind_of(ToyEncoder) == "toy" and str(spec) == "toy:lower"
    assert EncoderSpec.from_encoder(enc) == spec == EncoderSpec.parse(str(spec), batch_size=4)
    assert EncoderSpec(kind="toy").model_name == "plain"
    with pytest.raises(ValueError, match=r"kind 'toy' \(ToyEncoder\) takes no pretrained"):
        EncoderSpec(kind="toy", pretrained="x").build()

    # Caches and a saved difference model describe it through the spec.
    texts = ["Abc", "abc", "xyz"]
    np.testing.assert_array_equal(
        cached(tmp_path / "c", enc).transform(texts), enc.transform(texts)
    )
    mod = DifferenceClassifier(cached(tmp_path / "c", enc)).fit(
        texts, ["aBC", "ABC", "q"], [1, 1, 0]
    )
    mod.save(tmp_path / "m.skops")
    again = DifferenceClassifier.load(tmp_path / "m.skops")
    assert isinstance(again.enc, ToyEncoder) and again.enc.get_params() == enc.get_params()

    # The Modal wire: the spec travels, the container's plain functions rebuild the encoder.
    wire = wire_spec(enc)
    assert wire == {"spec": spec.model_dump(), "fingerprint": enc.fingerprint()}
    np.testing.assert_array_equal(encode_batch(wire, texts), enc.transform(texts))
    check_baked(wire, ["all-MiniLM-L6-v2", "toy:lower"])
    with pytest.raises(ValueError, match="not baked"):
        check_baked(wire, ["toy:plain"])
    assert "toy-encoder-package" in remote_packages()
    # A setting outside the spec that changes the vectors cannot cross.
    with pytest.raises(ValueError, match="settings outside EncoderSpec"):
        wire_spec(ToyEncoder("lower", offset=1))

    class InProcessModal(ModalEncoder):  # the transport only: batches run in this process
        def _dispatch(self, wire, batches):
            from embetter_core.offload import modal_app

            monkeypatch.setattr(modal_app, "settings", ModalSettings(models=("toy:lower",)))
            return [modal_app.Embedder().encode.local(wire, batch) for batch in batches]

    remote = EncoderSpec.parse("toy:lower", backend="modal").build()
    assert isinstance(remote, ModalEncoder)
    remote = InProcessModal(**remote.get_params(deep=False) | {"batch_size": 2})
    np.testing.assert_array_equal(remote.transform(texts), enc.transform(texts))
    assert EncoderSpec.from_encoder(remote) == EncoderSpec.parse("toy:lower", backend="modal")
