"""Incremental dedupe: a nightly run over a grown corpus compares only what changed.

A full :func:`~embetter_core.dedupe.find_duplicates` compares every pair of rows. An
incremental run, :func:`find_duplicates_incremental`, keeps what the last run found in a state
file beside the store (:func:`state_path`, a :class:`DedupeState`): each row's id and content
hash, every candidate pair down to the floor with its score, each row's nearest-neighbour
similarity, its unit-norm scale and, for ann, the k-means cells and the recall sample. The
content hash (:func:`row_hashes`, 128 bits) is of the row's vector as given: keying by text
would trust the encoder to be deterministic, and under one encoder the same text gives the
same vector anyway (the cache hands back the stored one). The next run:

1. hashes the rows: a row is *unchanged* when the state holds its id with the same hash, else
   *fresh* (new or edited); state rows whose id is gone were deleted. Only fresh rows are
   normalised: an unchanged row's unit vector is its input times its saved scale, made when
   a comparison needs it, bit for bit the one a full run makes;
2. keeps the candidate pairs of two unchanged rows (a score depends on its two rows only) and
   drops those with an edited or deleted row;
3. searches the fresh rows, and the unchanged rows that lost a candidate partner (so their
   nearest-neighbour similarity is recomputed), against all rows. ``"exact"``: an exact
   search of those rows against every row. ``"ann"``: new rows are placed in the state's
   k-means cells, and only the comparisons a full search over those cells makes with one of
   those rows are made, one product per cell;
4. merges the new candidates into the reused ones (already in candidate order), decides the
   report from them with the keep rule, as a full run does, and writes the new state
   (atomically).

What equals a full run. ``"exact"``: the candidates (pairs and scores), hence pairs, clusters
and removals at every threshold down to the floor, exact-duplicate groups and zero vectors
(``tests/test_incremental.py`` checks this after additions, edits and deletions). ``nearest``
is the same for fresh rows and for rows whose nearest neighbour is at or above the floor; an
unchanged row whose nearest neighbour was below the floor and was then deleted or edited
keeps the old value, an upper bound below the floor that moves no pair. ``"ann"``: the result
of a full search over the same cells; a real full run trains new cells, so the two differ by
what ann misses. The cells are retrained by a full run once the rows placed in them since
training reach ``retrain_share`` of the rows they were trained on. The ann recall estimate
comes from the last run's sample, carried forward: its rows that are still unchanged, their
exact neighbours updated by an exact check against the new and edited rows, ``found``
recomputed against the new candidates. Deleted or edited sample rows leave the sample (their
weights are not re-drawn) until the next full run draws a fresh one, so the estimate differs
from a full run's by sampling noise.

When the state cannot be used (missing, corrupt, or made with another encoder fingerprint,
floor, engine, dimension or ann setting) the run is a full one and says why in a log record
(logger ``embetter_core.incremental``), never a silently different report. More than
``max_fresh`` of the rows fresh also means a full run: it is cheaper.

>>> import numpy as np, tempfile, pathlib
>>> state = pathlib.Path(tempfile.mkdtemp()) / "vectors.dedupe-state.npz"
>>> vecs = np.array([[1, 0], [0.96, 0.28], [0, 1]], dtype=np.float32)
>>> first = find_duplicates_incremental(vecs, state, ids=["a", "b", "c"], threshold=0.9)
>>> grown = np.vstack([vecs, [[0.05, 1.0]]]).astype(np.float32)
>>> report = find_duplicates_incremental(grown, state, ids=["a", "b", "c", "d"], threshold=0.9)
>>> report.pairs, report.params["incremental"]["mode"]
([('c', 'd', 0.998752), ('a', 'b', 0.96)], 'incremental')
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import zipfile
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from embetter_core.dedupe import (
    _READ_BLOCK,
    _SCREEN_SLACK,
    AUTO_EXACT_MAX_ROWS,
    DEFAULT_THRESHOLD,
    AnnCells,
    Candidates,
    DuplicateReport,
    RecallSample,
    _assign_cells,
    _blas_limit,
    _canonical_order,
    _check_ids,
    _check_params,
    _check_texts,
    _cross_search,
    _groups_by_key,
    _identical_rows,
    _input_shape,
    _keep_setup,
    _load_normalised,
    _refuse_bad_rows,
    _rescore,
    _row_norms,
    _run,
    _unit_scale,
    find_duplicates,
)
from embetter_core.errors import DedupeStateError, DuplicateSearchError
from embetter_core.files import atomic_path
from embetter_core.keep import KeepRule

logger = logging.getLogger(__name__)

FORMAT = "embetter-core/dedupe-state"
FORMAT_VERSION = 2  # includes the row hash: a new hash needs a new version
_HASH_SEED = 0x5EED_1D  # fixed: hashes are compared across runs


def state_path(store: str | os.PathLike[str]) -> Path:
    """The state file kept beside a store: ``vectors.h5`` -> ``vectors.dedupe-state.npz``.

    >>> state_path("out/vectors.h5").name
    'vectors.dedupe-state.npz'
    """
    return Path(store).with_suffix(".dedupe-state.npz")


def row_hashes(X: np.ndarray) -> np.ndarray:
    """Each row's 128-bit content hash, as ``(n, 2)`` uint64, of its float32 values (float64
    ones for a float64 array).

    Two multilinear hashes of the row's 32-bit words: ``sum(word[i] * key[i]) mod 2**64``
    with fixed random odd 64-bit keys. Two different rows collide with probability at most
    2**-32 per hash over the keys (2**-64 for both), and it takes one integer matrix product:
    about 0.03 s for 64k x 384 here, a third of SHA-256 row by row.

    >>> h = row_hashes(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    >>> h.shape, bool((h[0] == h[1]).all()), bool((h[0] == h[2]).any())
    ((3, 2), True, False)
    """
    wide = np.asarray(X).dtype == np.float64
    rows = np.ascontiguousarray(X, dtype=np.float64 if wide else np.float32)
    if rows.ndim != 2:
        raise ValueError(f"row_hashes needs a 2-D array, got shape {rows.shape}")
    words = rows.view(np.uint32)  # each float32's 32 bits
    keys = np.random.default_rng(_HASH_SEED).integers(
        0, 2**64 - 1, size=(words.shape[1], 2), dtype=np.uint64, endpoint=True
    )
    keys |= np.uint64(1)
    out = np.empty((len(rows), 2), dtype=np.uint64)
    for start in range(0, len(rows), 2048):  # blocks that stay in cache
        out[start : start + 2048] = words[start : start + 2048].astype(np.uint64) @ keys
    return out


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

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (
            f"DedupeState(rows={len(self)}, method={self.method!r}, floor={self.floor}, "
            f"candidates={len(self.scores)}, fingerprint={self.fingerprint!r})"
        )

    @classmethod
    def from_report(
        cls,
        report: DuplicateReport,
        hashes: np.ndarray,
        *,
        scale: np.ndarray,
        fingerprint: str = "",
        dim: int,
        input_dtype: str = "float32",
        trained_rows: int | None = None,
        placed_since_training: int = 0,
    ) -> DedupeState:
        """The state of ``report``, whose rows have content ``hashes`` and unit-norm factors
        ``scale`` (input order)."""
        ids = np.asarray(report.ids) if report.ids else np.array([], dtype=str)
        if ids.dtype.kind not in "Ui" or ids.ndim != 1:
            raise DedupeStateError(
                "incremental dedupe needs ids that are all strings or all integers"
            )
        cand = report.candidates
        return cls(
            ids=ids,
            hashes=np.asarray(hashes, dtype=np.uint64),
            scale=np.asarray(scale, dtype=np.float32),
            a=cand.a,
            b=cand.b,
            scores=cand.scores,
            nearest=np.asarray(report.nearest, dtype=np.float32),
            floor=float(report.floor),
            method=report.method,
            fingerprint=str(fingerprint),
            dim=int(dim),
            input_dtype=str(input_dtype),
            recall=cand.recall,
            cells=cand.cells,
            trained_rows=len(ids) if trained_rows is None else int(trained_rows),
            placed_since_training=int(placed_since_training),
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
        arrays: dict[str, np.ndarray] = {
            "ids": self.ids,
            "hashes": self.hashes,
            "scale": self.scale,
            "a": self.a,
            "b": self.b,
            "scores": self.scores,
            "nearest": self.nearest,
        }
        if self.recall is not None:
            for name in ("rows", "weights", "nearest", "pair_row", "other", "scores", "found"):
                arrays[f"recall_{name}"] = getattr(self.recall, name)
        if self.cells is not None:
            meta.update(nprobe=self.cells.nprobe, max_probe=self.cells.max_probe)
            for name in ("centroids", "primary", "visit_rows", "visit_cells"):
                arrays[f"cells_{name}"] = getattr(self.cells, name)
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
                **{
                    name: arrays[f"cells_{name}"]
                    for name in ("centroids", "primary", "visit_rows", "visit_cells")
                },
                nprobe=int(meta["nprobe"]),
                max_probe=int(meta["max_probe"]),
            )
        return cls(
            ids=arrays["ids"],
            hashes=arrays["hashes"],
            scale=arrays["scale"],
            a=arrays["a"],
            b=arrays["b"],
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


# ----------------------------------------------------------------------------------------
# The entry point
# ----------------------------------------------------------------------------------------
def find_duplicates_incremental(
    embeddings: Any,
    state: str | os.PathLike[str],
    ids: Sequence[Hashable] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    method: str = "auto",
    texts: Sequence[str] | Mapping[Hashable, str] | None = None,
    *,
    fingerprint: str = "",
    keep: str | KeepRule | None = "first",
    keep_values: Sequence[Any] | Mapping[Hashable, Any] | None = None,
    floor: float | None = None,
    nprobe: int = 4,
    nlist: int | None = None,
    recall_sample: int = 500,
    n_jobs: int = 1,
    blas_threads: int | None = 1,
    block_size: int = 1024,
    max_candidates: int = 50_000_000,
    seed: int = 0,
    max_fresh: float = 0.3,
    retrain_share: float = 0.5,
) -> DuplicateReport:
    """:func:`~embetter_core.dedupe.find_duplicates`, reusing the last run's state file
    ``state`` (see the module docs) and writing the new one there.

    Takes the arguments of ``find_duplicates``, and:

    Args:
        state: the state file (:func:`state_path` of the store); missing, unusable or
            another setup's: a full run, logged.
        fingerprint: the encoder fingerprint of ``embeddings``; a state from another
            encoder is not used.
        max_fresh: above this share of fresh rows, run a full search instead.
        retrain_share: ann: once the rows placed in the cells since they were trained
            exceed this share of the rows they were trained on, run a full search (new
            cells).

    ``report.params["incremental"]`` says what happened: ``mode`` (``"incremental"`` or
    ``"full"``), ``reason`` (why a full run), and the counts ``unchanged``, ``fresh`` (new
    or edited), ``edited``, ``deleted``, ``rechecked`` (unchanged rows that lost a candidate
    partner, searched again) and ``reused_pairs``.
    """
    state = Path(state)
    threshold, floor = _check_params(threshold, floor, method, nprobe, n_jobs, block_size)
    matrix, n = _input_shape(embeddings)
    ids_list = _check_ids(ids, n)
    text_list = _check_texts(texts, ids_list)
    rule, keep_values, _ = _keep_setup(keep, keep_values, text_list, ids_list)
    for name, share in (("max_fresh", max_fresh), ("retrain_share", retrain_share)):
        if not 0.0 <= share <= 1.0:
            raise DuplicateSearchError(f"{name} must be in [0, 1], got {share}")
    rank, order = _canonical_order(ids_list)
    raw = _input_rows(matrix, n)
    hashes = row_hashes(raw)  # input order
    dim = int(raw.shape[1]) if n else 0
    chosen = method if method != "auto" else ("exact" if n <= AUTO_EXACT_MAX_ROWS else "ann")
    search = {
        "nprobe": nprobe,
        "nlist": nlist,
        "recall_sample": recall_sample,
        "n_jobs": n_jobs,
        "blas_threads": blas_threads,
        "block_size": block_size,
        "max_candidates": max_candidates,
        "seed": seed,
    }

    old, reason = _usable_state(
        state, fingerprint, floor, chosen, dim, str(raw.dtype), nprobe, nlist
    )
    report = scale = None
    if old is not None:
        try:
            report, reason, scale = _incremental(
                old,
                raw,
                ids_list,
                hashes,
                rank,
                order,
                matrix,
                text_list,
                threshold=threshold,
                floor=floor,
                method=chosen,
                requested=method,
                state=state,
                search=search,
                max_fresh=max_fresh,
                retrain_share=retrain_share,
                keep=rule,
                keep_values=keep_values,
            )
        except DedupeStateError as err:  # found inconsistent while matching the rows
            old, reason = None, str(err)
    if report is None or scale is None:
        if old is None and not reason.startswith("no state"):
            logger.warning("dedupe state %s not used (%s); running a full dedupe", state, reason)
        else:  # no state yet, or a planned full run (too much changed, cells to retrain)
            logger.info("dedupe: %s; running a full dedupe", reason)
        report = find_duplicates(
            raw if raw.dtype == np.dtype(matrix.dtype) else matrix,  # an h5 dataset read once
            ids_list,
            threshold,
            method,
            text_list,
            keep=rule,
            keep_values=keep_values,
            floor=floor,
            **search,
        )
        report.params["incremental"] = {"mode": "full", "reason": reason, "state": str(state)}
        scale = _unit_scales(raw)
        trained, placed = n, 0
    else:
        trained = old.trained_rows if chosen == "ann" else n
        placed = old.placed_since_training + report.params["incremental"]["fresh"]
    _save_state(report, hashes, scale, state, fingerprint, dim, str(raw.dtype), trained, placed)
    return report


def _input_rows(matrix: Any, n: int) -> np.ndarray:
    """The input as one C-contiguous array: float64 kept (it is normalised in float64
    first), any other dtype as float32 (as a full run reads it)."""
    dtype = np.float64 if np.dtype(matrix.dtype) == np.float64 else np.float32
    if isinstance(matrix, np.ndarray):
        return np.ascontiguousarray(matrix, dtype=dtype)
    out = np.empty((n, int(matrix.shape[1]) if n else 0), dtype=dtype)
    for start in range(0, n, _READ_BLOCK):  # an h5py dataset, read in blocks
        out[start : start + _READ_BLOCK] = matrix[start : start + _READ_BLOCK]
    return out


def _unit_scales(raw: np.ndarray) -> np.ndarray:
    """Each finite row's float32 factor to unit norm, 0 for an all-zero row (1 otherwise
    for float64 input, whose unit rows are made in float64 first)."""
    scale = np.empty(len(raw), dtype=np.float32)
    for start in range(0, len(raw), 8192):
        norms, zero = _row_norms(raw[start : start + 8192])
        part = _unit_scale(norms) if raw.dtype == np.float32 else np.ones(len(norms), np.float32)
        part[zero] = 0
        scale[start : start + 8192] = part
    return scale


class _UnitRows:
    """This run's unit-norm rows, by canonical row, made when asked for: the input row times
    its scale, the same float32 product :func:`~embetter_core.dedupe._load_normalised`
    makes. Supports ``len`` and ``rows[index_array]``."""

    def __init__(self, raw: np.ndarray, scale: np.ndarray, order: np.ndarray) -> None:
        self.raw, self.scale, self.order = raw, scale, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        at = self.order[rows]
        return self.raw[at] * self.scale[at, None]


def _usable_state(
    path: Path,
    fingerprint: str,
    floor: float,
    method: str,
    dim: int,
    input_dtype: str,
    nprobe: int,
    nlist: int | None,
) -> tuple[DedupeState | None, str]:
    """The state at ``path`` when this run can build on it, else None and why not."""
    try:
        old = DedupeState.load(path)
    except FileNotFoundError:
        return None, f"no state at {path} yet"
    except DedupeStateError as err:
        return None, str(err)
    checks = [
        ("encoder fingerprint", old.fingerprint, fingerprint),
        ("floor", old.floor, floor),
        ("engine", old.method, method),
        ("dimension", old.dim, dim),
        ("input dtype", old.input_dtype, input_dtype),
    ]
    if old.cells is not None and method == "ann":
        checks.append(("nprobe", old.cells.nprobe, nprobe))
        if nlist is not None:
            checks.append(("nlist", len(old.cells.centroids), nlist))
    for what, before, now in checks:
        if before != now:
            return None, f"it was made with {what} {before!r}, this run uses {now!r}"
    return old, ""


def _save_state(
    report: DuplicateReport,
    hashes: np.ndarray,
    scale: np.ndarray,
    path: Path,
    fingerprint: str,
    dim: int,
    input_dtype: str,
    trained: int,
    placed: int,
) -> None:
    """Write the new state; a failure is logged, and the next run is a full one."""
    try:
        new = DedupeState.from_report(
            report,
            hashes,
            scale=scale,
            fingerprint=fingerprint,
            dim=dim,
            input_dtype=input_dtype,
            trained_rows=trained,
            placed_since_training=placed,
        )
        new.save(path)
    except (OSError, DedupeStateError) as err:
        logger.warning("dedupe state %s not written (%s); the next run will be full", path, err)
        path.unlink(missing_ok=True)  # never leave an older state to be used against new rows


def _incremental(
    old: DedupeState,
    raw: np.ndarray,
    ids: list[Any],
    hashes: np.ndarray,
    rank: np.ndarray,
    order: np.ndarray,
    matrix: Any,
    texts: list[str] | None,
    *,
    threshold: float,
    floor: float,
    method: str,
    requested: str,
    state: Path,
    search: dict[str, Any],
    max_fresh: float,
    retrain_share: float,
    keep: KeepRule,
    keep_values: Sequence[Any] | Mapping[Hashable, Any] | None,
) -> tuple[DuplicateReport | None, str, np.ndarray | None]:
    """The report built on ``old`` and the rows' unit-norm scales, or None and why a full
    run is needed."""
    n = len(ids)
    if n < 2:
        return None, f"{n} rows", None
    # -- what changed (input rows i, state rows j) ----------------------------------------
    old_of = _state_rows(old.ids, ids, state)
    same = old_of >= 0
    same[same] = (old.hashes[old_of[same]] == hashes[same]).all(axis=1)
    now_of = np.full(len(old), -1, dtype=np.int64)  # state row -> canonical row, -1: gone
    now_of[old_of[same]] = rank[np.flatnonzero(same)]
    fresh = ~same[order]  # canonical rows, new or edited
    new_count = int(fresh.sum())
    if method == "ann" and old.placed_since_training + new_count > retrain_share * max(
        old.trained_rows, 1
    ):
        return (
            None,
            (
                f"{old.placed_since_training + new_count} rows placed in cells trained on "
                f"{old.trained_rows}: retraining them"
            ),
            None,
        )
    # -- candidates between unchanged rows --------------------------------------------------
    ca, cb = now_of[old.a], now_of[old.b]
    both = (ca >= 0) & (cb >= 0)
    lost = np.concatenate([ca[(ca >= 0) & (cb < 0)], cb[(cb >= 0) & (ca < 0)]])
    recheck = np.zeros(n, dtype=bool)
    recheck[lost] = True  # unchanged rows that lost a candidate partner
    search_rows = fresh | recheck
    if search_rows.sum() > max_fresh * n:
        return (
            None,
            (f"{int(search_rows.sum())} of {n} rows to search, over max_fresh={max_fresh}"),
            None,
        )
    reused_lo = np.minimum(ca[both], cb[both])
    reused_hi = np.maximum(ca[both], cb[both])
    reused_s = old.scores[both]

    # -- unit rows: unchanged rows keep their scale, fresh rows are normalised ---------------
    scale = np.zeros(n, dtype=np.float32)
    scale[same] = old.scale[old_of[same]]
    if raw.dtype == np.float64:  # unit rows made in float64 first: make them all
        unit, bad_rows, zero_rows = _load_normalised(raw, n, np.arange(n))
        _refuse_bad_rows(bad_rows, ids)
        scale = np.ones(n, dtype=np.float32)
        scale[zero_rows] = 0
        rows = _UnitRows(unit, scale, order)
    else:
        new_in = np.flatnonzero(~same)  # input rows
        block = raw[new_in]
        finite = np.isfinite(block).all(axis=1)
        _refuse_bad_rows(new_in[~finite], ids)
        norms, zero = _row_norms(block)
        scale[new_in] = np.where(zero, np.float32(0), _unit_scale(norms))
        zero_rows = np.flatnonzero(scale == 0)
        rows = _UnitRows(raw, scale, order)

    screen = np.float32(floor - _SCREEN_SLACK)
    block, n_jobs, limit = search["block_size"], search["n_jobs"], search["max_candidates"]
    cells = None
    with _blas_limit(search["blas_threads"], with_faiss=method == "ann"):
        if method == "exact":
            X = rows[np.arange(n)]
            near_rows = np.flatnonzero(search_rows)
            rowmax, colmax, q, m = _cross_search(
                X[near_rows],
                X,
                screen,
                block=block,
                n_jobs=n_jobs,
                limit=limit,
                self_cols=near_rows,
            )
            found_near = colmax
            found_near[near_rows] = rowmax
            a, b = near_rows[q], m
            keys = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
            lo, hi = keys // n, keys % n
        else:
            cells = _placed_cells(old, now_of, rows, fresh, screen)
            lo, hi, found_near = _search_fresh(
                rows, cells, search_rows, screen, n_jobs=n_jobs, limit=limit
            )
        scores = _rescore(rows, lo, hi)
        ok = scores >= floor
        lo, hi, scores = _merged(
            (reused_lo, reused_hi, reused_s), (lo[ok], hi[ok], scores[ok]), n, fresh, recheck
        )

        old_near = np.full(n, -np.inf, dtype=np.float32)
        alive = now_of >= 0
        old_near[now_of[alive]] = np.nan_to_num(old.nearest[alive], nan=-np.inf)
        nearest = np.where(search_rows, found_near, np.maximum(old_near, found_near))
        sample = None
        if method == "ann" and old.recall is not None:
            sample = _carried_sample(
                old.recall, now_of, rows, fresh, search_rows, lo, hi, floor, block
            )
            nearest[sample.rows] = sample.nearest
    nearest[~np.isfinite(nearest)] = np.nan
    nearest[rank[zero_rows]] = np.nan

    candidates = Candidates(
        a=order[lo],
        b=order[hi],
        scores=scores,
        rank=rank,
        floor=floor,
        recall=None if sample is None else sample.renumbered(order),
        cells=None if cells is None else cells.renumbered(order),
    )
    if texts is not None:
        exact_groups = _groups_by_key(texts, ids, rank)
    else:
        exact_groups = _identical_rows(matrix, candidates, ids)
    params = {"requested_method": requested, **search}
    params.pop("max_candidates")
    if method == "ann":
        params["nlist"] = len(old.cells.centroids) if old.cells is not None else None
    params["incremental"] = {
        "mode": "incremental",
        "state": str(state),
        "unchanged": int(same.sum()),
        "fresh": new_count,
        "edited": int(((old_of >= 0) & ~same).sum()),
        "deleted": int(len(old) - (old_of >= 0).sum()),
        "rechecked": int(recheck.sum()),
        "reused_pairs": int(both.sum()),
    }
    report = DuplicateReport.from_candidates(
        ids,
        candidates,
        threshold,
        method=method,
        nearest=nearest[rank],
        exact_groups=exact_groups,
        zero_vector_ids=[ids[r] for r in sorted(zero_rows.tolist(), key=lambda r: rank[r])],
        params=params,
        keep=keep,
        keep_values=keep_values,
    )
    return report, "", scale


def _state_rows(state_ids: np.ndarray, ids: list[Any], path: Path) -> np.ndarray:
    """Each input row's row in the state by id (-1: a new id)."""
    where = dict(zip(state_ids.tolist(), range(len(state_ids)), strict=True))
    if len(where) != len(state_ids):
        raise DedupeStateError(f"dedupe state {path} is not valid: ids repeat")
    found = map(where.get, ids, itertools.repeat(-1))
    return np.fromiter(found, dtype=np.int64, count=len(ids))


def _merged(
    reused: tuple[np.ndarray, np.ndarray, np.ndarray],
    new: tuple[np.ndarray, np.ndarray, np.ndarray],
    n: int,
    fresh: np.ndarray,
    recheck: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reused and new candidates (canonical ``lo < hi`` and score) in candidate order:
    score descending, then ``lo``, then ``hi``.

    The reused ones come in that order already (the state's order, and the canonical order
    of ids that stay keeps their order), so the few new ones are inserted where they belong
    instead of sorting all again. A new pair of two unchanged (rechecked) rows that is also
    reused is dropped: the reused one stays, as a full run finds it once."""
    r_lo, r_hi, r_s = reused
    lo, hi, s = new
    if recheck.any():
        maybe = ~fresh[lo] & ~fresh[hi]  # two unchanged rows, one of them rechecked
        if maybe.any():
            mine = recheck[r_lo] | recheck[r_hi]
            dup = np.isin(lo[maybe] * n + hi[maybe], r_lo[mine] * n + r_hi[mine])
            keep = np.ones(len(lo), dtype=bool)
            keep[np.flatnonzero(maybe)[dup]] = False
            lo, hi, s = lo[keep], hi[keep], s[keep]
    if not _in_candidate_order(r_lo, r_hi, r_s):  # e.g. ids whose order changed type
        all_lo, all_hi, all_s = (np.concatenate(p) for p in ((r_lo, lo), (r_hi, hi), (r_s, s)))
        sort = np.lexsort((all_hi, all_lo, -all_s))
        return all_lo[sort], all_hi[sort], all_s[sort]
    sort = np.lexsort((hi, lo, -s))
    lo, hi, s = lo[sort], hi[sort], s[sort]
    neg = -r_s
    at = np.searchsorted(neg, -s, side="left")
    end = np.searchsorted(neg, -s, side="right")
    for k in np.flatnonzero(end > at).tolist():  # equal scores: by (lo, hi) among them
        key = r_lo[at[k] : end[k]] * n + r_hi[at[k] : end[k]]
        at[k] += int(np.searchsorted(key, lo[k] * n + hi[k]))
    return np.insert(r_lo, at, lo), np.insert(r_hi, at, hi), np.insert(r_s, at, s)


def _in_candidate_order(lo: np.ndarray, hi: np.ndarray, s: np.ndarray) -> bool:
    """Whether the pairs are sorted by score descending, then ``lo``, then ``hi``."""
    if len(s) < 2:
        return True
    s0, s1, l0, l1 = s[:-1], s[1:], lo[:-1], lo[1:]
    tie = s0 == s1
    after = (l0 < l1) | ((l0 == l1) & (hi[:-1] < hi[1:]))
    return bool(((s0 > s1) | (tie & after)).all() and (lo < hi).all())


def _search_fresh(
    rows: _UnitRows,
    cells: AnnCells,
    fresh: np.ndarray,
    screen: np.float32,
    *,
    n_jobs: int,
    limit: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The comparisons a full search over ``cells`` (:func:`~embetter_core.dedupe.
    _search_cells`) makes that involve a ``fresh`` row (boolean mask of canonical rows):
    a fresh member of a cell against the cell's members and visitors, a fresh visitor
    against its members. Cell by cell: its fresh rows against its members in one product,
    its fresh members against its visitors in another; the products are of input rows,
    scaled after (a cell has a few fresh rows, so scaling its many rows would cost more).

    Returns the pairs scoring at least ``screen`` (canonical rows, ``lo < hi``, unique) and
    each row's best similarity among the fresh rows it met (every row it met, for fresh rows;
    -inf: none).
    """
    n = len(rows)
    nlist = len(cells.centroids)
    order = rows.order
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    fresh_in = fresh[rank]  # by input row
    raw, scale = rows.raw, rows.scale
    # each cell's members (primary cell) and visitors, as input rows
    small = np.int16 if nlist <= np.iinfo(np.int16).max else np.int64  # a radix sort
    members = order[np.argsort(cells.primary.astype(small), kind="stable")]
    m_bounds = np.concatenate([[0], np.cumsum(np.bincount(cells.primary, minlength=nlist))])
    visitors = order[cells.visit_rows[np.argsort(cells.visit_cells.astype(small), kind="stable")]]
    v_bounds = np.concatenate([[0], np.cumsum(np.bincount(cells.visit_cells, minlength=nlist))])
    touched = np.zeros(nlist, dtype=bool)
    touched[cells.primary[fresh]] = True
    touched[cells.visit_cells[fresh[cells.visit_rows]]] = True

    def cell_task(c: int) -> Callable[[], Any]:
        def task() -> Any:
            mem = members[m_bounds[c] : m_bounds[c + 1]]
            vis = visitors[v_bounds[c] : v_bounds[c + 1]]
            new_mem = np.flatnonzero(fresh_in[mem])  # positions in mem
            new_vis = vis[fresh_in[vis]]
            queries = np.concatenate([mem[new_mem], new_vis])
            unit = np.take(raw, queries, axis=0) * scale[queries, None]
            # one row per query; columns: the members, then (fresh members only) the visitors
            cols = np.concatenate([mem, vis]) if len(new_mem) else mem
            sims = np.full((len(queries), len(cols)), -np.inf, dtype=np.float32)
            if len(mem):  # fresh members and visitors against the members (raw, scaled after)
                part = sims[:, : len(mem)]
                part[...] = _products(unit, np.take(raw, mem, axis=0))
                part *= scale[mem]
                part[np.arange(len(new_mem)), new_mem] = -np.inf  # itself
                part[len(new_mem) :, new_mem] = -np.inf  # met as the member's visitor
            if len(new_mem) and len(vis):  # fresh members against the visitors
                part = sims[: len(new_mem), len(mem) :]
                part[...] = _products(unit[: len(new_mem)], np.take(raw, vis, axis=0))
                part *= scale[vis]
            return _met(queries, cols, sims, screen)

        return task

    nearest = np.full(n, -np.inf, dtype=np.float32)  # by input row
    where, best, hits_a, hits_b = [], [], [], []
    count = 0
    for q_rows, q_best, m_rows, m_best, a, b in _run(
        (cell_task(int(c)) for c in np.flatnonzero(touched)), n_jobs
    ):
        where += [q_rows, m_rows]
        best += [q_best, m_best]
        hits_a.append(a)
        hits_b.append(b)
        count += len(a)
        if count > limit:
            raise DuplicateSearchError(
                f"more than max_candidates={limit} candidate pairs above the floor: "
                "raise the threshold or the floor, or raise max_candidates"
            )
    if where:
        np.maximum.at(nearest, np.concatenate(where), np.concatenate(best))
    if not hits_a:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, nearest[order]
    a, b = rank[np.concatenate(hits_a)], rank[np.concatenate(hits_b)]
    keys = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    return keys // n, keys % n, nearest[order]


def _products(Q: np.ndarray, G: np.ndarray) -> np.ndarray:
    """``Q @ G.T`` for the few rows of ``Q`` a cell has: 1 to 3 rows one by one, as
    matrix-vector products (OpenBLAS's matrix product takes 2-3 rows twice as long as 4)."""
    if not 1 < len(Q) < 4:
        return Q @ G.T
    out = np.empty((len(Q), len(G)), dtype=np.float32)
    for i in range(len(Q)):
        np.matmul(G, Q[i], out=out[i])
    return out


def _met(
    q_rows: np.ndarray, m_rows: np.ndarray, sims: np.ndarray, screen: np.float32
) -> tuple[np.ndarray, ...]:
    """From one product: each query's and each column's best, and the pairs at ``screen``."""
    r, k = np.nonzero(sims >= screen)
    q_best, m_best = sims.max(axis=1, initial=-np.inf), sims.max(axis=0, initial=-np.inf)
    return q_rows, q_best, m_rows, m_best, q_rows[r], m_rows[k]


def _placed_cells(
    old: DedupeState, now_of: np.ndarray, X: _UnitRows, fresh: np.ndarray, screen: np.float32
) -> AnnCells:
    """The state's cells over this run's canonical rows: unchanged rows where they were,
    fresh rows placed by the same rule."""
    assert old.cells is not None
    cells = old.cells
    n = len(X)
    primary = np.empty(n, dtype=np.int64)
    alive = now_of >= 0
    primary[now_of[alive]] = cells.primary[alive]
    kept = alive[cells.visit_rows]
    new_rows = np.flatnonzero(fresh)
    p, vr, vc = _assign_cells(
        X[new_rows], cells.centroids, screen, nprobe=cells.nprobe, max_probe=cells.max_probe
    )
    primary[new_rows] = p
    return replace(
        cells,
        primary=primary,
        visit_rows=np.concatenate([now_of[cells.visit_rows[kept]], new_rows[vr]]),
        visit_cells=np.concatenate([cells.visit_cells[kept], vc]),
    )


def _carried_sample(
    sample: RecallSample,
    now_of: np.ndarray,
    X: _UnitRows,
    fresh: np.ndarray,
    searched: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    floor: float,
    block: int,
) -> RecallSample:
    """The last run's recall sample over this run's canonical rows: its unchanged rows,
    their exact neighbours among the fresh rows added, ``found`` against ``(lo, hi)``: looked
    up for the pairs with a ``searched`` row, as before for the others (such a pair is a
    candidate now exactly when it was one, reused)."""
    n = len(X)
    alive = now_of[sample.rows] >= 0
    renum = np.cumsum(alive) - 1  # old sample position -> new one
    rows = now_of[sample.rows[alive]]
    keep = alive[sample.pair_row] & (now_of[sample.other] >= 0)
    pair_row = renum[sample.pair_row[keep]]
    other = now_of[sample.other[keep]]
    scores = sample.scores[keep]
    new_rows = np.flatnonzero(fresh)
    screen = np.float32(floor - _SCREEN_SLACK)
    best, _, q, m = _cross_search(
        X[rows], X[new_rows], screen, block=block, n_jobs=1, limit=np.iinfo(np.int64).max
    )
    add = _rescore(X, rows[q], new_rows[m])
    ok = add >= floor
    pair_row = np.concatenate([pair_row, q[ok]])
    other = np.concatenate([other, new_rows[m[ok]]])
    scores = np.concatenate([scores, add[ok]])
    found = np.concatenate([sample.found[keep], np.zeros(int(ok.sum()), dtype=bool)])
    a, b = rows[pair_row], other
    look = searched[a] | searched[b]
    if look.any():
        mine = searched[lo] | searched[hi]
        cand = np.sort(lo[mine] * n + hi[mine])
        keys = np.minimum(a[look], b[look]) * n + np.maximum(a[look], b[look])
        at = np.minimum(np.searchsorted(cand, keys), max(len(cand) - 1, 0))
        found[look] = cand[at] == keys if len(cand) else False
    return RecallSample(
        rows=rows,
        weights=sample.weights[alive],
        nearest=np.maximum(sample.nearest[alive], best),
        pair_row=pair_row,
        other=other,
        scores=scores,
        found=found,
    )


__all__ = [
    "DedupeState",
    "find_duplicates_incremental",
    "row_hashes",
    "state_path",
]
