"""Every exception embetter-core raises on purpose, in one place.

Each is a subclass of the built-in a caller would catch anyway (``ValueError`` for bad
input, ``OSError`` for paths, ``RuntimeError`` for services), so ``except ValueError`` keeps
working; the specific class says which layer refused. Each survives ``pickle`` with its
message and attributes (Prefect pickles a failed task's exception): a class with attributes
of its own defines ``__reduce__``.

>>> issubclass(IncompleteStoreError, StoreError), issubclass(CorpusError, ValueError)
(True, True)
"""

from __future__ import annotations


class CorpusError(ValueError):
    """A corpus file that cannot be read: bad format, missing column, invalid or no rows."""


class FingerprintMismatchError(ValueError):
    """A cache or store written by one encoder was opened with another."""


class StoreError(ValueError):
    """A store that cannot be written, committed or read as asked."""


class IncompleteStoreError(StoreError):
    """``commit`` found rows that were never written."""


class OutputNotWritableError(OSError):
    """The output path cannot be written (missing permission, a file where a folder is, ...)."""


class DiskFullError(OutputNotWritableError):
    """The disk (or quota) filled up while writing a file: the message names the file and
    what was kept. ``errno`` is ``ENOSPC``."""


class OutputClashError(ValueError):
    """An output path would overwrite an input (the corpus, a model) or another output."""


class ModelUnavailableError(FileNotFoundError):
    """An encoder's model cannot be loaded here (offline: not on this disk); names it."""


class DuplicateSearchError(ValueError):
    """Bad input to :func:`find_duplicates` (non-finite rows, wrong ids, bad parameters)."""


class DedupeStateError(ValueError):
    """An incremental dedupe state file that is unreadable, corrupt or inconsistent."""


class UnreadableImageError(ValueError):
    """An image file exists but cannot be decoded; ``path`` names it."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (str(self), self.path)


class ModalBatchError(RuntimeError):
    """A batch still failed on Modal after the app's retries; names the input positions."""


class ModalUnavailableError(RuntimeError):
    """Modal cannot be used here (no package, no token, no network, app not deployed)."""


class MissingColumnError(CorpusError):
    """A table file lacks a column that was asked for; ``missing`` and ``columns`` name them."""

    def __init__(
        self, message: str, missing: tuple[str, ...] = (), columns: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
        self.columns = tuple(columns)

    def __reduce__(self) -> tuple[type, tuple[str, tuple[str, ...], tuple[str, ...]]]:
        return type(self), (str(self), self.missing, self.columns)


class ImageTooLargeError(UnreadableImageError):
    """An image file has more pixels than ``embetter_core.encoders.vision.MAX_IMAGE_PIXELS``;
    ``path`` names it, ``size`` is its ``(width, height)`` when known. Refused before it is decoded,
    so one huge file cannot exhaust memory."""

    def __init__(self, message: str, path: str, size: tuple[int, int] | None = None) -> None:
        super().__init__(message, path)
        self.size = size

    def __reduce__(self) -> tuple[type, tuple[str, str, tuple[int, int] | None]]:
        return type(self), (str(self), self.path, self.size)


class CacheCorruptError(ValueError):
    """The embedding cache's database cannot be read (a damaged or foreign SQLite file).

    Not transient: a retry reads the same bytes. The message names the cache folder; delete
    it to rebuild the cache (its vectors are re-encoded on the next run).
    """

    def __init__(self, message: str, folder: str) -> None:
        super().__init__(message)
        self.folder = folder

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (str(self), self.folder)


class CandidateOverflowError(DuplicateSearchError):
    """A search found more candidate pairs above its floor than ``max_candidates``."""
