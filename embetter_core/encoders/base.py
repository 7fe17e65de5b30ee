"""The estimator base every encoder shares, and input validation for text.

An encoder is a stateless scikit-learn transformer: ``fit`` does nothing, ``transform``
returns a float32 array ``(n, d)``, and ``fingerprint()`` names everything that decides the
vectors (model, revision, settings), so caches and stores never mix two encoders' vectors.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class SpecFields(Protocol):
    """What an encoder reads off an :class:`~embetter_core.encoders.spec.EncoderSpec` (the
    spec module sits above this one and imports it, so the contract is written here)."""

    kind: str
    model: str | None


class EmbeddingEncoder(TransformerMixin, BaseEstimator):
    """Base class for encoders: ``fit`` is a no-op and the estimator counts as fitted.

    Subclasses implement ``transform`` and ``_fingerprint_fields``; models load lazily and are
    kept in attributes named ``_lazy_*``, which pickling and ``clone`` leave out.

    How an :class:`~embetter_core.encoders.spec.EncoderSpec` describes the encoder, and what
    may cross to a Modal container, are methods here with defaults that fit an encoder whose
    ``__init__`` takes ``name`` / ``batch_size`` / ``device``; a subclass overrides only what
    differs (``ClipEncoder`` adds ``pretrained`` and sends image files as bytes).
    """

    #: EncoderSpec field -> ``__init__`` parameter; a parameter the class lacks is left out.
    spec_fields: ClassVar[dict[str, str]] = {
        "model": "name",
        "pretrained": "pretrained",
        "batch_size": "batch_size",
        "device": "device",
        "precision": "precision",
    }
    #: pip packages a Modal container needs to run this encoder (pinned to the local versions).
    remote_packages: ClassVar[tuple[str, ...]] = ()
    #: what ``transform`` encodes: ``"text"``, and ``"image"`` for an encoder that reads images.
    modalities: ClassVar[tuple[str, ...]] = ("text",)
    #: The dedupe threshold measured best for this encoder (removal F1 on the Debian
    #: same-source labels, ``benchmarks.dedupe_quality``); ``None``: not measured, and the
    #: flow falls back to ``embetter_core.dedupe.DEFAULT_THRESHOLD``.
    recommended_threshold: ClassVar[float | None] = None
    #: As a two-stage dedupe's first stage (``embetter_core.dedupe.rescore``): the recall-oriented
    #: threshold whose pairs name the rows a better encoder re-encodes; ``None``: this
    #: encoder is not meant to be a first stage.
    candidate_threshold: ClassVar[float | None] = None
    #: Rows per chunk (one Prefect task each) when a flow is not told: a chunk should take
    #: seconds to encode, so that the per-task cost (tens of ms) stays small beside it.
    chunk_size: ClassVar[int] = 1000

    def fit(self, X: Any = None, y: Any = None) -> EmbeddingEncoder:
        """Do nothing: encoders are pretrained. Returns ``self``."""
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def _fingerprint_fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A stable string naming what decides the vectors (class, model, revision, settings)."""
        fields = {"encoder": type(self).__name__, **self._fingerprint_fields()}
        return json.dumps(fields, sort_keys=True, default=str)

    def cache_keys(self, items: Sequence[Any]) -> list[Any]:
        """Keys for ``cached()``: a string is its own key, anything else a content hash."""
        return [item if isinstance(item, str) else content_key(item) for item in items]

    def __getstate__(self) -> dict[str, Any]:
        # Lazily loaded state (models, open caches) is never pickled: it reloads on use.
        state = super().__getstate__()
        return {k: v for k, v in state.items() if not k.startswith("_lazy_")}

    def validate_input(self, X: Any) -> list[Any]:
        """Check the input and return it as a list; text encoders take strings only."""
        return check_texts(X)

    @classmethod
    def text_items(cls, texts: Sequence[str]) -> list[Any]:
        """``texts`` as items that ``transform`` encodes as texts, whatever they look like.

        A text encoder takes the strings as they are; an encoder that also reads image files
        from strings (``ClipEncoder``) marks them, so ``"cat.png"`` stays a text.

        >>> EmbeddingEncoder.text_items(["cat.png"])
        ['cat.png']
        """
        return list(texts)

    # -- how an EncoderSpec describes this encoder (embetter_core.encoders.spec) -------------
    def spec_params(self) -> dict[str, Any]:
        """This encoder's settings as ``EncoderSpec`` fields (see ``spec_fields``).

        >>> from embetter_core import SentenceEncoder
        >>> SentenceEncoder(batch_size=8).spec_params()
        {'model': 'all-MiniLM-L6-v2', 'batch_size': 8, 'device': None, 'precision': 'auto'}
        """
        params = self.get_params(deep=False)
        return {
            field: os.fspath(params[param])
            if isinstance(params[param], os.PathLike)
            else params[param]
            for field, param in self.spec_fields.items()
            if param in params
        }

    @classmethod
    def from_spec(cls, spec: SpecFields) -> Self:
        """A new encoder with ``spec``'s settings; a field left ``None`` keeps the class default.

        A setting the class has no parameter for (``pretrained`` for a ``SentenceEncoder``)
        raises ``ValueError`` rather than being ignored; ``batch_size`` and ``device`` are
        hints a class without them ignores.
        """
        accepted = set(cls._get_param_names())
        kwargs: dict[str, Any] = {}
        for field, param in cls.spec_fields.items():
            value = getattr(spec, field)
            if value is None:
                continue
            if param in accepted:
                kwargs[param] = value
            elif field not in ("batch_size", "device"):
                raise ValueError(
                    f"encoder kind {spec.kind!r} ({cls.__name__}) takes no {field}; "
                    f"got {field}={value!r}"
                )
        return cls(**kwargs)

    @classmethod
    def parse_weights(cls, text: str) -> dict[str, str]:
        """The ``EncoderSpec`` fields named by the text after ``KIND:`` in an encoder string
        (see ``EncoderSpec.parse``): by default the model name."""
        return {"model": text}

    @classmethod
    def format_weights(cls, spec: SpecFields) -> str:
        """The inverse of :meth:`parse_weights`, the class default filled in for ``None``."""
        return spec.model or str(cls._init_default("name") or "")

    @classmethod
    def _init_default(cls, param: str) -> Any:
        parameter = inspect.signature(cls.__init__).parameters.get(param)
        if parameter is None or parameter.default is inspect.Parameter.empty:
            return None
        return parameter.default

    # -- wrappers (cached(...), ModalEncoder) --------------------------------------------------
    def wrapped(self) -> EmbeddingEncoder | None:
        """The encoder this one wraps (``None`` for an encoder that computes its own vectors):
        :meth:`EncoderSpec.from_encoder` looks through wrappers with it."""
        return None

    def spec_overrides(self) -> dict[str, Any]:
        """What this wrapper adds to the spec of the encoder it wraps (e.g. a GPU backend)."""
        return {}

    # -- what crosses to a Modal container (embetter_core.offload) ---------------------------
    def check_remote(self) -> None:
        """Raise ``ValueError`` when the weights are a local file or folder, which a Modal
        container cannot read (it runs offline with the weights baked into its image)."""
        for field in ("model", "pretrained"):
            value = self.spec_params().get(field)
            if isinstance(value, str) and os.path.exists(value):
                self._refuse_local_weights(value)

    def _refuse_local_weights(self, value: str) -> None:
        raise ValueError(
            f"{type(self).__name__} weights {value!r} are a local file, which a Modal container "
            "cannot read; use a hub name / open_clip tag and bake it into the image with "
            "EMBETTER_MODAL_MODELS before deploying the Modal app"
        )

    def pack_items(self, items: Sequence[Any]) -> list[Any]:
        """``items`` as they travel to a Modal container (e.g. local files as their bytes)."""
        return list(items)

    def unpack_items(self, items: Sequence[Any]) -> list[Any]:
        """Inside the container: the inverse of :meth:`pack_items`, ready for ``transform``."""
        return list(items)

    def load_weights(self) -> None:
        """Load the model now, downloading its weights if missing: the Modal image build calls
        this to bake them into the image. By default it reads the lazy ``model_`` property."""
        getattr(self, "model_", None)


@dataclass(frozen=True)
class FileBytes:
    """A local file's name and bytes, sent to a Modal container in place of its path."""

    name: str
    data: bytes


def content_key(item: Any) -> tuple[str, str]:
    """A content hash for a non-string item (array, PIL image, bytes), never its ``repr``.

    >>> content_key(b"abc")[0]
    'sha256'
    >>> content_key(np.zeros(3)) == content_key(np.zeros(3))
    True
    """
    digest = hashlib.sha256()
    if isinstance(item, bytes | bytearray | memoryview):
        digest.update(b"bytes:")
        digest.update(bytes(item))
    elif isinstance(item, np.ndarray):
        arr = np.ascontiguousarray(item)
        digest.update(f"ndarray:{arr.dtype.str}:{arr.shape}:".encode())
        digest.update(arr.tobytes())
    elif hasattr(item, "tobytes") and hasattr(item, "mode") and hasattr(item, "size"):
        digest.update(f"image:{item.mode}:{item.size}:".encode())  # PIL image
        digest.update(item.tobytes())
    else:
        raise TypeError(f"cannot make a cache key for an item of type {type(item).__name__}")
    return ("sha256", digest.hexdigest())


def _is_missing(item: Any) -> bool:
    return item is None or (isinstance(item, float) and math.isnan(item))


def check_texts(X: Any) -> list[str]:
    """Validate text input and return it as a list of ``str``.

    Accepts a list, tuple, pandas Series or 1-D array of strings. ``None``, NaN, non-strings
    and strings that cannot be written as UTF-8 (a lone surrogate such as ``"\\ud800"``, which
    JSON allows) raise ``ValueError`` naming the first bad position.

    ``""`` is a valid text for an encoder, and so is a blank one (see :func:`is_blank_text`):
    it encodes to the same vector as ``""``. A corpus refuses both at ingest
    (:func:`embetter_core.corpus.read_corpus`), where they would all be duplicates.

    >>> check_texts(["a", "", "\\u200b"])
    ['a', '', '\\u200b']
    >>> check_texts(["a", None])
    Traceback (most recent call last):
    ...
    ValueError: text input at position 1 is None; expected a string
    >>> check_texts(["ok", "bad \\ud800"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: text input at position 1 cannot be written as UTF-8: lone surrogate ...
    """
    if isinstance(X, str):
        raise ValueError("expected a sequence of strings, got a single string; wrap it in a list")
    if hasattr(X, "ndim") and getattr(X, "ndim", 1) != 1:
        raise ValueError(f"expected 1-D text input, got an array of shape {X.shape}")
    values = X.tolist() if hasattr(X, "tolist") else list(_as_iterable(X))
    for pos, item in enumerate(values):
        if isinstance(item, str):
            if item.isascii() or (problem := utf8_problem(item)) is None:
                continue
            raise ValueError(f"text input at position {pos} cannot be written as UTF-8: {problem}")
        what = "None" if item is None else "NaN" if _is_missing(item) else type(item).__name__
        raise ValueError(f"text input at position {pos} is {what}; expected a string")
    return values


def utf8_problem(text: str) -> str | None:
    """Why ``text`` cannot be encoded as UTF-8 (it holds a lone surrogate), else ``None``.

    Such strings come from JSON (``"\\ud800"``) or ``surrogateescape`` decoding; caches,
    HDF5 stores and CSV reports cannot write them.

    >>> utf8_problem("caf\\u00e9") is None
    True
    >>> print(utf8_problem("x\\udc80"))
    lone surrogate '\\udc80' at character 1
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"lone surrogate {text[err.start]!r} at character {err.start}"
    return None


def is_blank_text(text: str) -> bool:
    """True when ``text`` shows nothing: empty, or only whitespace and invisible characters
    (controls such as NUL, and format characters such as U+200B zero-width space, U+FEFF
    byte-order mark, U+00AD soft hyphen, U+2060 word joiner). Encoders see such a text as
    ``""``: they all get the same vector.

    >>> [is_blank_text(t) for t in ["", " \\n", "\\x00", "\\u200b\\ufeff", "a\\u200b", "\\u00e9"]]
    [True, True, True, True, False, False]
    """
    if text.isprintable():  # nothing invisible but ASCII spaces: the common case, in C
        return not text or text.isspace()
    if text[0].isprintable() and not text[0].isspace():  # starts visibly: multi-line texts
        return False
    return all(ch.isspace() or unicodedata.category(ch) in _INVISIBLE for ch in text)


# Unicode categories that render as nothing: controls (NUL, ...) and format characters
# (U+200B, U+FEFF, ...). Whitespace (Zs / Zl / Zp) is caught by str.isspace.
_INVISIBLE = frozenset({"Cc", "Cf"})


def _as_iterable(X: Any) -> Iterable[Any]:
    try:
        return iter(X)
    except TypeError:
        raise ValueError(f"expected a sequence of strings, got {type(X).__name__}") from None


def as_float32(vectors: Any) -> np.ndarray:
    """Return a C-contiguous float32 2-D array."""
    return np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))


def pick_device(device: str | None = None) -> str:
    """Return ``device`` if given, else the best available: cuda, then mps, then cpu."""
    if device:
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"
