""":class:`PairList`: a report's ``pairs`` kept as arrays, its ``(id_a, id_b, score)`` tuples
made as they are read. A list of tuples costs about 136 bytes a pair in Python objects (1.3 GB
for the 10M pairs of 5M rows); the arrays cost 20 bytes a pair beside the shared ids (the
scores stay float32 and are rounded to 6 places as they are read).

>>> import numpy as np
>>> ids = np.array(["a", "b", "c"], dtype=object)
>>> pairs = PairList(ids, np.array([0, 1]), np.array([1, 2]), np.array([0.97, 0.91]))
>>> len(pairs), pairs[0], pairs[-1:], pairs == [("a", "b", 0.97), ("b", "c", 0.91)]
(2, ('a', 'b', 0.97), [('b', 'c', 0.91)], True)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

_CHUNK = 65_536


class PairList(Sequence):
    """The pairs ``(ids[a[k]], ids[b[k]], round(scores[k], 6))``, read-only, compared equal to
    the list of the same tuples; a slice is a list. The arrays may be views (not copied)."""

    def __init__(self, ids: np.ndarray, a: np.ndarray, b: np.ndarray, scores: np.ndarray):
        self._ids, self._a, self._b = ids, a, b
        self._scores = np.asarray(scores)

    def __len__(self) -> int:
        return len(self._a)

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return self._tuples(self._a[k], self._b[k], self._scores[k])
        return self._ids[self._a[k]], self._ids[self._b[k]], float(_rounded(self._scores[k]))

    def __iter__(self) -> Iterator[tuple[Any, Any, float]]:
        for s in range(0, len(self), _CHUNK):
            yield from self[s : s + _CHUNK]

    def members(self) -> list[Any]:
        """The distinct ids that appear in the pairs (in row order), without making tuples.

        >>> ids = np.array(["a", "b", "c"], dtype=object)
        >>> PairList(ids, np.array([2, 0]), np.array([1, 2]), np.array([0.9, 0.9])).members()
        ['a', 'b', 'c']
        """
        return self._ids[np.unique(np.concatenate([self._a, self._b]))].tolist()

    def coded(self) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray]:
        """The distinct ids (in row order) and, per pair, the positions of its two ids among
        them and its score (rounded as read), without making a tuple per pair: for writers
        that make each id's cells once.

        >>> ids = np.array(["a", "b", "c"], dtype=object)
        >>> pairs = PairList(ids, np.array([2, 0]), np.array([1, 2]), np.array([0.9, 0.8]))
        >>> names, a, b, scores = pairs.coded()
        >>> names, a.tolist(), b.tolist(), scores.tolist()
        (['a', 'b', 'c'], [2, 0], [1, 2], [0.9, 0.8])
        """
        rows, where = np.unique(np.concatenate([self._a, self._b]), return_inverse=True)
        n = len(self)
        return self._ids[rows].tolist(), where[:n], where[n:], _rounded(self._scores)

    def _tuples(self, a: np.ndarray, b: np.ndarray, s: np.ndarray) -> list[tuple[Any, Any, float]]:
        scores = _rounded(s).tolist()
        return list(zip(self._ids[a].tolist(), self._ids[b].tolist(), scores, strict=True))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(x == y for x, y in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, as a list

    def __repr__(self) -> str:
        return repr(self[:]) if len(self) <= 20 else f"PairList({len(self)} pairs)"

    def __reduce__(self) -> Any:
        return PairList, (self._ids, self._a, self._b, self._scores)


def _rounded(scores: Any) -> Any:
    """Scores as the report gives them: float64, rounded to 6 places."""
    return np.round(np.asarray(scores, dtype=np.float64), 6)
