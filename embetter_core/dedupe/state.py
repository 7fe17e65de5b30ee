"""The state an incremental dedupe keeps beside the store (:class:`DedupeState`, in
``<store>.dedupe-state.npz``): each row's id and content hash (:func:`row_hashes`), every
candidate pair down to the floor, and for ann the k-means cells and recall sample.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embetter_core.dedupe.candidates import AnnCells, Candidates, RecallSample
from embetter_core.dedupe.hashing import multilinear_hash
from embetter_core.errors import DedupeStateError
from embetter_core.files import atomic_path

FORMAT = "embetter-core/dedupe-state"


FORMAT_VERSION = 2  # includes the row hash: a new hash needs a new version


_HASH_SEED = 0x5EED_1D  # fixed: hashes are compared across runs


def state_path(store: str | os.PathLike[str]) -> Path:
    """The state file kept beside a store: ``vectors.h5`` -> ``vectors.dedupe-state.npz``.

    >>> state_path("out/vectors.h5").name
    'vectors.dedupe-state.npz'
    """
    return Path(store).with_suffix(".dedupe-state.npz")


def row_hashes(X: np.ndarray, n_jobs: int = 1) -> np.ndarray:
    """Each row's 128-bit content hash, as ``(n, 2)`` uint64, of its float32 values (float64
    ones for a float64 array).

    Two multilinear hashes of the row's 32-bit words: ``sum(word[i] * key[i]) mod 2**64``
    with fixed random odd 64-bit keys. Two different rows collide with probability at most
    2**-32 per hash over the keys (2**-64 for both), and it takes one integer matrix product:
    about 0.03 s for 64k x 384 here, a third of SHA-256 row by row, on ``n_jobs`` threads.

    >>> h = row_hashes(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    >>> h.shape, bool((h[0] == h[1]).all()), bool((h[0] == h[2]).any())
    ((3, 2), True, False)
    """
    wide = np.asarray(X).dtype == np.float64
    rows = np.ascontiguousarray(X, dtype=np.float64 if wide else np.float32)
    if rows.ndim != 2:
        raise ValueError(f"row_hashes needs a 2-D array, got shape {rows.shape}")
    keys = np.random.default_rng(_HASH_SEED).integers(
        0, 2**64 - 1, size=(rows.shape[1] * rows.itemsize // 4, 2), dtype=np.uint64, endpoint=True
    )
    return multilinear_hash(rows, keys | np.uint64(1), threads=n_jobs)


@dataclass(frozen=True, eq=False, repr=False)
class DedupeState:
    """What a dedupe run found, kept for the next incremental run. Rows are the rows of the
    run that wrote it, in its input order. Treat the arrays as read-only.

    Attributes:
        ids: the rows' ids (a str or int64 array).
        hashes: each row's content hash (``(n, 2)`` uint64, :func:`row_hashes` of its input
            vector).
        scale: each row's float32 factor to unit norm (0 for an all-zero row): input row
            times scale is the unit row a search compares.
        a, b, scores: every candidate pair down to ``floor`` (rows, float32 cosine).
        nearest: each row's nearest-neighbour similarity (float32; NaN: none, zero vector).
        floor: the score down to which the candidates are complete.
        method: the engine, ``"exact"`` or ``"ann"``.
        fingerprint: the encoder fingerprint of the vectors ("" when not given).
        dim: the vectors' dimension.
        input_dtype: ``"float32"`` (any input but float64 is read as float32) or
            ``"float64"``: what the hashes and scales are of.
        recall: ann's recall sample (None for exact).
        cells: ann's k-means cells (None for exact).
        trained_rows: ann: the rows the cells were trained on.
        placed_since_training: ann: the rows placed in the cells by incremental runs since.
    """

    ids: np.ndarray
    hashes: np.ndarray
    scale: np.ndarray
    a: np.ndarray
    b: np.ndarray
    scores: np.ndarray
    nearest: np.ndarray
    floor: float
    method: str
    fingerprint: str
    dim: int
    input_dtype: str = "float32"
    recall: RecallSample | None = None
    cells: AnnCells | None = None
    trained_rows: int = 0
    placed_since_training: int = 0
    floor_raised_from: float | None = None  # the default floor that overflowed, if raised

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (
            f"DedupeState(rows={len(self)}, method={self.method!r}, floor={self.floor}, "
            f"candidates={len(self.scores)}, fingerprint={self.fingerprint!r})"
        )

    @classmethod
    def from_candidates(
        cls,
        ids: list[Any],
        candidates: Candidates,
        nearest: np.ndarray,
        hashes: np.ndarray,
        *,
        method: str,
        scale: np.ndarray,
        fingerprint: str = "",
        dim: int,
        input_dtype: str = "float32",
        trained_rows: int | None = None,
        placed_since_training: int = 0,
        floor_raised_from: float | None = None,
        id_array: np.ndarray | None = None,
    ) -> DedupeState:
        """The state of a search over rows ``ids`` (input order) that found ``candidates``
        (a report's ``candidates``) and each row's ``nearest`` similarity, whose rows have
        content ``hashes`` and unit-norm factors ``scale``; ``id_array``: the ids as an
        array, when made already. Known as soon as the search is done, before any
        decision."""
        if id_array is None:
            id_array = np.asarray(ids) if ids else np.array([], dtype=str)
        if id_array.dtype.kind not in "Ui" or id_array.ndim != 1:
            raise DedupeStateError(
                "incremental dedupe needs ids that are all strings or all integers"
            )
        return cls(
            ids=id_array,
            hashes=np.asarray(hashes, dtype=np.uint64),
            scale=np.asarray(scale, dtype=np.float32),
            a=candidates.a,
            b=candidates.b,
            scores=candidates.scores,
            nearest=np.asarray(nearest, dtype=np.float32),
            floor=float(candidates.floor),
            method=method,
            fingerprint=str(fingerprint),
            dim=int(dim),
            input_dtype=str(input_dtype),
            recall=candidates.recall,
            cells=candidates.cells,
            trained_rows=len(id_array) if trained_rows is None else int(trained_rows),
            placed_since_training=int(placed_since_training),
            floor_raised_from=floor_raised_from,
        )

    # -- file -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the state to ``path`` (an uncompressed ``.npz``), atomically."""
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "floor": self.floor,
            "method": self.method,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "input_dtype": self.input_dtype,
            "trained_rows": self.trained_rows,
            "placed_since_training": self.placed_since_training,
        }
        if self.floor_raised_from is not None:
            meta["floor_raised_from"] = self.floor_raised_from
        arrays: dict[str, np.ndarray] = {
            "ids": self.ids,
            "hashes": self.hashes,
            "scale": self.scale,
            "a": _narrow(self.a, len(self)),
            "b": _narrow(self.b, len(self)),
            "scores": self.scores,
            "nearest": self.nearest,
        }
        if self.recall is not None:
            for name in ("rows", "weights", "nearest", "pair_row", "other", "scores", "found"):
                arrays[f"recall_{name}"] = getattr(self.recall, name)
        if self.cells is not None:
            meta.update(nprobe=self.cells.nprobe, max_probe=self.cells.max_probe)
            arrays["cells_centroids"] = self.cells.centroids
            nlist = len(self.cells.centroids)
            arrays["cells_primary"] = _narrow(self.cells.primary, nlist)
            arrays["cells_visit_rows"] = _narrow(self.cells.visit_rows, len(self))
            arrays["cells_visit_cells"] = _narrow(self.cells.visit_cells, nlist)
        arrays["meta"] = np.array(json.dumps(meta))
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DedupeState:
        """Read a state written by :meth:`save`; raises :class:`DedupeStateError` naming the
        file when it is unreadable, corrupt or inconsistent."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}  # reads (and CRC-checks)
            meta = json.loads(str(arrays.pop("meta")[()]))
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise DedupeStateError(f"dedupe state {path} cannot be read: {err}") from err
        try:
            state = cls._from_arrays(meta, arrays)
        except (KeyError, TypeError, ValueError) as err:
            raise DedupeStateError(f"dedupe state {path} is not valid: {err}") from err
        problem = state._problem()
        if problem:
            raise DedupeStateError(f"dedupe state {path} is not valid: {problem}")
        return state

    @classmethod
    def _from_arrays(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> DedupeState:
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"format {meta.get('format')!r} version {meta.get('format_version')!r}, "
                f"expected {FORMAT!r} version {FORMAT_VERSION}"
            )
        recall = cells = None
        if "recall_rows" in arrays:
            recall = RecallSample(
                **{
                    name: arrays[f"recall_{name}"]
                    for name in ("rows", "weights", "nearest", "pair_row", "other", "scores")
                },
                found=arrays["recall_found"],
            )
        if "cells_centroids" in arrays:
            cells = AnnCells(
                centroids=arrays["cells_centroids"],
                **{
                    name: _wide(arrays[f"cells_{name}"])
                    for name in ("primary", "visit_rows", "visit_cells")
                },
                nprobe=int(meta["nprobe"]),
                max_probe=int(meta["max_probe"]),
            )
        return cls(
            ids=arrays["ids"],
            hashes=arrays["hashes"],
            scale=arrays["scale"],
            a=_wide(arrays["a"]),
            b=_wide(arrays["b"]),
            scores=arrays["scores"],
            nearest=arrays["nearest"],
            floor=float(meta["floor"]),
            method=str(meta["method"]),
            fingerprint=str(meta["fingerprint"]),
            dim=int(meta["dim"]),
            input_dtype=str(meta["input_dtype"]),
            recall=recall,
            cells=cells,
            trained_rows=int(meta["trained_rows"]),
            placed_since_training=int(meta["placed_since_training"]),
            floor_raised_from=meta.get("floor_raised_from"),
        )

    def _problem(self) -> str | None:
        """What makes the arrays inconsistent, or None."""
        n = len(self.ids)
        if self.ids.ndim != 1 or self.ids.dtype.kind not in "Ui":
            return f"ids of dtype {self.ids.dtype}, shape {self.ids.shape}"
        if self.hashes.shape != (n, 2) or self.nearest.shape != (n,):
            return f"{n} ids but hashes {self.hashes.shape}, nearest {self.nearest.shape}"
        if self.scale.shape != (n,) or self.scale.dtype != np.float32:
            return f"{n} ids but scales of dtype {self.scale.dtype}, shape {self.scale.shape}"
        if self.input_dtype not in ("float32", "float64"):
            return f"unknown input dtype {self.input_dtype!r}"
        if not len(self.a) == len(self.b) == len(self.scores):
            return "candidate arrays of different lengths"
        if not _rows_in(n, self.a, self.b):
            return "candidate rows out of range"
        if len(self.scores) and not (self.scores >= np.float32(self.floor)).all():
            return "candidate scores below the floor"
        if self.method not in ("exact", "ann"):
            return f"unknown method {self.method!r}"
        if self.recall is not None:
            r = self.recall
            if not _rows_in(n, r.rows, r.other) or not _rows_in(len(r.rows), r.pair_row):
                return "recall sample rows out of range"
            if len(r.weights) != len(r.rows) or len(r.nearest) != len(r.rows):
                return "recall sample arrays of different lengths"
            if not len(r.pair_row) == len(r.other) == len(r.scores) == len(r.found):
                return "recall sample pair arrays of different lengths"
        if self.cells is not None:
            c = self.cells
            if c.centroids.ndim != 2 or c.centroids.shape[1] != self.dim:
                return f"centroids of shape {c.centroids.shape} for dimension {self.dim}"
            if c.primary.shape != (n,) or len(c.visit_rows) != len(c.visit_cells):
                return "cell arrays of the wrong length"
            nlist = len(c.centroids)
            if not _rows_in(nlist, c.primary, c.visit_cells) or not _rows_in(n, c.visit_rows):
                return "cells out of range"
        if self.method == "ann" and self.cells is None:
            return "an ann state without its cells"
        return None


def _rows_in(n: int, *arrays: np.ndarray) -> bool:
    return all(
        a.ndim == 1 and a.dtype.kind in "iu" and (not len(a) or (a.min() >= 0 and a.max() < n))
        for a in arrays
    )


def _narrow(rows: np.ndarray, bound: int) -> np.ndarray:
    """Row or cell numbers below ``bound`` in the smallest of int16 / int32 / int64 that
    holds them: a smaller file to write and read."""
    for small in (np.int16, np.int32):
        if bound <= np.iinfo(small).max:
            return rows.astype(small, copy=False)
    return rows


def _wide(rows: np.ndarray) -> np.ndarray:
    """Numbers read back as int64 (what the searches index and multiply with)."""
    return rows.astype(np.int64, copy=False) if rows.dtype.kind in "iu" else rows
