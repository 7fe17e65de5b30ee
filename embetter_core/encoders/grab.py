"""``ColumnGrabber``: pick one column of a DataFrame, as the first step of a pipeline."""

from __future__ import annotations

from typing import Any

from embetter_core.encoders.base import EmbeddingEncoder


class ColumnGrabber(EmbeddingEncoder):
    """Select column ``colname`` of a DataFrame (or a key of a list of dicts) as a list.

    >>> import pandas as pd
    >>> ColumnGrabber("text").fit_transform(pd.DataFrame({"text": ["a", "b"], "n": [1, 2]}))
    ['a', 'b']
    """

    def __init__(self, colname: str) -> None:
        self.colname = colname

    def _fingerprint_fields(self) -> dict[str, Any]:
        return {"colname": self.colname}

    def transform(self, X: Any) -> list[Any]:
        """Return the column's values as a list."""
        if hasattr(X, "columns"):
            if self.colname not in X.columns:
                raise KeyError(
                    f"column {self.colname!r} not found; the columns are {list(X.columns)}"
                )
            return X[self.colname].tolist()
        rows = list(X)
        for pos, row in enumerate(rows):
            if not hasattr(row, "keys") or self.colname not in row:
                raise KeyError(f"row {pos} has no key {self.colname!r}")
        return [row[self.colname] for row in rows]
