"""``EncoderSpec``: the one description of an encoder, and the registry of encoder kinds.

Flows, workers, saved models and remote GPUs pass the spec (a few strings), never a loaded
model. ``EncoderSpec.parse`` reads the one string form the command line and
``EMBETTER_MODAL_MODELS`` use, ``str(spec)`` writes it back, ``from_encoder`` describes an
encoder and ``build`` makes one.

>>> spec = EncoderSpec.parse("clip:ViT-B-32@openai", batch_size=64)
>>> spec.kind, spec.model, spec.pretrained, spec.batch_size, str(spec)
('clip', 'ViT-B-32', 'openai', 64, 'clip:ViT-B-32@openai')
>>> EncoderSpec.from_encoder(spec.build()) == spec
True
>>> type(EncoderSpec().build()).__name__, EncoderSpec().model_name
('SentenceEncoder', 'all-MiniLM-L6-v2')

Adding an encoder: a module with an :class:`~embetter_core.encoders.base.EmbeddingEncoder` subclass
(overriding the spec / Modal methods only where the defaults do not fit), one line in
:data:`ENCODERS`, and its tests.
"""

from __future__ import annotations

import re
from importlib import import_module
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from embetter_core.encoders.base import EmbeddingEncoder

# The registered encoders: kind -> "module:Class", imported on first use. One line each.
ENCODERS: dict[str, str] = {
    "sentence": "embetter_core.encoders.text:SentenceEncoder",
    "clip": "embetter_core.encoders.vision:ClipEncoder",
    "static": "embetter_core.encoders.static:StaticEncoder",
}
# The remote backends: backend -> "module:Class" of the wrapper, with a classmethod
# ``around(encoder, spec)``. Imported on first use, so this module never imports offload/.
BACKENDS: dict[str, str] = {
    "modal": "embetter_core.offload.encoder:ModalEncoder",
}
DEFAULT_KIND = "sentence"  # the kind of a bare model name, e.g. "all-MiniLM-L6-v2"
_KIND_LIKE = re.compile(r"[a-z][a-z0-9_]+")  # "KIND:" prefixes; "hf-hub:", "C:" are not kinds


def encoder_class(kind: str) -> type[EmbeddingEncoder]:
    """The encoder class registered as ``kind`` (its module imported now).

    >>> encoder_class("sentence").__name__
    'SentenceEncoder'
    """
    target = ENCODERS.get(kind)
    if target is None:
        raise ValueError(f"unknown encoder kind {kind!r}; registered kinds: {sorted(ENCODERS)}")
    module, _, name = target.partition(":")
    cls = getattr(import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, EmbeddingEncoder)):
        raise TypeError(f"ENCODERS[{kind!r}] = {target!r} is not an EmbeddingEncoder subclass")
    return cls


def kind_of(cls: type) -> str | None:
    """The kind ``cls`` is registered as, ``None`` for an unregistered class (a subclass of a
    registered class is not registered). Nothing is imported.

    >>> from embetter_core import SentenceEncoder
    >>> kind_of(SentenceEncoder), kind_of(int)
    ('sentence', None)
    """
    target = f"{cls.__module__}:{cls.__qualname__}"
    return next((kind for kind, registered in ENCODERS.items() if registered == target), None)


class EncoderSpec(BaseModel):
    """Which encoder to run, with which weights, where.

    Attributes:
        kind: a registered encoder kind (:data:`ENCODERS`): ``"sentence"``
            (sentence-transformers), ``"clip"`` (open_clip, images + text) or ``"static"``
            (model2vec; ``model`` ``None`` distils all-MiniLM-L6-v2 once).
        model: model name or local path; ``None`` is the kind's default.
        pretrained: CLIP only: an open_clip pretrained tag or a local checkpoint path.
        batch_size: items per forward pass (per remote call with ``backend="modal"``).
        device: ``cpu`` / ``cuda`` / ``mps``; ``None`` picks the best available.
        precision: ``SentenceEncoder`` only: ``"auto"`` / ``"fp32"`` / ``"fp16"`` / ``"bf16"``;
            ``None`` is the encoder's default (``"auto"``).
        backend: ``"local"`` encodes here; ``"modal"`` sends batches to Modal GPUs.
        gpu: Modal GPU type with ``backend="modal"`` (``"any"``, ``"T4"``, ``"A10G"``, ...).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = DEFAULT_KIND
    model: str | None = None
    pretrained: str | None = None
    batch_size: int = Field(32, ge=1)
    device: str | None = None
    precision: str | None = None
    backend: Literal["local", "modal"] = "local"
    gpu: str = "any"

    @field_validator("kind")
    @classmethod
    def _registered(cls, kind: str) -> str:
        if kind not in ENCODERS:
            raise ValueError(f"unknown encoder kind {kind!r}; registered kinds: {sorted(ENCODERS)}")
        return kind

    # -- the string form ----------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, **overrides: Any) -> EncoderSpec:
        """The spec an encoder string names; ``overrides`` set the other fields.

        The forms: ``KIND`` (that kind's default model), ``KIND:MODEL`` (for CLIP
        ``clip:ARCH@TAG`` or ``clip:ARCH@CHECKPOINT_PATH``) and a bare model name, which is a
        ``sentence`` model (write ``sentence:NAME`` for a name with a colon).

        >>> EncoderSpec.parse("sentence-transformers/paraphrase-MiniLM-L3-v2").kind
        'sentence'
        >>> EncoderSpec.parse("clip", device="cpu").model_name
        'ViT-B-32'
        >>> EncoderSpec.parse("clp:ViT-B-32@openai")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: encoder 'clp:ViT-B-32@openai': unknown encoder kind 'clp'; registered kinds: ...
        """
        text = text.strip()
        if not text:
            raise ValueError(
                f"empty encoder name; write a model name, KIND or KIND:MODEL "
                f"(kinds: {sorted(ENCODERS)})"
            )
        prefix, sep, rest = text.partition(":")
        if text in ENCODERS:
            kind, fields = text, {}
        elif sep and prefix in ENCODERS:
            if not rest.strip():
                raise ValueError(
                    f"encoder {text!r}: no model after the colon; write {prefix!r} alone for "
                    "its default model"
                )
            kind, fields = prefix, encoder_class(prefix).parse_weights(rest.strip())
        elif sep and _KIND_LIKE.fullmatch(prefix):
            raise ValueError(
                f"encoder {text!r}: unknown encoder kind {prefix!r}; registered kinds: "
                f"{sorted(ENCODERS)}"
            )
        else:
            kind, fields = DEFAULT_KIND, encoder_class(DEFAULT_KIND).parse_weights(text)
        fields = {"kind": kind, **fields}
        for key, value in fields.items():
            given = overrides.get(key)
            if given is not None and given != value:
                raise ValueError(
                    f"encoder {text!r} sets {key}={value!r}, but {key}={given!r} was also given"
                )
        rest = {k: v for k, v in overrides.items() if k not in fields}
        return cls(**rest, **fields)

    def to_string(self) -> str:
        """The encoder string :meth:`parse` reads back: kind and weights (the kind's defaults
        filled in where only one of ``model`` / ``pretrained`` is set); the other fields are
        not part of it.

        >>> EncoderSpec(kind="clip", model="ViT-B-32", pretrained="openai").to_string()
        'clip:ViT-B-32@openai'
        >>> str(EncoderSpec(model="all-MiniLM-L6-v2")), str(EncoderSpec(kind="clip"))
        ('all-MiniLM-L6-v2', 'clip')
        """
        if self.model is None and self.pretrained is None:
            return self.kind
        weights = self.encoder_class().format_weights(self)
        bare = self.kind == DEFAULT_KIND and weights not in ENCODERS
        if bare and not (":" in weights and _KIND_LIKE.fullmatch(weights.partition(":")[0])):
            return weights
        return f"{self.kind}:{weights}"

    def __str__(self) -> str:
        return self.to_string()

    # -- encoders -------------------------------------------------------------------------------
    @classmethod
    def from_encoder(cls, encoder: Any) -> EncoderSpec:
        """The spec of a registered encoder; a ``cached(...)`` wrapper is looked through and
        a ``ModalEncoder`` gives ``backend="modal"`` with its ``gpu``.

        Raises ``TypeError`` for an encoder whose class is not in :data:`ENCODERS`.

        >>> from embetter_core import ClipEncoder
        >>> EncoderSpec.from_encoder(ClipEncoder(batch_size=8)).to_string()
        'clip:ViT-B-32@openai'
        """
        where: dict[str, Any] = {}
        while isinstance(encoder, EmbeddingEncoder) and (inner := encoder.wrapped()) is not None:
            where = {**encoder.spec_overrides(), **where}
            encoder = inner
        kind = kind_of(type(encoder))
        if kind is None:
            name = f"{type(encoder).__module__}.{type(encoder).__qualname__}"
            raise TypeError(
                f"{name} is not a registered encoder; EncoderSpec describes the kinds "
                f"{sorted(ENCODERS)} (register a class in embetter_core.encoders.spec.ENCODERS)"
            )
        return cls(kind=kind, **encoder.spec_params(), **where)

    def encoder_class(self) -> type[EmbeddingEncoder]:
        """The class this spec's ``kind`` is registered as."""
        return encoder_class(self.kind)

    @property
    def model_name(self) -> str:
        """The model name with the kind's default filled in."""
        return self.model or self.build_local().spec_params().get("model") or self.kind

    def build_local(self) -> EmbeddingEncoder:
        """The local encoder this spec describes (the model loads lazily on first use)."""
        return self.encoder_class().from_spec(self)

    def build(self) -> EmbeddingEncoder:
        """The encoder to run: local, or wrapped for Modal GPU offload."""
        local = self.build_local()
        if self.backend == "local":
            return local
        module, _, name = BACKENDS[self.backend].partition(":")
        return getattr(import_module(module), name).around(local, self)
