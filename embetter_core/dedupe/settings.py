"""Search settings: the defaults every entry point shares and :class:`SearchSettings`, the
one typed, frozen description of how a search runs (cells, probes, threads, tile size,
limits, seed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


#: The default cosine threshold, picked on the Debian corpus (``benchmarks.dedupe_quality``,
#: all 63,482 rows): the per-row decision (no chained removals) scores its best removal F1 at
#: 0.82 (0.660; 0.653 at 0.85, where the connected-component rule peaked; see BENCHMARKS.md).
DEFAULT_THRESHOLD = 0.82


#: Up to this many rows ``method="auto"`` runs the exact engine: ann is faster above about
#: 8-10k rows here (``python -m benchmarks.dedupe --crossover ...``, see BENCHMARKS.md).
AUTO_EXACT_MAX_ROWS = 10_000


METHODS = ("auto", "exact", "ann")


#: Candidates are screened this far below the floor in float32, then rescored exactly.
_SCREEN_SLACK = 1e-4


_READ_BLOCK = 65_536
