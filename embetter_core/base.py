"""The estimator base every encoder shares, and input validation for text.

An encoder is a stateless scikit-learn transformer: ``fit`` does nothing, ``transform``
returns a float32 array ``(n, d)``, and ``fingerprint()`` names everything that decides the
vectors (model, revision, settings), so caches and stores never mix two encoders' vectors.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class EmbeddingEncoder(TransformerMixin, BaseEstimator):
    """Base class for encoders: ``fit`` is a no-op and the estimator counts as fitted.

    Subclasses implement ``transform`` and ``_fingerprint_fields``; models load lazily and are
    kept in attributes named ``_lazy_*``, which pickling and ``clone`` leave out.
    """

    def fit(self, X: Any = None, y: Any = None) -> EmbeddingEncoder:  # noqa: N803
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

    def validate_input(self, X: Any) -> list[Any]:  # noqa: N803
        """Check the input and return it as a list; text encoders take strings only."""
        return check_texts(X)


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


def check_texts(X: Any) -> list[str]:  # noqa: N803
    """Validate text input and return it as a list of ``str``.

    Accepts a list, tuple, pandas Series or 1-D array of strings. ``None``, NaN and
    non-strings raise ``ValueError`` naming the first bad position; ``""`` is a valid text.

    >>> check_texts(["a", ""])
    ['a', '']
    >>> check_texts(["a", None])
    Traceback (most recent call last):
    ...
    ValueError: text input at position 1 is None; expected a string
    """
    if isinstance(X, str):
        raise ValueError("expected a sequence of strings, got a single string; wrap it in a list")
    if hasattr(X, "ndim") and getattr(X, "ndim", 1) != 1:
        raise ValueError(f"expected 1-D text input, got an array of shape {X.shape}")
    values = X.tolist() if hasattr(X, "tolist") else list(_as_iterable(X))
    for pos, item in enumerate(values):
        if isinstance(item, str):
            continue
        what = "None" if item is None else "NaN" if _is_missing(item) else type(item).__name__
        raise ValueError(f"text input at position {pos} is {what}; expected a string")
    return values


def _as_iterable(X: Any) -> Iterable[Any]:  # noqa: N803
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
