"""embetter-core: embeddings and near-duplicate reports for text and image corpora.

Public names are imported lazily, so ``import embetter_core`` stays cheap.

>>> from embetter_core import SentenceEncoder, cached
>>> SentenceEncoder().get_params()["name"]
'all-MiniLM-L6-v2'
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from embetter_core import moved

__version__ = "0.1.0"

_EXPORTS = {
    "SentenceEncoder": "embetter_core.encoders.text",
    "StaticEncoder": "embetter_core.encoders.static",
    "ClipEncoder": "embetter_core.encoders.vision",
    "ImageLoader": "embetter_core.encoders.vision",
    "ColumnGrabber": "embetter_core.encoders.grab",
    "EncoderSpec": "embetter_core.encoders.spec",
    "cached": "embetter_core.encoders.cache",
    "CachedEncoder": "embetter_core.encoders.cache",
    "FingerprintMismatchError": "embetter_core.errors",
    "EmbeddingStore": "embetter_core.store",
    "read_corpus": "embetter_core.corpus",
    "Corpus": "embetter_core.corpus",
    "find_duplicates": "embetter_core.dedupe",
    "DuplicateReport": "embetter_core.dedupe",
    "Candidates": "embetter_core.dedupe",
    "find_reference_duplicates": "embetter_core.dedupe",
    "find_duplicates_incremental": "embetter_core.dedupe",
    "ReferenceMatches": "embetter_core.dedupe",
    "KeepRule": "embetter_core.dedupe",
    "SearchSettings": "embetter_core.dedupe",
    "find_duplicates_two_stage": "embetter_core.dedupe",
    "DifferenceClassifier": "embetter_core.difference",
    "ModalEncoder": "embetter_core.offload",
}

__all__ = sorted(_EXPORTS)

moved.install()  # the module paths from before the layout redesign keep working


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'embetter_core' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
