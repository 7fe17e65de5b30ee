"""Encoders: scikit-learn transformers from items (texts, images) to float32 vectors.

One module per encoder (``text``, ``vision``, ``static``, ``grab``) on the shared base
(``base``); ``cache`` wraps any of them in an on-disk cache; ``spec`` is the one description
of an encoder (:class:`EncoderSpec`) and the registry of encoder kinds (:data:`ENCODERS`);
``device`` feeds a GPU from the host. Names are imported on first use, so importing one
module (say ``spec``) does not load the others' dependencies (PIL, open_clip, torch).

>>> from embetter_core.encoders import ENCODERS, encoder_class
>>> sorted(ENCODERS), encoder_class("sentence").__name__
(['clip', 'sentence', 'static'], 'SentenceEncoder')
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "EmbeddingEncoder": "base",
    "FileBytes": "base",
    "as_float32": "base",
    "check_texts": "base",
    "content_key": "base",
    "is_blank_text": "base",
    "pick_device": "base",
    "utf8_problem": "base",
    "CachedEncoder": "cache",
    "cached": "cache",
    "ColumnGrabber": "grab",
    "ENCODERS": "spec",
    "EncoderSpec": "spec",
    "encoder_class": "spec",
    "kind_of": "spec",
    "StaticEncoder": "static",
    "DEFAULT_MODEL": "text",
    "SentenceEncoder": "text",
    "ClipEncoder": "vision",
    "ImageLoader": "vision",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'embetter_core.encoders' has no attribute {name!r}")
    return getattr(import_module(f"embetter_core.encoders.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
