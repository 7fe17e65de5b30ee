"""One keyed hash of float rows, shared by the incremental state's content hashes
(:func:`~embetter_core.dedupe.state.row_hashes`) and the recall sample's draw
(:func:`~embetter_core.dedupe.candidates.sample_priority`).
"""

from __future__ import annotations

import numpy as np


def multilinear_hash(rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Per row, ``sum(word[i] * keys[i]) mod 2**64`` over the row's 32-bit words: one
    column per column of ``keys`` (``(words per row, k)`` odd uint64). Two different rows
    collide with probability at most 2**-32 per column over the keys. One integer matrix
    product, 2,048 rows at a time (blocks that stay in cache).

    >>> keys = np.array([[12345]], dtype=np.uint64)
    >>> h = multilinear_hash(np.array([[1.0], [1.0], [2.0]], dtype=np.float32), keys)
    >>> h.shape, bool(h[0, 0] == h[1, 0]), bool(h[0, 0] == h[2, 0])
    ((3, 1), True, False)
    """
    words = np.ascontiguousarray(rows).view(np.uint32)  # each 32 bits of the row
    out = np.empty((len(words), keys.shape[1]), dtype=np.uint64)
    for start in range(0, len(words), 2048):
        out[start : start + 2048] = words[start : start + 2048].astype(np.uint64) @ keys
    return out
