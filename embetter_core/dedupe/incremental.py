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
   k-means cells, and each row searched is compared with the members of its cell and of its
   ``2 * nprobe`` nearest cells, one product per cell (a full search also meets the rows
   whose own cells reach it; probing twice the cells finds those pairs from its side, and
   reads each old row once instead of once per cell it visits);
4. merges the new candidates into the reused ones (already in candidate order), decides the
   report from them with the keep rule, as a full run does, and writes the new state
   (atomically, on a thread while the report is decided: the state holds the candidates,
   not the decision).

What equals a full run. ``"exact"``: the candidates (pairs and scores), hence pairs, clusters
and removals at every threshold down to the floor, exact-duplicate groups and zero vectors
(``tests/test_incremental.py`` checks this after additions, edits and deletions). ``nearest``
is the same for fresh rows and for rows whose nearest neighbour is at or above the floor; an
unchanged row whose nearest neighbour was below the floor and was then deleted or edited
keeps the old value, an upper bound below the floor that moves no pair. ``"ann"``: the reused
pairs, and each searched row's pairs with the members of its cells; a full run trains new
cells and searches by its own rule, so the two differ by what each misses
(``python -m benchmarks.incremental --static-debian --threshold 0.91``, real static vectors:
with 1,000 and 5,000 new rows it finds 0.99782 and 0.99749 of exact's pairs, a full ann run
0.99787; searching over the same cells as a full search would, 0.99777 and 0.99714). The
cells are retrained by a full run once the rows placed in them since training reach
``retrain_share`` of the rows they were trained on. The ann recall estimate
comes from the last run's sample, carried forward: its rows that are still unchanged, their
exact neighbours updated by an exact check against the new and edited rows, ``found``
recomputed against the new candidates. Deleted or edited sample rows leave the sample (their
weights are not re-drawn) until the next full run draws again. The draw keys on the rows'
contents (:func:`~embetter_core.dedupe.candidates.sample_priority`), so that full run checks
nearly the same rows, and the two estimates differ by what the searches found, not by which
rows were drawn.

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
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from embetter_core.dedupe.candidates import Candidates
from embetter_core.dedupe.checks import (
    _load_normalised,
    _prepare,
    _Prepared,
    _refuse_bad_rows,
    _row_norms,
    _unit_scale,
)
from embetter_core.dedupe.engines import _blas_limit, _cross_search, _rescore
from embetter_core.dedupe.find import _assemble, find_duplicates
from embetter_core.dedupe.incremental_ann import (
    _carried_sample,
    _placed_cells,
    _search_fresh,
    _UnitRows,
)
from embetter_core.dedupe.keep import KeepRule
from embetter_core.dedupe.results import DuplicateReport
from embetter_core.dedupe.settings import (
    _READ_BLOCK,
    _SCREEN_SLACK,
    DEFAULT_THRESHOLD,
    SearchOptions,
    SearchSettings,
)
from embetter_core.dedupe.state import DedupeState, row_hashes
from embetter_core.errors import CandidateOverflowError, DedupeStateError, DuplicateSearchError

logger = logging.getLogger(__name__)


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
    max_fresh: float = 0.3,
    retrain_share: float = 0.5,
    settings: SearchSettings | None = None,
    **search: Unpack[SearchOptions],
) -> DuplicateReport:
    """:func:`~embetter_core.dedupe.find_duplicates`, reusing the last run's state file
    ``state`` (see the module docs) and writing the new one there.

    Takes the arguments of ``find_duplicates`` (the search settings too, as ``settings=``
    or keyword arguments), and:

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
    if state.is_dir():  # refused before any work: the run could never save its state
        raise DuplicateSearchError(f"dedupe state {state} is a folder; give a file's path")
    settings = SearchSettings.of(settings, search)
    if method == "partitioned":
        raise DuplicateSearchError(
            "find_duplicates_incremental does not run method='partitioned': an incremental "
            "run searches its new rows against the old ones in memory; use method='ann' (a "
            "partitioned report's cells are ann cells, so its state serves an ann rerun)"
        )
    prep = _prepare(embeddings, ids, threshold, floor, method, texts, keep, keep_values)
    for name, share in (("max_fresh", max_fresh), ("retrain_share", retrain_share)):
        if not 0.0 <= share <= 1.0:
            raise DuplicateSearchError(f"{name} must be in [0, 1], got {share}")
    n, matrix = prep.n, prep.matrix
    raw = _input_rows(matrix, n)
    hashes = row_hashes(raw, n_jobs=settings.threads)  # input order
    dim = int(raw.shape[1]) if n else 0

    old, reason = _usable_state(state, fingerprint, prep, dim, str(raw.dtype), settings)
    if old is not None and old.floor != prep.floor:  # a default floor the last run raised
        prep = replace(prep, floor=old.floor)
    writer = _StateWriter(state, hashes, fingerprint=fingerprint, dim=dim, dtype=str(raw.dtype))
    try:
        report, planned = None, True
        if old is not None:
            try:
                report, reason = _incremental(
                    old,
                    prep,
                    raw,
                    hashes,
                    state=state,
                    settings=settings,
                    max_fresh=max_fresh,
                    retrain_share=retrain_share,
                    writer=writer,
                )
            except DedupeStateError as err:  # found inconsistent while matching the rows
                planned, reason = False, str(err)
            except CandidateOverflowError as err:
                if prep.floor_given:
                    raise
                planned, reason = False, f"{err}; a full run raises the default floor"
        elif not reason.startswith("no state"):
            planned = False
        if report is None:
            report = _full_run(prep, raw, matrix, method, settings, state, reason, planned, writer)
    finally:
        writer.wait()
    return report


def _full_run(
    prep: _Prepared,
    raw: np.ndarray,
    matrix: Any,
    method: str,
    settings: SearchSettings,
    state: Path,
    reason: str,
    planned: bool,
    writer: _StateWriter,
) -> DuplicateReport:
    """A full dedupe, saying why (a warning when the state could not be used, else info:
    no state yet, too much changed, cells to retrain), its state handed to ``writer``."""
    if planned:
        logger.info("dedupe: %s; running a full dedupe", reason)
    else:
        logger.warning("dedupe state %s not used (%s); running a full dedupe", state, reason)
    report = find_duplicates(
        raw if raw.dtype == np.dtype(matrix.dtype) else matrix,  # an h5 dataset read once
        prep.ids,
        prep.threshold,
        method,
        prep.texts,
        keep=prep.keep,
        keep_values=prep.keep_values,
        floor=prep.floor if prep.floor_given else None,
        settings=settings,
    )
    report.params["incremental"] = {"mode": "full", "reason": reason, "state": str(state)}
    same_ids = report.ids is prep.ids  # (a full run checked them again, as a new list)
    writer.start(
        report.ids,
        report.candidates,
        report.nearest,
        method=report.method,
        scale=_unit_scales(raw),
        trained=len(raw),
        placed=0,
        floor_raised_from=report.params.get("floor_raised_from"),
        id_array=prep.id_array if same_ids else None,
    )
    return report


class _StateWriter:
    """Writes this run's state file on a thread, started as soon as the candidates are
    known: the state holds the candidates and each row's nearest similarity, not the
    decision, so it is written while the report is decided (at 64k rows the write and its
    fsync take about a tenth of an incremental run). A failure is logged, the file removed,
    and the next run is a full one."""

    def __init__(
        self, path: Path, hashes: np.ndarray, *, fingerprint: str, dim: int, dtype: str
    ) -> None:
        self.path, self.hashes = path, hashes
        self.fingerprint, self.dim, self.dtype = fingerprint, dim, dtype
        self._pool: ThreadPoolExecutor | None = None  # set with _done by start()
        self._done: Future[None]

    def start(
        self,
        ids: list[Any],
        candidates: Candidates,
        nearest: np.ndarray,
        *,
        method: str,
        scale: np.ndarray,
        trained: int,
        placed: int,
        floor_raised_from: float | None,
        id_array: np.ndarray | None,
    ) -> None:
        assert self._pool is None, "one state per run"

        def write() -> None:
            try:
                new = DedupeState.from_candidates(
                    ids,
                    candidates,
                    nearest,
                    self.hashes,
                    method=method,
                    scale=scale,
                    fingerprint=self.fingerprint,
                    dim=self.dim,
                    input_dtype=self.dtype,
                    trained_rows=trained,
                    placed_since_training=placed,
                    floor_raised_from=floor_raised_from,
                    id_array=id_array,
                )
                new.save(self.path)
            except (OSError, DedupeStateError) as err:
                logger.warning(
                    "dedupe state %s not written (%s); the next run will be full", self.path, err
                )
                # never leave an older state to be used against new rows
                self.path.unlink(missing_ok=True)

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dedupe-state")
        self._done = self._pool.submit(write)

    def wait(self) -> None:
        """Until the file is written (or the failure logged); raises what else it raised."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
            self._done.result()


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


def _usable_state(
    path: Path,
    fingerprint: str,
    prep: _Prepared,
    dim: int,
    input_dtype: str,
    settings: SearchSettings,
) -> tuple[DedupeState | None, str]:
    """The state at ``path`` when this run can build on it, else None and why not."""
    try:
        old = DedupeState.load(path)
    except FileNotFoundError:
        return None, f"no state at {path} yet"
    except DedupeStateError as err:
        return None, str(err)
    # a default floor may have been raised by the last run (never above the threshold)
    raised = not prep.floor_given and old.floor_raised_from == prep.floor
    raised = raised and prep.floor < old.floor <= prep.threshold
    checks = [
        ("encoder fingerprint", old.fingerprint, fingerprint),
        ("floor", old.floor, old.floor if raised else prep.floor),
        ("engine", old.method, prep.method),
        ("dimension", old.dim, dim),
        ("input dtype", old.input_dtype, input_dtype),
    ]
    if old.cells is not None and prep.method == "ann":
        checks.append(("nprobe", old.cells.nprobe, settings.nprobe))
        if settings.nlist is not None:
            checks.append(("nlist", len(old.cells.centroids), settings.nlist))
    for what, before, now in checks:
        if before != now:
            return None, f"it was made with {what} {before!r}, this run uses {now!r}"
    return old, ""


def _incremental(
    old: DedupeState,
    prep: _Prepared,
    raw: np.ndarray,
    hashes: np.ndarray,
    *,
    state: Path,
    settings: SearchSettings,
    max_fresh: float,
    retrain_share: float,
    writer: _StateWriter,
) -> tuple[DuplicateReport | None, str]:
    """The report built on ``old`` (its state handed to ``writer`` before the decision),
    or None and why a full run is needed."""
    ids, rank, order, floor, method = prep.ids, prep.rank, prep.order, prep.floor, prep.method
    n = len(ids)
    if n < 2:
        return None, f"{n} rows"
    # -- what changed (input rows i, state rows j) ----------------------------------------
    old_of = _state_rows(old.ids, ids, state, prep.id_array)
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
    block, n_jobs, limit = settings.block_size, settings.threads, settings.max_candidates
    cells = None
    with _blas_limit(settings.blas_threads, with_faiss=method == "ann"):
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
            cells, probes = _placed_cells(
                old, now_of, rows, fresh, search_rows, screen, n_jobs=n_jobs
            )
            lo, hi, found_near = _search_fresh(
                rows, cells, search_rows, probes, screen, n_jobs=n_jobs, limit=limit
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
    params = settings.report_params(prep.requested)
    if method == "ann":
        params["nlist"] = len(old.cells.centroids) if old.cells is not None else None
    if old.floor_raised_from is not None and floor == old.floor:
        params["floor_raised_from"] = old.floor_raised_from
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

    def write_state(candidates: Candidates, nearest: np.ndarray) -> None:
        writer.start(
            ids,
            candidates,
            nearest,
            method=method,
            scale=scale,
            trained=old.trained_rows if method == "ann" else n,
            placed=old.placed_since_training + new_count,
            floor_raised_from=params.get("floor_raised_from"),
            id_array=prep.id_array,
        )

    report = _assemble(prep, lo, hi, scores, nearest, zero_rows, sample, cells, params, write_state)
    return report, ""


def _state_rows(
    state_ids: np.ndarray, ids: list[Any], path: Path, id_array: np.ndarray | None = None
) -> np.ndarray:
    """Each input row's row in the state by id (-1: a new id); ``id_array``: the ids as a
    str array, when made already (compared without making a list of the state's)."""
    m = len(state_ids)
    if m <= len(ids) and _starts_with(state_ids, ids, id_array):
        # the usual case: rows appended, none moved; the ids are unique, so the ones after
        # the state's are all new
        return np.concatenate([np.arange(m), np.full(len(ids) - m, -1)]).astype(np.int64)
    known = state_ids.tolist()
    where = dict(zip(known, range(m), strict=True))
    if len(where) != len(state_ids):
        raise DedupeStateError(f"dedupe state {path} is not valid: ids repeat")
    found = map(where.get, ids, itertools.repeat(-1))
    return np.fromiter(found, dtype=np.int64, count=len(ids))


def _starts_with(state_ids: np.ndarray, ids: list[Any], id_array: np.ndarray | None) -> bool:
    """Whether the input's ids begin with the state's, in order."""
    m = len(state_ids)
    if id_array is not None and state_ids.dtype.kind == "U":
        return bool((state_ids == id_array[:m]).all())
    return state_ids.tolist() == ids[:m]


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
