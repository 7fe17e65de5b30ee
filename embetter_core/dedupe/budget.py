"""The partitioned engine's memory budget: parsing ``"2GiB"``, the default share of the
machine, whether a corpus fits in memory, and the plan (read block, cell pieces, cells in
flight) a budget allows, refused before any work when it is too small.

What the budget covers: the arrays the engine holds in one process (the driver's per-row
bookkeeping, one read block, the k-means sample, the cells in flight and their tiles), not
the interpreter itself (Python, NumPy and faiss take about 200 MB before any data).

>>> parse_budget("256MiB"), parse_budget("1.5 GB"), parse_budget(1 << 20)
(268435456, 1500000000, 1048576)
>>> plan = plan_budget(parse_budget("256MiB"), rows=400_000, dims=384, nlist=1265, nprobe=4)
>>> plan.read_rows, plan.in_flight
(8192, 2)
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from embetter_core.errors import DuplicateSearchError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
#: The in-memory engines peak at about this many times the float32 vectors (measured:
#: 1M x 384 ann, 3.4 GiB for 1.43 GiB of vectors); ``auto`` runs partitioned above it.
IN_MEMORY_FACTOR = 2.4
#: The default budget's share of the machine's memory.
DEFAULT_SHARE = 0.25
#: Bytes per row the driver keeps beside the vectors: ids, id order, cells, file places,
#: nearest scores, and per probed cell a (row, cell) pair.
_ROW_BYTES = 120
_VISIT_BYTES = 40
_MIN_READ_ROWS = 1024
_MAX_READ_ROWS = 65_536


def parse_budget(budget: int | float | str) -> int:
    """Bytes from ``budget``: a number of bytes or a size such as ``"2GiB"``, ``"512MB"``,
    ``"1.5 GB"`` (powers of 1024 for ``KiB``/``MiB``/``GiB``, of 1000 for ``KB``/``MB``/``GB``).
    """
    if isinstance(budget, int | float) and not isinstance(budget, bool):
        value = float(budget)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(budget))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise DuplicateSearchError(
                f"memory_budget must be a size such as '2GiB', '512MB' or a number of "
                f"bytes, got {budget!r}"
            )
        value = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value <= 0:
        raise DuplicateSearchError(f"memory_budget must be positive, got {budget!r}")
    return int(value)


def default_budget() -> int:
    """:data:`DEFAULT_SHARE` of the machine's memory (of the available memory when that is
    less), at least 256 MiB."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        total, available = int(vm.total), int(vm.available)
    except ImportError:  # pragma: no cover - psutil is installed with distributed
        total = available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(256 << 20, int(min(total * DEFAULT_SHARE, available * 0.5)))


def budget_bytes(budget: int | float | str | None) -> int:
    """``budget`` in bytes (None: :func:`default_budget`)."""
    return default_budget() if budget is None else parse_budget(budget)


def fits_in_memory(rows: int, dims: int, budget: int) -> bool:
    """Whether an in-memory engine over ``rows x dims`` float32 vectors stays in ``budget``.

    >>> fits_in_memory(1_000_000, 384, 2 << 30), fits_in_memory(1_000_000, 384, 8 << 30)
    (False, True)
    """
    return rows * dims * 4 * IN_MEMORY_FACTOR <= budget


def format_bytes(size: float) -> str:
    """``size`` bytes in MiB or GiB, rounded up.

    >>> format_bytes(300 << 20), format_bytes(5 << 30)
    ('300MiB', '5.00GiB')
    """
    if size >= 1 << 30:
        return f"{math.ceil(size / (1 << 30) * 100) / 100:.2f}GiB"
    return f"{math.ceil(size / (1 << 20))}MiB"


@dataclass(frozen=True)
class BudgetPlan:
    """What a budget allows.

    Attributes:
        budget: the budget, in bytes.
        fixed: the driver's bookkeeping and k-means sample, in bytes.
        read_rows: rows read (and normalised) at a time.
        cell_bytes: the most one cell piece in flight may hold (its vectors, read once).
        in_flight: cell pieces in flight in one process at a time.
    """

    budget: int
    fixed: int
    read_rows: int
    cell_bytes: int
    in_flight: int

    def cell_rows(self, dims: int) -> int:
        """The most rows of a cell loaded at once."""
        return max(1, self.cell_bytes // (dims * 4))


def _fixed_bytes(rows: int, nprobe: int) -> int:
    return rows * (_ROW_BYTES + _VISIT_BYTES * max(1, nprobe))


def _train_bytes(rows: int, dims: int, nlist: int) -> int:
    train = min(rows, max(32 * nlist, 10_000))  # as the ann engine samples
    return int(1.5 * train * dims * 4) + 2 * nlist * dims * 4


def _read_bytes(read_rows: int, dims: int) -> int:
    return 4 * read_rows * dims * 4  # the raw block, its float32 copy, the unit rows, a temp


def _tile_bytes(block: int) -> int:
    return block * 4 * block * 4 * 2  # the tile buffer and its comparison mask


def plan_budget(
    budget: int,
    *,
    rows: int,
    dims: int,
    nlist: int,
    nprobe: int,
    workers: int = 1,
    block: int = 1024,
) -> BudgetPlan:
    """The plan for a search of ``rows x dims`` vectors in ``nlist`` cells over ``workers``
    threads in ``budget`` bytes; refused (naming the smallest budget that works) when the
    k-means sample, one read block or one tile and minimal cell piece per thread do not
    fit beside the per-row bookkeeping. The phases (train, read and write, search) run one
    after another, so the budget must hold the largest of them."""
    fixed = _fixed_bytes(rows, nprobe)
    train = _train_bytes(rows, dims, nlist)
    piece = 3 * 4 * block * dims * 4  # a piece's columns and one query block, read once
    search = (_tile_bytes(block) + piece) * workers
    smallest = fixed + max(train, _read_bytes(_MIN_READ_ROWS, dims), search)
    if budget < smallest:
        raise DuplicateSearchError(
            f"memory_budget={budget / (1 << 20):.1f}MiB is too small for {rows} rows x {dims} "
            f"dims in {nlist} cells: the smallest budget that works is "
            f"{format_bytes(smallest)} (the per-row bookkeeping, the k-means sample, one read "
            f"block, one tile per thread); nothing was read"
        )
    spare = budget - fixed
    read_rows = _MIN_READ_ROWS
    while read_rows < _MAX_READ_ROWS and _read_bytes(2 * read_rows, dims) <= spare // 2:
        read_rows *= 2
    in_flight = 2 * workers
    cell_bytes = max(piece, (spare - _tile_bytes(block) * workers) // in_flight // 2)
    return BudgetPlan(budget, fixed + train, read_rows, int(cell_bytes), in_flight)
