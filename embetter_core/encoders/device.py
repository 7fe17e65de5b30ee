"""Keeping an accelerator fed from the host: precision, look-ahead in threads, pinned copies.

The device paths of ``SentenceEncoder`` and ``ClipEncoder`` use these helpers. Everything here
also runs on the CPU (pinning is skipped where there is no CUDA), which is how the tests cover
the code a GPU runs.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

PRECISIONS = ("auto", "fp32", "fp16", "bf16")

T = TypeVar("T")
R = TypeVar("R")


def check_precision(precision: Any) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise ``ValueError``.

    >>> check_precision("fp16")
    'fp16'
    >>> check_precision("half")
    Traceback (most recent call last):
    ...
    ValueError: precision must be one of 'auto', 'fp32', 'fp16', 'bf16'; got 'half'
    """
    if not isinstance(precision, str) or precision not in PRECISIONS:
        allowed = ", ".join(repr(p) for p in PRECISIONS)
        raise ValueError(f"precision must be one of {allowed}; got {precision!r}")
    return precision


def resolve_precision(precision: Any, device_type: str) -> str:
    """The precision a model runs at on ``device_type``: ``"auto"`` is fp16 on CUDA (every
    CUDA card this project targets, the T4 included, has fp16 tensor cores; the T4 has no
    bf16) and fp32 anywhere else.

    >>> resolve_precision("auto", "cuda"), resolve_precision("auto", "cpu")
    ('fp16', 'fp32')
    """
    precision = check_precision(precision)
    if precision == "auto":
        return "fp16" if device_type == "cuda" else "fp32"
    return precision


def autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to fp16 / bf16 for ``precision``; a no-op for fp32.

    Autocast keeps the weights in fp32 and runs matrix products in the low precision, while
    layer norms, softmax and reductions stay in fp32: that is what keeps the vectors close to
    fp32's (``model.half()`` would run everything in fp16).
    """
    resolved = resolve_precision(precision, device_type)
    if resolved == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.float16 if resolved == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device_type, dtype=dtype)


def host_threads(limit: int = 16) -> int:
    """CPU threads this process may use for host-side work, at most ``limit``."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    return max(1, min(limit, count))


def prefetched(
    fn: Callable[[T], R], items: Sequence[T], depth: int, pool: Executor | None = None
) -> Iterator[R]:
    """``fn(item)`` for each item, yielded in order, computed up to ``depth`` items ahead in
    ``pool``'s threads (a one-thread pool of its own when ``pool`` is None).

    An exception from ``fn`` is raised where its item would have been yielded, so the first
    bad item in input order is the one reported. Closing the generator cancels what was not
    started yet; use it under ``contextlib.closing`` so that happens at once.

    >>> with contextlib.closing(prefetched(lambda x: x * x, [1, 2, 3], depth=2)) as squares:
    ...     list(squares)
    [1, 4, 9]
    """
    depth = max(int(depth), 1)
    own = pool is None
    executor = ThreadPoolExecutor(1, thread_name_prefix="embetter-prefetch") if own else pool
    assert executor is not None
    ahead: deque[Future[R]] = deque()
    try:
        upcoming = iter(items)
        for item in upcoming:
            ahead.append(executor.submit(fn, item))
            if len(ahead) >= depth:
                break
        while ahead:
            first = ahead.popleft()
            for item in upcoming:  # keep `depth` items in flight while this one is used
                ahead.append(executor.submit(fn, item))
                break
            yield first.result()
    finally:
        for future in ahead:
            future.cancel()
        if own:
            executor.shutdown(wait=True, cancel_futures=True)


def pinned(array: Any, pin: bool) -> Any:
    """A CPU tensor of ``array`` (numpy or tensor), in page-locked memory when ``pin`` is true,
    so a ``.to("cuda", non_blocking=True)`` copy runs without the host waiting for it."""
    import torch

    tensor = torch.from_numpy(array) if isinstance(array, np.ndarray) else array
    return tensor.pin_memory() if pin else tensor


def can_pin(device: Any) -> bool:
    """True when ``device`` is a CUDA device and CUDA is usable (pinning needs it)."""
    import torch

    return torch.device(device).type == "cuda" and torch.cuda.is_available()


class BlockCopier:
    """Gathers results that stay on the device and copies them into the host array ``out``
    once per ``block_rows`` rows, instead of one small copy (and one wait) per batch."""

    def __init__(self, out: np.ndarray, block_rows: int = 65_536) -> None:
        self.out = out
        self.block_rows = block_rows
        self._rows: list[np.ndarray] = []
        self._parts: list[Any] = []
        self._count = 0

    def add(self, rows: Sequence[int] | np.ndarray, vectors: Any) -> None:
        """Queue ``vectors`` (a device tensor) for the rows ``rows`` of ``out``."""
        self._rows.append(np.asarray(rows, dtype=np.int64))
        self._parts.append(vectors.float())
        self._count += len(self._rows[-1])
        if self._count >= self.block_rows:
            self.flush()

    def flush(self) -> None:
        """Copy everything queued to ``out`` (one device-to-host copy)."""
        if not self._parts:
            return
        import torch

        values = torch.cat(self._parts).cpu().numpy()
        self.out[np.concatenate(self._rows)] = values
        self._rows, self._parts, self._count = [], [], 0
