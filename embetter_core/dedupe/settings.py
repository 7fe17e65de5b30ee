"""Search settings: the defaults every entry point shares and :class:`SearchSettings`, the
one typed, frozen description of how a search runs (cells, probes, threads, tile size,
limits, seed).

Every entry point (``find_duplicates``, ``find_reference_duplicates``,
``find_duplicates_incremental``) takes the settings as keyword arguments
(``find_duplicates(X, nprobe=8)``, typed by :class:`SearchOptions`) or as one object
(``settings=SearchSettings(nprobe=8)``); :meth:`SearchSettings.of` merges the two.

>>> SearchSettings.of(SearchSettings(nprobe=8), {"seed": 3})
SearchSettings(nprobe=8, nlist=None, recall_sample=500, n_jobs=None, blas_threads=1, \
block_size=1024, max_candidates=50000000, seed=3)
>>> SearchSettings(n_jobs=0)
Traceback (most recent call last):
...
embetter_core.errors.DuplicateSearchError: n_jobs must be >= 1, got 0
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, TypedDict

from embetter_core.errors import DuplicateSearchError

#: The default cosine threshold, picked on the Debian corpus (``benchmarks.dedupe_quality``,
#: all 63,482 rows): the per-row decision (no chained removals) scores its best removal F1 at
#: 0.82 (0.660; 0.653 at 0.85, where the connected-component rule peaked; see BENCHMARKS.md).
DEFAULT_THRESHOLD = 0.82
#: Up to this many rows ``method="auto"`` runs the exact engine: ann is faster above about
#: 8-10k rows here (``python -m benchmarks.dedupe --crossover ...``, see BENCHMARKS.md).
AUTO_EXACT_MAX_ROWS = 10_000
METHODS = ("auto", "exact", "ann", "partitioned")
#: Candidates are screened this far below the floor in float32, then rescored exactly.
_SCREEN_SLACK = 1e-4
#: Rows read from the input at a time (an ``h5py.Dataset`` is never read whole).
_READ_BLOCK = 65_536


@dataclass(frozen=True)
class SearchSettings:
    """How a search runs, whatever the entry point. Checked when made.

    Attributes:
        nprobe: ann: the cells each row is compared with.
        nlist: ann: the number of k-means cells (None: ``sqrt(nprobe * n)``, at most
            ``n / 4``; over the reference's rows for a reference search).
        recall_sample: ann: rows checked exactly to estimate recall.
        n_jobs: worker threads over blocks or cells, and over the rows' content hashes of
            an incremental run (None: one per CPU this process may run on,
            :attr:`threads`; on this project's 2-vCPU machine two halve an exact search,
            ``BENCHMARKS.md``).
        blas_threads: BLAS (and faiss) threads per worker during the search; None leaves
            them as they are.
        block_size: rows per tile side (a tile is ``block_size x 4 * block_size`` floats).
        max_candidates: raise instead of holding more candidate pairs than this.
        seed: seed of the ann k-means and the recall sample.
    """

    nprobe: int = 4
    nlist: int | None = None
    recall_sample: int = 500
    n_jobs: int | None = None
    blas_threads: int | None = 1
    block_size: int = 1024
    max_candidates: int = 50_000_000
    seed: int = 0

    def __post_init__(self) -> None:
        at_least = {"nprobe": 1, "n_jobs": 1, "block_size": 1, "max_candidates": 1}
        at_least |= {"recall_sample": 0, "nlist": 1, "blas_threads": 1}
        for name, low in at_least.items():
            value = getattr(self, name)
            if value is not None and int(value) < low:
                raise DuplicateSearchError(f"{name} must be >= {low}, got {value}")

    @classmethod
    def of(
        cls, settings: SearchSettings | None = None, options: Mapping[str, Any] | None = None
    ) -> SearchSettings:
        """``settings`` (default: the defaults) with ``options`` (keyword arguments named
        for its fields) set on top. An unknown name raises ``TypeError``, as Python does for
        a function's unexpected keyword."""
        base = cls() if settings is None else settings
        if not isinstance(base, cls):
            raise TypeError(f"settings must be a SearchSettings, got {type(base).__name__}")
        if not options:
            return base
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"unexpected keyword argument {unknown[0]!r}; the search settings are "
                f"{', '.join(sorted(known))}"
            )
        return replace(base, **options)

    @property
    def threads(self) -> int:
        """The worker threads a search runs on: ``n_jobs``, or the CPUs this process may
        run on (``os.sched_getaffinity``) when it is None.

        >>> SearchSettings(n_jobs=3).threads, SearchSettings().threads >= 1
        (3, True)
        """
        return self.n_jobs if self.n_jobs is not None else available_cpus()

    def cells(self, rows: int) -> int:
        """The ann engine's number of cells over ``rows`` rows.

        >>> SearchSettings().cells(10_000), SearchSettings(nlist=50).cells(100)
        (200, 25)
        """
        wanted = self.nlist or max(1, int(round(math.sqrt(self.nprobe * rows))))
        return min(wanted, max(1, rows // 4))

    def report_params(self, requested_method: str, **more: Any) -> dict[str, Any]:
        """What a report's ``params`` says of the search: the method asked for, the settings
        (``max_candidates`` aside: a limit, not a setting of the result) and ``more``."""
        params = {"requested_method": requested_method, **asdict(self), **more}
        params["n_jobs"] = self.threads  # the threads it ran on
        params.pop("max_candidates")
        return params


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


class SearchOptions(TypedDict, total=False):
    """The fields of :class:`SearchSettings` as keyword arguments (``**search``)."""

    nprobe: int
    nlist: int | None
    recall_sample: int
    n_jobs: int | None
    blas_threads: int | None
    block_size: int
    max_candidates: int
    seed: int


def choose_method(method: str, rows: int) -> str:
    """The engine that runs for ``method`` over ``rows`` rows: ``"auto"`` is exact up to
    :data:`AUTO_EXACT_MAX_ROWS` rows, ann above.

    >>> choose_method("auto", 500), choose_method("auto", 50_000), choose_method("exact", 9)
    ('exact', 'ann', 'exact')
    """
    if method not in METHODS:
        raise DuplicateSearchError(f"method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method
    return "exact" if rows <= AUTO_EXACT_MAX_ROWS else "ann"
