"""``ModalEncoder``: run a local encoder's ``transform`` on Modal GPUs, batch by batch."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np

from embetter_core.encoders.base import EmbeddingEncoder, as_float32
from embetter_core.encoders.spec import EncoderSpec
from embetter_core.errors import ModalBatchError
from embetter_core.offload.ready import ModalUnavailableError, check_modal_ready, lookup_deployed
from embetter_core.offload.remote import APP_NAME, gpu_request, wire_spec

MODES = ("deployed", "ephemeral", "auto")


class ModalEncoder(EmbeddingEncoder):
    """Encode with ``encoder`` on Modal GPUs: batches go through ``.map`` in parallel.

    The vectors, fingerprint, cache keys and input checks are the wrapped encoder's, so a
    cache filled on a GPU is reused locally and vice versa; under ``cached()`` only cache
    misses are sent. Before sending anything, ``transform`` calls
    :func:`~embetter_core.offload.check_modal_ready`.

    Args:
        encoder: a registered encoder (``SentenceEncoder``, ``ClipEncoder``, see
            ``embetter_core.encoders.spec.ENCODERS``) with weights by hub name or tag.
        gpu: Modal GPU type (``"T4"``, ``"L4"``, ``"A10G"``, ``"H100"``...); ``"any"`` keeps
            the app's setting (by default the first free of L4, A10, T4).
        batch_size: items per remote call (one GPU container handles one call at a time).
            The default, 1,024, is the batch the GPU device path was sized for (issue 14:
            MiniLM's forward pass on length-sorted batches of 1,024 keeps an H100 busy); a
            call of that size fills one forward pass when the wrapped encoder's own
            ``batch_size`` (texts per forward pass on the GPU) is 1,024 too. Not measured on
            Modal yet.
        mode: ``"deployed"`` (the app from ``modal deploy -m embetter_core.offload.modal_app``),
            ``"ephemeral"`` (``app.run()`` for this call: builds/uploads on first use), or
            ``"auto"`` (deployed if found, else ephemeral).
        app_name: name of the deployed app.
        timeout, retries, max_containers: per-call overrides of the app's settings.

    >>> from embetter_core import SentenceEncoder
    >>> enc = ModalEncoder(SentenceEncoder(), batch_size=2)
    >>> enc.plan_batches(["a", "b", "c"])
    [['a', 'b'], ['c']]
    >>> enc.fingerprint() == SentenceEncoder().fingerprint()
    True
    """

    def __init__(
        self,
        encoder: EmbeddingEncoder,
        gpu: str = "any",
        batch_size: int = 1024,
        mode: str = "deployed",
        app_name: str = APP_NAME,
        timeout: int | None = None,
        retries: int | None = None,
        max_containers: int | None = None,
    ) -> None:
        self.encoder = encoder
        self.gpu = gpu
        self.batch_size = batch_size
        self.mode = mode
        self.app_name = app_name
        self.timeout = timeout
        self.retries = retries
        self.max_containers = max_containers

    @classmethod
    def around(cls, encoder: EmbeddingEncoder, spec: EncoderSpec) -> ModalEncoder:
        """``encoder`` offloaded as ``spec`` asks (its ``gpu``; batches of 256 or more)."""
        return cls(encoder, gpu=spec.gpu, batch_size=max(spec.batch_size, 256))

    # -- the wrapped encoder decides what the vectors are -----------------------------------
    def wrapped(self) -> EmbeddingEncoder:
        return self.encoder

    def spec_overrides(self) -> dict[str, Any]:
        return {"backend": "modal", "gpu": self.gpu}

    def fingerprint(self) -> str:
        return self.encoder.fingerprint()

    def _fingerprint_fields(self) -> dict[str, Any]:
        return self.encoder._fingerprint_fields()

    def cache_keys(self, items: Sequence[Any]) -> list[Any]:
        return self.encoder.cache_keys(items)

    def validate_input(self, X: Any) -> list[Any]:
        return self.encoder.validate_input(X)

    # -- batching and sending ------------------------------------------------------------------
    def plan_batches(self, items: Sequence[Any]) -> list[list[Any]]:
        """The batches ``transform`` sends, in order: consecutive runs of ``batch_size``."""
        size = self.batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {size!r}")
        items = list(items)
        return [items[i : i + size] for i in range(0, len(items), size)]

    def transform(self, X: Any) -> np.ndarray:
        """Vectors for ``X`` in input order, float32 ``(n, d)``, computed on Modal."""
        items = self.validate_input(X)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not items:  # nothing to send; the local encoder knows the width
            return as_float32(self.encoder.transform([]))
        wire = wire_spec(self.encoder)
        batches = self.plan_batches(items)
        results = self._dispatch(wire, [self.encoder.pack_items(batch) for batch in batches])
        start = 0
        for i, (batch, result) in enumerate(zip(batches, results, strict=True)):
            if isinstance(result, BaseException):
                raise ModalBatchError(
                    f"Modal batch {i + 1} of {len(batches)} (input positions {start}.."
                    f"{start + len(batch) - 1}) failed: {type(result).__name__}: {result}"
                ) from result
            if len(result) != len(batch):
                raise ModalBatchError(
                    f"Modal batch {i + 1} returned {len(result)} vectors for {len(batch)} inputs"
                )
            start += len(batch)
        return as_float32(np.concatenate(results))

    def _dispatch(self, wire: dict[str, Any], batches: list[list[Any]]) -> list[Any]:
        """Send every batch, with the encoder's :func:`~.remote.wire_spec`, through
        ``Embedder.encode.map`` (order kept); failed batches come back as exceptions. This is
        the only method that talks to Modal."""
        deployed = self.mode == "deployed"
        check_modal_ready(self.app_name if deployed else None)
        with self._embedder() as embedder:
            calls = embedder.encode.map([wire] * len(batches), batches, return_exceptions=True)
            return list(calls)

    def _options(self) -> dict[str, Any]:
        import modal

        options: dict[str, Any] = {}
        if self.gpu and self.gpu.strip().lower() != "any":
            options["gpu"] = gpu_request(self.gpu)
        if self.timeout is not None:
            options["timeout"] = self.timeout
        if self.retries is not None:
            options["retries"] = modal.Retries(max_retries=self.retries, initial_delay=1.0)
        if self.max_containers is not None:
            options["max_containers"] = self.max_containers
        return options

    @contextmanager
    def _embedder(self) -> Iterator[Any]:
        """An instance of the remote GPU class, deployed or in an ephemeral app run."""
        import modal

        cls = None
        if self.mode in ("deployed", "auto"):
            try:
                cls = lookup_deployed(modal, self.app_name)
            except ModalUnavailableError:
                if self.mode == "deployed":
                    raise
        options = self._options()
        if cls is not None:
            yield (cls.with_options(**options) if options else cls)()
            return
        from embetter_core.offload import modal_app

        with _ephemeral_run(modal, modal_app.app):
            local_cls = modal_app.Embedder
            yield (local_cls.with_options(**options) if options else local_cls)()


_run_lock = threading.Lock()
_run_state: dict[str, Any] = {"users": 0, "stack": None}


@contextmanager
def _ephemeral_run(modal: Any, app: Any) -> Iterator[None]:
    """One ``app.run()`` shared by the threads of this process (an app cannot run twice at
    once); it stops when the last user leaves."""
    with _run_lock:
        if _run_state["users"] == 0:
            with ExitStack() as stack:  # closed again if starting the app fails
                stack.enter_context(modal.enable_output())
                stack.enter_context(app.run())
                _run_state["stack"] = stack.pop_all()
        _run_state["users"] += 1
    try:
        yield
    finally:
        with _run_lock:
            _run_state["users"] -= 1
            if _run_state["users"] == 0:
                _run_state.pop("stack").close()
                _run_state["stack"] = None
