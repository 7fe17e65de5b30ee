"""The dedupe step of a nightly incremental run against a full dedupe, side by side.

``python -m benchmarks.incremental`` (add ``--engines ann,exact`` for the exact engine too):
63,482 rows already processed (the last run's state file exists) plus 1,000 new ones, the
Debian corpus's size. Timed in the same process, in ABBA order (full, incremental,
incremental, full; three rounds below 200,000 rows, ``--rounds``; the state file restored
before each run, outside the clock):

- full: ``find_duplicates`` over all 64,482 rows;
- incremental: ``find_duplicates_incremental`` over the same rows with the state of the
  63,482 (hashing the rows, reading the state, searching the new rows, deciding the report
  and writing the new state all count).

The ratio incremental / full is printed with issue 22's targets and PASS / FAIL: <= 0.05 at
1,000,000 + 10,000 rows (``--old 1000000 --new 10000``), <= 0.10 at the default size; ann's
recall estimate within 0.002 of the full run's. The true recall of both runs is printed too,
against the planted clusters' pairs (no pair of random rows in 384 dimensions reaches 0.85).

``--static-debian`` measures quality on real vectors instead: the 63,482 Debian
descriptions embedded with ``StaticEncoder`` (a few seconds), the last ``--new`` rows new;
it prints the share of an exact run's pairs that the incremental run and a full ann run
find, and both recall estimates.

The vectors are synthetic, ``benchmarks.dedupe.planted``: unit vectors in 384 dimensions
(all-MiniLM-L6-v2's) with planted near-duplicate clusters of mixed sizes, one of 500 rows.
Dedupe cost depends on the number of rows, the dimension and how many pairs lie above the
floor, not on the encoder that made the vectors; embedding the real 64k texts with MiniLM
takes about 30 minutes on this machine and would add nothing to the comparison. The texts are
the real Debian descriptions (they decide the exact-duplicate groups, which both runs
compute), plus 1,000 made-up ones for the new rows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.data import DEBIAN, load_debian
from benchmarks.dedupe import machine, pairs_digest, planted, say
from embetter_core.dedupe import (
    DuplicateReport,
    checks,
    decide,
    find_duplicates,
    find_duplicates_incremental,
)


def corpus(n_old: int, n_new: int) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """Vectors, ids, texts and planted cluster labels of ``n_old + n_new`` rows; the new rows
    come last."""
    n = n_old + n_new
    X, label = planted(n)
    if DEBIAN.exists():
        frame = load_debian()
        ids = frame["id"].astype(str).tolist()[:n_old]
        texts = frame["text"].tolist()[:n_old]
    else:
        ids = [f"old-{i:06d}" for i in range(n_old)]
        texts = [f"description {i}" for i in range(n_old)]
    ids += [f"new-{i:06d}" for i in range(n - len(ids))]
    texts += [f"new package {i}" for i in range(n - len(texts))]
    return X, ids, texts, label


def true_pairs(X: np.ndarray, ids: list[str], label: np.ndarray, threshold: float) -> set:
    """The id pairs at ``threshold`` within the planted clusters: every pair there is."""
    out = set()
    for c in np.unique(label[label >= 0]):
        rows = np.flatnonzero(label == c)
        r, k = np.nonzero(np.triu(X[rows] @ X[rows].T >= threshold, 1))
        for i, j in zip(rows[r].tolist(), rows[k].tolist(), strict=True):
            out.add((min(ids[i], ids[j]), max(ids[i], ids[j])))
    return out


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def compare(engine: str, X: np.ndarray, ids: list[str], texts: list[str], n_old: int, args: Any):
    """One engine's ABBA rounds, printed with the targets; returns the time ratio."""
    kw: dict[str, Any] = {"threshold": args.threshold, "method": engine}
    folder = Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    state = folder / "vectors.dedupe-state.npz"
    t0 = time.perf_counter()
    find_duplicates_incremental(X[:n_old], state, ids[:n_old], texts=texts[:n_old], **kw)
    say(f"{engine:5s} last night's full run over {n_old:,} rows: {time.perf_counter() - t0:.2f} s")
    saved = folder / "saved.npz"
    shutil.copyfile(state, saved)

    def full() -> Any:
        return find_duplicates(X, ids, texts=texts, **kw)

    def incremental() -> Any:
        return find_duplicates_incremental(X, state, ids, texts=texts, **kw)

    times: dict[str, list[float]] = {"full": [], "incremental": []}
    results: dict[str, Any] = {}
    abba = [("full", full), ("incremental", incremental)]
    for name, fn in (abba + abba[::-1]) * args.rounds:
        shutil.copyfile(saved, state)  # last night's state, restored outside the clock
        results.pop(name, None)  # and the last report of this kind freed outside it too
        t0 = time.perf_counter()
        results[name] = fn()
        times[name].append(time.perf_counter() - t0)
        say(f"{engine:5s} {name:11s} {len(X):,} rows: {times[name][-1]:7.2f} s")
    inc, ref = results["incremental"], results["full"]
    say(f"{engine:5s} pairs digest: incremental {pairs_digest(inc)}; full {pairs_digest(ref)}")
    info = inc.params["incremental"]
    assert info["mode"] == "incremental", info
    ratio = sum(times["incremental"]) / sum(times["full"])
    target = 0.05 if n_old >= 1_000_000 else 0.10
    say(
        f"{engine:5s} incremental / full time = {ratio:.3f} (target <= {target:.2f}: "
        f"{verdict(ratio <= target)}); "
        f"fresh {info['fresh']}, rechecked {info['rechecked']}, "
        f"reused pairs {info['reused_pairs']:,}"
    )
    floor = floor_cost(ids, texts, ref)
    say(
        f"{engine:5s} work both runs do besides searching and reading the rows: {floor:.2f} s"
        f" = {floor / np.mean(times['full']):.3f} of a full run (ids in order, exact-text "
        "groups, deciding the report)"
    )
    if engine == "exact":
        same = (
            inc.pairs == ref.pairs and inc.clusters == ref.clusters and inc.removed == ref.removed
        )
        say(f"{engine:5s} same pairs, clusters and removals as the full run: {same}")
    else:
        a, b = {p[:2] for p in inc.pairs}, {p[:2] for p in ref.pairs}
        gap = abs(inc.recall_estimate - ref.recall_estimate)
        say(
            f"{engine:5s} pairs: incremental {len(a):,}, full {len(b):,}, in both {len(a & b):,};"
            f" recall estimates {inc.recall_estimate:.4f} / {ref.recall_estimate:.4f} "
            f"(target: within 0.002: {verdict(gap <= 0.002)})"
        )
        truth = true_pairs(X, ids, args.label, args.threshold)
        say(
            f"{engine:5s} true recall (planted pairs, {len(truth):,}): incremental "
            f"{len(a & truth) / len(truth):.4f}, full {len(b & truth) / len(truth):.4f}; "
            f"full run's true pairs the incremental run lacks: {len(b & truth - a):,}, "
            f"and the reverse: {len(a & truth - b):,}"
        )
    shutil.rmtree(folder, ignore_errors=True)
    return ratio


def floor_cost(ids: list[str], texts: list[str], report: Any) -> float:
    """Seconds of the work a run does besides searching and reading (normalising, hashing)
    the rows, which an incremental run cannot skip: it returns the same full report."""
    t0 = time.perf_counter()
    rank, _ = checks._canonical_order(checks._check_ids(ids, len(ids)))
    decide._groups_by_key(texts, ids, rank)
    DuplicateReport.from_candidates(ids, report.candidates, report.threshold, keep=report.keep)
    return time.perf_counter() - t0


def static_debian(n_new: int, threshold: float) -> None:
    """Pairs of an incremental ann run over the static vectors of the Debian corpus (its
    last ``n_new`` rows new) against a full ann run's and an exact run's."""
    from embetter_core.encoders.static import StaticEncoder

    frame = load_debian()
    ids, texts = frame["id"].astype(str).tolist(), frame["text"].tolist()
    t0 = time.perf_counter()
    X = np.asarray(StaticEncoder().transform(texts), dtype=np.float32)
    say(f"data: {len(X):,} Debian descriptions, static vectors in {time.perf_counter() - t0:.1f} s")
    kw: dict[str, Any] = {"threshold": threshold, "method": "ann"}
    n_old = len(X) - n_new
    folder = Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    state = folder / "vectors.dedupe-state.npz"
    find_duplicates_incremental(X[:n_old], state, ids[:n_old], texts=texts[:n_old], **kw)
    t0 = time.perf_counter()
    inc = find_duplicates_incremental(X, state, ids, texts=texts, **kw)
    took = time.perf_counter() - t0
    shutil.rmtree(folder, ignore_errors=True)
    assert inc.params["incremental"]["mode"] == "incremental", inc.params["incremental"]
    full = find_duplicates(X, ids, texts=texts, **kw)
    exact = find_duplicates(X, ids, texts=texts, threshold=threshold, method="exact")
    a, f, e = ({p[:2] for p in r.pairs} for r in (inc, full, exact))
    say(
        f"static  {n_old:,} + {n_new:,} rows at {threshold}: incremental {took:.2f} s; "
        f"share of exact's {len(e):,} pairs found: incremental {len(a & e) / len(e):.5f}, "
        f"full ann {len(f & e) / len(e):.5f}; recall estimates {inc.recall_estimate:.4f} / "
        f"{full.recall_estimate:.4f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=int, default=63_482, help="rows already processed")
    parser.add_argument("--new", type=int, default=1_000, help="rows added since")
    parser.add_argument("--threshold", type=float, default=0.85)
    parser.add_argument("--engines", default="ann", help="comma-separated: ann, exact")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="ABBA rounds (default: 3 below 200,000 rows, where a run takes milliseconds "
        "and one round is at the mercy of the machine's noise; 1 above)",
    )
    parser.add_argument(
        "--static-debian", action="store_true", help="quality on real static vectors"
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.old + args.new < 200_000 else 1
    say(f"machine: {machine()}, pid {os.getpid()}")
    if args.static_debian:
        static_debian(args.new, args.threshold)
        return
    X, ids, texts, args.label = corpus(args.old, args.new)
    say(f"data: {len(X):,} x {X.shape[1]} float32 ({args.old:,} old + {args.new:,} new rows)")
    for engine in args.engines.split(","):
        compare(engine.strip(), X, ids, texts, args.old, args)
    say(f"machine at the end: {machine()}")


if __name__ == "__main__":
    main()
