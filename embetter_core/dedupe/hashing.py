"""One keyed hash of float rows, shared by the incremental state's content hashes
(:func:`~embetter_core.dedupe.state.row_hashes`) and the recall sample's draw
(:func:`~embetter_core.dedupe.candidates.sample_priority`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

_BLOCK = 2048


def multilinear_hash(rows: np.ndarray, keys: np.ndarray, threads: int = 1) -> np.ndarray:
    """Per row, ``sum(word[i] * keys[i]) mod 2**64`` over the row's 32-bit words: one
    column per column of ``keys`` (``(words per row, k)`` odd uint64). Two different rows
    collide with probability at most 2**-32 per column over the keys. One integer matrix
    product, 2,048 rows at a time (blocks that stay in cache), on ``threads`` threads
    (NumPy's product releases the GIL: 0.21 s against 0.42 s for 1M x 384 on two here).

    >>> keys = np.array([[12345]], dtype=np.uint64)
    >>> h = multilinear_hash(np.array([[1.0], [1.0], [2.0]], dtype=np.float32), keys)
    >>> h.shape, bool(h[0, 0] == h[1, 0]), bool(h[0, 0] == h[2, 0])
    ((3, 1), True, False)
    """
    words = np.ascontiguousarray(rows).view(np.uint32)  # each 32 bits of the row
    out = np.empty((len(words), keys.shape[1]), dtype=np.uint64)

    def span(lo: int, hi: int) -> None:
        for start in range(lo, hi, _BLOCK):
            stop = min(start + _BLOCK, hi)
            out[start:stop] = words[start:stop].astype(np.uint64) @ keys

    blocks = -(-len(words) // _BLOCK)
    threads = max(1, min(threads, blocks // 8))  # a thread for at least 8 blocks
    if threads == 1:
        span(0, len(words))
        return out
    per = -(-blocks // threads) * _BLOCK
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda lo: span(lo, min(lo + per, len(words))), range(0, len(words), per)))
    return out
