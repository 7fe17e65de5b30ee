"""Which row of a group of near-duplicates is kept: :class:`KeepRule`.

A rule orders the rows; :func:`~embetter_core.dedupe.find_duplicates` then takes each
cluster's rows in that order and keeps a row unless it is a near-duplicate of a row already
kept. The rules (``--keep`` on the command line):

- ``first``: the earliest row in input order (the file's row order), the default;
- ``last``: the latest row in input order;
- ``longest`` / ``shortest``: the longest / shortest text (in characters);
- ``column:NAME[:desc|asc]``: the highest (``desc``, the default) or lowest (``asc``) value
  of a numeric or date column of the corpus, e.g. a quality score or a date. Rows without a
  value come after every row with one.

Ties fall back to ``first`` (input order).

>>> rule = KeepRule.parse("column:stars")
>>> rule, rule.column, rule.descending
(KeepRule('column:stars:desc'), 'stars', True)
>>> rule.order([3, None, "7", 7]).tolist()  # row 2 before row 3: a tie goes to the first
[2, 3, 0, 1]
>>> KeepRule.parse("longest").order(["ab", "abcd", "abc"]).tolist()
[1, 2, 0]
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import numbers
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embetter_core.errors import DuplicateSearchError

#: The rule names; ``column`` takes ``:NAME`` and optionally ``:asc`` or ``:desc``.
KEEP_RULES = ("first", "last", "longest", "shortest", "column")


_SYNTAX = "first, last, longest, shortest or column:NAME[:desc|asc]"


@dataclass(frozen=True)
class KeepRule:
    """A rule for which row of a cluster is kept; build it with :meth:`parse`.

    Attributes:
        kind: one of :data:`KEEP_RULES`.
        column: the column a ``column`` rule reads (None for the others).
        descending: ``column`` rules: keep the highest value (True) or the lowest.
    """

    kind: str = "first"
    column: str | None = None
    descending: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KEEP_RULES:
            raise DuplicateSearchError(f"keep rule {self.kind!r} is not one of {_SYNTAX}")
        if (self.kind == "column") != bool(self.column):
            raise DuplicateSearchError(f"keep rule {self.kind!r}: expected {_SYNTAX}")

    @classmethod
    def parse(cls, spec: str | KeepRule | None) -> KeepRule:
        """The rule a string names (``"first"``, ``"column:score:asc"``, ...); a rule is
        returned as it is, None gives ``first``.

        >>> KeepRule.parse("column:a:b:asc").column  # the name may hold colons
        'a:b'
        >>> KeepRule.parse("biggest")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        embetter_core.errors.DuplicateSearchError: keep rule 'biggest' is not one of first, ...
        """
        if spec is None:
            return cls()
        if isinstance(spec, KeepRule):
            return spec
        if not isinstance(spec, str):
            raise DuplicateSearchError(
                f"keep must be a rule name ({_SYNTAX}), got {type(spec).__name__}"
            )
        text = spec.strip()
        if text in ("first", "last", "longest", "shortest"):
            return cls(text)
        if text.startswith("column:"):
            name, descending = text[len("column:") :], True
            head, _, tail = name.rpartition(":")
            if head and tail in ("asc", "desc"):
                name, descending = head, tail == "desc"
            if name:
                return cls("column", name, descending)
        raise DuplicateSearchError(f"keep rule {spec!r} is not one of {_SYNTAX}")

    def __str__(self) -> str:
        if self.kind == "column":
            return f"column:{self.column}:{'desc' if self.descending else 'asc'}"
        return self.kind

    def __repr__(self) -> str:
        return f"KeepRule({str(self)!r})"

    @property
    def needs_values(self) -> bool:
        """Whether the rule needs one value per row (texts or lengths, or a column)."""
        return self.kind in ("longest", "shortest", "column")

    def order(self, values: Sequence[Any] | None = None, n: int | None = None) -> np.ndarray:
        """The input rows in keep order (int64), ties in input order.

        ``values`` (one per row, input order): texts or lengths for ``longest`` /
        ``shortest``; numbers, dates or strings holding them for ``column`` (None, NaN and
        blank strings are missing values, ordered last). ``first`` and ``last`` need only
        ``n``, the number of rows.
        """
        if not self.needs_values:
            if n is None:
                if values is None:
                    raise DuplicateSearchError(f"keep={str(self)!r} needs the number of rows")
                n = len(values)
            rows = np.arange(n, dtype=np.int64)
            return rows[::-1].copy() if self.kind == "last" else rows
        if values is None:
            what = "texts (or text lengths)" if self.kind != "column" else "values"
            raise DuplicateSearchError(
                f"keep={str(self)!r} needs the rows' {what}: pass keep_values"
            )
        values = values.tolist() if hasattr(values, "tolist") else list(values)
        if n is not None and len(values) != n:
            raise DuplicateSearchError(
                f"keep={str(self)!r}: keep_values has {len(values)} entries for {n} rows"
            )
        position = np.arange(len(values), dtype=np.int64)
        if self.kind in ("longest", "shortest"):
            length = _lengths(values, self)
            key = -length if self.kind == "longest" else length
            return np.lexsort((position, key)).astype(np.int64)
        key, missing = sort_key(values, name=str(self.column))
        if self.descending:
            key = -key
        return np.lexsort((position, key, missing)).astype(np.int64)

    def rank(self, values: Sequence[Any] | None = None, n: int | None = None) -> np.ndarray:
        """Each row's place in keep order (the inverse of :meth:`order`).

        >>> KeepRule.parse("last").rank(n=3).tolist()
        [2, 1, 0]
        """
        order = self.order(values, n)
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return rank


def align_values(
    values: Sequence[Any] | Mapping[Hashable, Any],
    ids: Sequence[Hashable],
    name: str = "keep_values",
) -> list[Any]:
    """``values`` as a list in the order of ``ids`` (a mapping is looked up by id); ``name``
    is the argument's name in the error raised when one does not fit the other.

    >>> align_values({"b": 2, "a": 1}, ["a", "b"])
    [1, 2]
    """
    if isinstance(values, Mapping):
        missing = [i for i in ids if i not in values]
        if missing:
            raise DuplicateSearchError(
                f"{name} has no entry for {len(missing)} ids, first {missing[:5]!r}"
            )
        return [values[i] for i in ids]
    out = values.tolist() if hasattr(values, "tolist") else list(values)
    if len(out) != len(ids):
        raise DuplicateSearchError(
            f"{name} has {len(out)} entries but there are {len(ids)} rows; give one per "
            "row (input order) or a mapping id -> value"
        )
    return out


def _lengths(values: list[Any], rule: KeepRule) -> np.ndarray:
    out = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values):
        if isinstance(value, str):
            out[row] = len(value)
        elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
            out[row] = int(value)
        else:
            raise DuplicateSearchError(
                f"keep={str(rule)!r}: value of row {row} is {type(value).__name__}; expected "
                "a text or a length"
            )
    return out


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    try:
        import pandas as pd

        return value is pd.NaT or value is pd.NA
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False


def sort_key(values: Sequence[Any], name: str = "column") -> tuple[np.ndarray, np.ndarray]:
    """Numbers or dates as float64 sort keys, and a mask of the missing values.

    Numbers (and strings holding them) keep their value; dates (``date``, ``datetime``,
    numpy / pandas timestamps, and ISO-like strings) become their rank among the column's
    dates, so no precision is lost. A column mixing numbers and dates, or holding any other
    value, raises :class:`~embetter_core.errors.DuplicateSearchError` naming ``name``, the
    row and the value. Missing values (None, NaN, blank) get key 0 and ``missing=True``.

    >>> key, missing = sort_key(["2024-05-01", "", "2023-01-31T12:00"], name="date")
    >>> key.tolist(), missing.tolist()
    ([1.0, 0.0, 0.0], [False, True, False])
    >>> sort_key(["1.5", "n/a"], name="score")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    embetter_core.errors.DuplicateSearchError: column 'score' is not numeric or dates: row 1 ...
    """
    values = list(values)
    n = len(values)
    missing = np.fromiter((_is_missing(v) for v in values), dtype=bool, count=n)
    rows = np.flatnonzero(~missing)
    key = np.zeros(n, dtype=np.float64)
    if not len(rows):
        raise DuplicateSearchError(f"column {name!r} holds no values (every row is empty)")
    present = [values[r] for r in rows.tolist()]
    kinds = [_kind(v) for v in present]
    if "other" in kinds:
        at = kinds.index("other")
        _not_sortable(name, int(rows[at]), present[at])
    if "number" in kinds and "date" in kinds:
        at = kinds.index("date")
        _not_sortable(name, int(rows[at]), present[at], mixed=True)
    as_numbers = _as_numbers(present) if "date" not in kinds else None
    if as_numbers is not None and not np.isnan(as_numbers).any():
        key[rows] = as_numbers
        return key, missing
    as_dates = _as_ns(present, _day_first(values, name)) if "number" not in kinds else None
    if as_dates is not None and (as_dates != _NAT).all():
        _, inverse = np.unique(as_dates, return_inverse=True)
        key[rows] = inverse.astype(np.float64)
        return key, missing
    # name the first value that fails the reading most values pass
    ok_numbers = 0 if as_numbers is None else int((~np.isnan(as_numbers)).sum())
    ok_dates = 0 if as_dates is None else int((as_dates != _NAT).sum())
    if ok_numbers >= ok_dates:
        assert as_numbers is not None  # no dates among the values when this reading exists
        at = int(np.flatnonzero(np.isnan(as_numbers))[0])
    else:
        assert as_dates is not None
        at = int(np.flatnonzero(as_dates == _NAT)[0])
    _not_sortable(name, int(rows[at]), present[at])
    raise AssertionError("unreachable")  # pragma: no cover


_NAT = np.iinfo(np.int64).min  # numpy's NaT as int64


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "text"
    if isinstance(value, dt.date | np.datetime64):  # datetime and pd.Timestamp are dates
        return "date"
    if isinstance(value, numbers.Number | decimal.Decimal | np.number | np.bool_):
        return "number"
    return "other"


def _as_numbers(values: list[Any]) -> np.ndarray:
    """Numbers (or strings holding them) as float64; NaN where a value is not one."""
    import pandas as pd

    numeric = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
    return numeric.to_numpy(dtype=np.float64, na_value=np.nan)


def _as_ns(values: list[Any], dayfirst: bool = False) -> np.ndarray:
    """Dates (objects or strings) as UTC nanoseconds (int64), NaT where a value is not one;
    naive values count as UTC."""
    import warnings

    import pandas as pd

    series = pd.Series(values, dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns about guessed formats
        try:
            stamps = pd.to_datetime(
                series, utc=True, errors="coerce", format="mixed", dayfirst=dayfirst
            )
        except (ValueError, TypeError, OverflowError):  # e.g. a date out of pandas' range
            stamps = pd.Series(
                [_one_date(v, dayfirst) for v in values], dtype="datetime64[ns, UTC]"
            )
    return (
        stamps.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)
    )


_NUMERIC_DATE = re.compile(r"\s*(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}\b")


def _day_first(values: list[Any], name: str) -> bool:
    """Whether the column's ``d/m/y`` dates are read day first: one of them can only be
    (its first number > 12); month first otherwise. Raises when the column holds both
    orders (``13/01/2024`` and ``01/13/2024``): no reading fits every row."""
    day_first = month_first = None
    for row, value in enumerate(values):
        match = _NUMERIC_DATE.match(value) if isinstance(value, str) else None
        if match:
            first, second = int(match[1]), int(match[2])
            if first > 12 and day_first is None:
                day_first = (row, value)
            if second > 12 and month_first is None:
                month_first = (row, value)
    if day_first and month_first:
        raise DuplicateSearchError(
            f"column {name!r} holds dates in both day-first and month-first order: row "
            f"{day_first[0]} holds {day_first[1]!r}, row {month_first[0]} {month_first[1]!r}; "
            "write them one way (ISO 8601, 2024-01-13, reads the same everywhere)"
        )
    return day_first is not None


def _one_date(value: Any, dayfirst: bool = False) -> Any:
    import pandas as pd

    try:
        return pd.to_datetime(value, utc=True, dayfirst=dayfirst)
    except (ValueError, TypeError, OverflowError):
        return pd.NaT


def _not_sortable(name: str, row: int, value: Any, mixed: bool = False) -> None:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    why = "mixes numbers and dates" if mixed else "is not numeric or dates"
    raise DuplicateSearchError(
        f"column {name!r} {why}: row {row} holds {shown}; a column keep rule needs numbers "
        "or dates (rows numbered from 0)"
    )
