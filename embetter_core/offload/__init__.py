"""GPU offload to Modal: ``ModalEncoder`` and the app in :mod:`.modal_app`.

Importing this package does not import ``modal``; only sending work (and importing
``embetter_core.offload.modal_app``) does.

>>> from embetter_core.offload import ModalEncoder, ModalUnavailableError
>>> issubclass(ModalUnavailableError, RuntimeError)
True
"""

from __future__ import annotations

from embetter_core.offload.encoder import ModalBatchError, ModalEncoder
from embetter_core.offload.ready import (
    ModalUnavailableError,
    check_modal_ready,
    has_modal_token,
)
from embetter_core.offload.remote import (
    APP_NAME,
    CLASS_NAME,
    ModalSettings,
    encode_batch,
    wire_spec,
)

__all__ = [
    "APP_NAME",
    "CLASS_NAME",
    "ModalBatchError",
    "ModalEncoder",
    "ModalSettings",
    "ModalUnavailableError",
    "check_modal_ready",
    "encode_batch",
    "has_modal_token",
    "wire_spec",
]
