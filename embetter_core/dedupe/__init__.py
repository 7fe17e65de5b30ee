"""Near-duplicate search over embeddings, and what it decides.

Entry points: :func:`find_duplicates` (a corpus against itself), :func:`find_reference_duplicates`
(a corpus against another, the reference), :func:`find_duplicates_incremental` (a rerun
that searches only new and edited rows) and :func:`find_duplicates_two_stage` (a fast
encoder's candidates decided by a better one). All take the same search settings
(:class:`SearchSettings`, or its fields as keyword arguments).

Inside: ``settings`` (defaults and :class:`SearchSettings`), ``checks`` (the input checks
every entry point runs first), ``engines`` and ``cells`` (the exact and ann searches),
``candidates`` and ``results`` (what a search found, and :class:`DuplicateReport`),
``keep`` and ``decide`` (which rows stay), ``state`` / ``incremental`` /
``incremental_ann`` (incremental runs), ``reference`` and ``rescore``; ``budget``,
``partition_files``, ``partition_search`` and ``partitioned`` (the out-of-core engine).
"""

from __future__ import annotations

from embetter_core.dedupe.candidates import AnnCells, Candidates, RecallSample, check_parallel
from embetter_core.dedupe.find import find_duplicates
from embetter_core.dedupe.incremental import find_duplicates_incremental
from embetter_core.dedupe.keep import KEEP_RULES, KeepRule, align_values
from embetter_core.dedupe.partitioned import PartitionOptions
from embetter_core.dedupe.reference import (
    AUTO_EXACT_MAX_PAIRS,
    REFERENCE_PAIRS_CSV,
    ReferenceMatches,
    check_reference_store,
    find_reference_duplicates,
)
from embetter_core.dedupe.rescore import (
    candidate_rows,
    find_duplicates_two_stage,
    rescore_report,
)
from embetter_core.dedupe.results import DuplicateReport
from embetter_core.dedupe.settings import (
    AUTO_EXACT_MAX_ROWS,
    DEFAULT_THRESHOLD,
    METHODS,
    SearchOptions,
    SearchSettings,
)
from embetter_core.dedupe.state import DedupeState, row_hashes, state_path
from embetter_core.errors import DuplicateSearchError

__all__ = [
    "AUTO_EXACT_MAX_PAIRS",
    "AUTO_EXACT_MAX_ROWS",
    "DEFAULT_THRESHOLD",
    "KEEP_RULES",
    "METHODS",
    "REFERENCE_PAIRS_CSV",
    "AnnCells",
    "Candidates",
    "DedupeState",
    "DuplicateReport",
    "DuplicateSearchError",
    "KeepRule",
    "PartitionOptions",
    "RecallSample",
    "SearchOptions",
    "SearchSettings",
    "ReferenceMatches",
    "align_values",
    "candidate_rows",
    "check_parallel",
    "check_reference_store",
    "find_duplicates",
    "find_duplicates_incremental",
    "find_duplicates_two_stage",
    "find_reference_duplicates",
    "rescore_report",
    "row_hashes",
    "state_path",
]
