"""``EncoderSpec``: a small, validated description of an encoder that builds it anywhere.

Flows, workers and remote GPUs pass the spec (a few strings), never a loaded model.

>>> spec = EncoderSpec(kind="sentence")
>>> type(spec.build()).__name__, spec.model_name
('SentenceEncoder', 'all-MiniLM-L6-v2')
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from embetter_core.base import EmbeddingEncoder


class EncoderSpec(BaseModel):
    """Which encoder to run, with which weights, where.

    Attributes:
        kind: ``"sentence"`` (sentence-transformers) or ``"clip"`` (open_clip, images + text).
        model: model name or local path; ``None`` is the kind's default.
        pretrained: CLIP only: an open_clip pretrained tag or a local checkpoint path.
        batch_size: items per forward pass (per remote call with ``backend="modal"``).
        device: ``cpu`` / ``cuda`` / ``mps``; ``None`` picks the best available.
        backend: ``"local"`` encodes here; ``"modal"`` sends batches to Modal GPUs.
        gpu: Modal GPU type with ``backend="modal"`` (``"any"``, ``"T4"``, ``"A10G"``, ...).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["sentence", "clip"] = "sentence"
    model: str | None = None
    pretrained: str | None = None
    batch_size: int = Field(32, ge=1)
    device: str | None = None
    backend: Literal["local", "modal"] = "local"
    gpu: str = "any"

    @property
    def model_name(self) -> str:
        """The model name with the kind's default filled in."""
        if self.model:
            return self.model
        return "all-MiniLM-L6-v2" if self.kind == "sentence" else "ViT-B-32"

    def build_local(self) -> EmbeddingEncoder:
        """The local encoder this spec describes (the model loads lazily on first use)."""
        if self.kind == "sentence":
            from embetter_core.text import SentenceEncoder

            return SentenceEncoder(
                name=self.model_name, device=self.device, batch_size=self.batch_size
            )
        from embetter_core.vision import ClipEncoder

        return ClipEncoder(
            name=self.model_name,
            pretrained=self.pretrained or "openai",
            device=self.device,
            batch_size=self.batch_size,
        )

    def build(self) -> EmbeddingEncoder:
        """The encoder to run: local, or wrapped for Modal GPU offload."""
        local = self.build_local()
        if self.backend == "local":
            return local
        from embetter_core.offload import ModalEncoder

        return ModalEncoder(local, gpu=self.gpu, batch_size=max(self.batch_size, 256))
