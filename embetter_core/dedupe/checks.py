"""The checks every search entry point runs before any work: parameters, the embeddings'
shape and dtype, ids, texts, the keep rule; then the rows read (in blocks) into unit-norm
float32 in canonical (id) order, with NaN / inf rows refused by name.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embetter_core.dedupe.candidates import Candidates
from embetter_core.dedupe.decide import _groups_by_key, _keep_order
from embetter_core.dedupe.floors import default_floor
from embetter_core.dedupe.keep import KeepRule, align_values
from embetter_core.dedupe.settings import _READ_BLOCK, METHODS, choose_method
from embetter_core.errors import DuplicateSearchError


@dataclass(frozen=True, eq=False)
class _Prepared:
    """What a search of a corpus against itself knows after its checks, before any work:
    ``find_duplicates`` and the incremental run start from it."""

    threshold: float
    floor: float
    floor_given: bool  # the user gave the floor (a default one may be raised on overflow)
    requested: str  # the method asked for
    method: str  # the engine that runs: "exact" or "ann"
    matrix: Any  # the input, an ndarray or an h5py Dataset
    ids: list[Any]
    texts: list[str] | None
    keep: KeepRule
    keep_values: Sequence[Any] | Mapping[Hashable, Any] | None
    keep_rank: np.ndarray
    rank: np.ndarray  # each input row's place in id order
    order: np.ndarray  # the input rows in id order
    id_array: np.ndarray | None = None  # the ids as a str array, when they are all str

    @property
    def n(self) -> int:
        return len(self.ids)


def _prepare(
    embeddings: Any,
    ids: Sequence[Hashable] | None,
    threshold: float,
    floor: float | None,
    method: str,
    texts: Sequence[str] | Mapping[Hashable, str] | None,
    keep: str | KeepRule | None,
    keep_values: Sequence[Any] | Mapping[Hashable, Any] | None,
) -> _Prepared:
    """Every check of a self-search's arguments, in the order a user meets them; nothing is
    read from ``embeddings`` but its shape."""
    given_floor = floor
    threshold, floor = _check_params(threshold, floor, method)
    matrix, n = _input_shape(embeddings)
    ids_list, id_array, rank, order = _ids_in_order(ids, n)
    text_list = _check_texts(texts, ids_list)
    rule, keep_values, keep_rank = _keep_setup(keep, keep_values, text_list, ids_list)
    return _Prepared(
        threshold=threshold,
        floor=floor,
        floor_given=given_floor is not None,
        requested=method,
        method=choose_method(method, n),
        matrix=matrix,
        ids=ids_list,
        texts=text_list,
        keep=rule,
        keep_values=keep_values,
        keep_rank=keep_rank,
        rank=rank,
        order=order,
        id_array=id_array,
    )


def _check_params(threshold: float, floor: float | None, method: str) -> tuple[float, float]:
    """The threshold and the floor (its default filled in), checked with the method."""
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise DuplicateSearchError(f"threshold must be in (0, 1], got {threshold}")
    floor = default_floor(threshold) if floor is None else float(floor)
    if not 0.0 < floor <= threshold:
        raise DuplicateSearchError(f"floor must be in (0, threshold={threshold}], got {floor}")
    if method not in METHODS:
        raise DuplicateSearchError(f"method must be one of {METHODS}, got {method!r}")
    return threshold, floor


def _input_shape(embeddings: Any) -> tuple[Any, int]:
    """Return a sliceable 2-D matrix (ndarray or h5py Dataset) and its row count."""
    if _is_h5_dataset(embeddings):
        matrix = embeddings
    else:
        try:
            matrix = np.asarray(embeddings)
        except (TypeError, ValueError) as exc:
            raise DuplicateSearchError(f"embeddings must be a 2-D numeric array: {exc}") from None
        if matrix.ndim == 1 and matrix.size == 0:
            matrix = matrix.reshape(0, 0)
    if len(matrix.shape) != 2:
        raise DuplicateSearchError(
            f"embeddings must be 2-D (n rows, d dims), got shape {tuple(matrix.shape)}"
        )
    dtype = np.dtype(matrix.dtype)
    if dtype.kind not in "fiub":
        raise DuplicateSearchError(f"embeddings must be numeric, got dtype {dtype}")
    if matrix.shape[0] > 0 and matrix.shape[1] == 0:
        raise DuplicateSearchError("embeddings have 0 dimensions")
    return matrix, int(matrix.shape[0])


def _is_h5_dataset(obj: Any) -> bool:
    return type(obj).__module__.startswith("h5py") and hasattr(obj, "shape")


def _ids_in_order(
    ids: Sequence[Hashable] | None, n: int
) -> tuple[list[Any], np.ndarray | None, np.ndarray, np.ndarray]:
    """The checked ids (:func:`_check_ids`), as a str array when they are all str (else
    None), and their canonical order (:func:`_canonical_order`). All-str ids are checked
    for repeats in their sorted array, which the order needs anyway (0.005 s at 1M ids,
    against 0.06 s for a set of them); a repeat found there is looked for again by
    :func:`_check_ids`, which names it (the array drops trailing NUL characters, so ``"a"``
    and ``"a\\x00"`` look alike there and not there)."""
    values = None if ids is None else ids.tolist() if hasattr(ids, "tolist") else list(ids)
    if values is not None and len(values) == n and n and set(map(type, values)) == {str}:
        array = np.array(values, dtype=str)
        order = np.argsort(array, kind="stable").astype(np.int64, copy=False)
        ranked = array[order]
        if not (ranked[1:] == ranked[:-1]).any():
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(n)
            return values, array, rank, order
    checked = _check_ids(values, n)  # repeats named, or ids of other types
    return (checked, None, *_canonical_order(checked))


def _check_ids(ids: Sequence[Hashable] | None, n: int) -> list[Any]:
    if ids is None:
        return list(range(n))
    values = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    if len(values) != n:
        raise DuplicateSearchError(
            f"ids has length {len(values)} but embeddings have {n} rows; give one id per row"
        )
    try:
        if len(set(values)) == n and not _has_nan(values):  # the common case, fast
            return values
    except TypeError:  # an unhashable id, named below
        pass
    seen: dict[Any, int] = {}
    for pos, value in enumerate(values):
        if isinstance(value, float) and value != value:  # NaN: never equal, even to itself
            raise DuplicateSearchError(f"id at position {pos} is NaN; give every row an id")
        try:
            first = seen.setdefault(value, pos)
        except TypeError:
            raise DuplicateSearchError(
                f"id at position {pos} is unhashable ({type(value).__name__})"
            ) from None
        if first != pos:
            raise DuplicateSearchError(
                f"ids must be unique: {value!r} is at positions {first} and {pos}"
            )
    return values


def _has_nan(values: list[Any]) -> bool:
    if not any(issubclass(kind, float) for kind in set(map(type, values))):
        return False  # no float ids: no NaN (one pass in C, not a Python loop)
    return any(isinstance(v, float) and v != v for v in values)


def _check_texts(
    texts: Sequence[str] | Mapping[Hashable, str] | None, ids: list[Any]
) -> list[str] | None:
    return None if texts is None else align_values(texts, ids, name="texts")


def _canonical_order(ids: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``order``: input rows sorted by id; ``rank``: each input row's place in that order."""
    n = len(ids)
    kinds = set(map(type, ids))
    if all(issubclass(k, str) for k in kinds):
        order = np.argsort(np.array(ids, dtype=str), kind="stable")
    elif all(issubclass(k, int | float | np.integer | np.floating) for k in kinds):
        order = np.argsort(np.array(ids), kind="stable")
    else:  # mixed types: by type name, then text
        order = np.array(
            sorted(range(n), key=lambda i: (type(ids[i]).__name__, str(ids[i]))), dtype=np.int64
        )
    order = order.astype(np.int64, copy=False)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank, order


def _keep_setup(
    keep: str | KeepRule | None,
    keep_values: Sequence[Any] | Mapping[Hashable, Any] | None,
    texts: list[str] | None,
    ids: list[Any],
) -> tuple[KeepRule, Sequence[Any] | Mapping[Hashable, Any] | None, np.ndarray]:
    """The keep rule, its values (``longest`` / ``shortest`` default to ``texts``) and each
    row's place in keep order; a bad rule or value fails here, before any work."""
    rule = KeepRule.parse(keep)
    if keep_values is None and rule.kind in ("longest", "shortest"):
        keep_values = texts
    rule, keep_rank = _keep_order(rule, keep_values, ids)
    return rule, keep_values, keep_rank


def _refuse_bad_rows(bad: np.ndarray, ids: list[Any], what: str = "embedding rows") -> None:
    """Raise naming up to ten of the rows ``bad`` (positions in ``ids``) that hold NaN or
    inf."""
    if len(bad):
        shown = ", ".join(f"{ids[r]!r} (row {r})" for r in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise DuplicateSearchError(f"{len(bad)} {what} contain NaN or inf: {shown}{more}")


def _load_normalised(
    matrix: Any, n: int, rank: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-norm float32 rows in canonical order; zero and non-finite rows stay zero.

    Returns the matrix, the input rows with NaN / inf and the all-zero input rows.
    """
    d = int(matrix.shape[1]) if n else 0
    X = np.empty((n, d), dtype=np.float32)
    in_order = bool(np.array_equal(rank, np.arange(n)))
    wide = np.dtype(matrix.dtype) == np.float64  # normalise float64 input before narrowing
    bad: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    zero: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    for start in range(0, n, _READ_BLOCK):
        chunk = np.asarray(matrix[start : start + _READ_BLOCK])
        for sub in range(0, len(chunk), 8192):  # cache-sized pieces
            first = start + sub
            block = chunk[sub : sub + 8192]
            if not wide:
                block = block.astype(np.float32, copy=False)
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                bad.append(np.flatnonzero(~finite) + first)
                block = np.where(finite[:, None], block, 0)
            if wide:  # scale first: squares of huge float64 values overflow
                peak = np.abs(block).max(axis=1)
                block = block / np.where(peak > 0, peak, 1.0)[:, None]
            norms, is_zero = _row_norms(block)
            if is_zero.any():
                zero.append(np.flatnonzero(is_zero & finite) + first)
            if wide:
                unit = (block / norms[:, None]).astype(np.float32)
            else:
                unit = block * _unit_scale(norms)[:, None]
            if in_order:
                X[first : first + len(block)] = unit
            else:
                X[rank[first : first + len(block)]] = unit
    return X, np.concatenate(bad), np.concatenate(zero)


def _row_norms(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's norm (float64; 1 for an all-zero row, which stays zero) and which rows are
    all zero."""
    norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
    # a float32 row too small for a float32 factor to unit norm (only subnormal values) has
    # no direction that survives float32: it counts as a zero vector, in full and
    # incremental runs alike
    is_zero = norms < _TINY32 if block.dtype == np.float32 else norms == 0
    norms[is_zero] = 1.0
    return norms, is_zero


_TINY32 = 1.0 / float(np.finfo(np.float32).max)  # below this norm, 1 / norm overflows float32


def _unit_scale(norms: np.ndarray) -> np.ndarray:
    """The float32 factors that make float32 rows unit-norm: ``block * scale[:, None]`` (an
    incremental run keeps them, so that it remakes the same unit rows)."""
    return (1.0 / norms).astype(np.float32)


def _identical_rows(matrix: Any, cand: Candidates, ids: list[Any]) -> list[list[Any]]:
    """Groups of bitwise identical rows. Identical rows score 1, so only the rows of
    candidate pairs scoring ~1 are read back and hashed."""
    import hashlib

    near = cand.scores >= np.float32(0.9999)
    rows = np.unique(np.concatenate([cand.a[near], cand.b[near]]))
    if not len(rows):
        return []
    raw = np.asarray(matrix[rows.tolist()] if _is_h5_dataset(matrix) else matrix[rows])
    keys: list[Any] = [None] * len(ids)
    for row, values in zip(rows.tolist(), np.ascontiguousarray(raw), strict=True):
        keys[row] = hashlib.blake2b(values.tobytes(), digest_size=16).digest()
    return _groups_by_key(keys, ids, cand.rank)
