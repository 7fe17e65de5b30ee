"""The Modal app: an image with the pinned packages and baked weights, and a GPU class.

Deploy once with ``modal deploy -m embetter_core.offload.modal_app`` (then
``ModalEncoder(mode="deployed")`` finds it), or let ``ModalEncoder(mode="ephemeral")`` run it
for one call. Settings are read here, at import, from ``EMBETTER_MODAL_GPU`` (default
``any``), ``EMBETTER_MODAL_TIMEOUT`` (600 s per batch), ``EMBETTER_MODAL_RETRIES`` (2),
``EMBETTER_MODAL_SCALEDOWN`` (60 s idle before a container stops), ``EMBETTER_MODAL_MAX_CONTAINERS``
(10; 0 for no cap) and ``EMBETTER_MODAL_MODELS`` (models baked into the image, comma-separated
encoder strings as ``EncoderSpec.parse`` reads them: sentence-transformers names or
``clip:ARCH@TAG``; default ``all-MiniLM-L6-v2``).

The GPU method is a shell around :func:`embetter_core.offload.remote.encode_batch`, which
builds the encoder the wire's ``EncoderSpec`` describes, as on a laptop, and calls
``transform``.
"""

from __future__ import annotations

from typing import Any

import modal
import numpy as np

from embetter_core.offload.remote import (
    APP_NAME,
    ModalSettings,
    check_baked,
    encode_batch,
    image_steps,
    load_models,
)

settings = ModalSettings.from_env()


def build_image(steps: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> modal.Image:
    """Apply :func:`~embetter_core.offload.remote.image_steps` to ``modal.Image``."""
    (name, args, kwargs), *rest = steps
    image = getattr(modal.Image, name)(*args, **kwargs)
    for name, args, kwargs in rest:
        image = getattr(image, name)(*args, **kwargs)
    return image


IMAGE_STEPS = image_steps(settings)
image = build_image(IMAGE_STEPS)
# The package source comes from the image's add_local_python_source step (.py files only).
app = modal.App(APP_NAME, image=image, include_source=False)


@app.cls(
    gpu=settings.gpu_request,
    timeout=settings.timeout,
    retries=modal.Retries(max_retries=settings.retries, initial_delay=1.0, backoff_coefficient=2.0),
    scaledown_window=settings.scaledown_window,
    max_containers=settings.max_containers,
)
class Embedder:
    """Holds the loaded models of one GPU container across calls."""

    @modal.enter()
    def load(self) -> None:
        """Load the baked models once per container (onto the GPU)."""
        load_models(settings.models)

    @modal.method()
    def encode(self, wire: dict[str, Any], items: list[Any]) -> np.ndarray:
        """Encode one batch with the encoder ``wire`` describes (see
        :func:`~embetter_core.offload.remote.wire_spec`): float32 ``(len(items), d)``."""
        check_baked(wire, settings.models)
        return encode_batch(wire, items)
