"""Speed and recall of ``find_duplicates`` on synthetic vectors with planted clusters.

``python -m benchmarks.dedupe --n 100000`` (exact, and ann checked against it) and
``python -m benchmarks.dedupe --n 1000000`` (ann, with recall checked against exact on a
100k-row sample). Vectors are random unit vectors in 384 dimensions with planted
near-duplicate clusters of mixed sizes, one of them 500 rows. Every figure is printed next
to a baseline run in the same process: plain NumPy all-pairs (``X @ X.T``) on a subsample.

Options: ``--threads`` times 1 vs 2 BLAS threads (and 2 workers x 1 thread) on a
subsample; ``--crossover`` times exact and ann at several sizes for ``method="auto"``;
``--libs`` compares the ann engine with faiss IVF range search and usearch HNSW.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil

from embetter_core.dedupe import find_duplicates

D = 384


# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------
def planted(n: int, d: int = D, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors with planted clusters; returns (vectors, cluster label or -1 per row).

    Cluster sizes: one of 500, and per 100k rows 2 of 200, 5 of 100, 20 of 20, 200 of 5 and
    2000 pairs. Members are ``centre + sigma * noise``: sigma 0.2 for the 500 (pair cosine
    about 0.96), drawn in [0.1, 0.4] for the others (cosine about 0.86 - 0.99), so pairs
    fall on both sides of 0.9.
    """
    rng = np.random.default_rng(seed)
    X = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - s), d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        X[s : s + len(block)] = block
    scale = max(n / 100_000, 0.01)
    sizes = [500]
    for size, count in ((200, 2), (100, 5), (20, 20), (5, 200), (2, 2000)):
        sizes += [size] * max(1, int(round(count * scale)))
    sizes = [s for s in sizes if s <= n]
    total = sum(sizes)
    if total > n // 2:
        sizes = [500] if n >= 1000 else [max(2, n // 4)]
        total = sizes[0]
    rows = rng.permutation(n)[:total]
    label = np.full(n, -1, dtype=np.int64)
    pos = 0
    for c, size in enumerate(sizes):
        members = rows[pos : pos + size]
        pos += size
        centre = rng.standard_normal(d).astype(np.float32)
        centre /= np.linalg.norm(centre)
        sigma = 0.2 if c == 0 else rng.uniform(0.1, 0.4)
        noise = rng.standard_normal((size, d), dtype=np.float32) / np.sqrt(d)
        vecs = centre + sigma * noise
        X[members] = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        label[members] = c
    return X, label


# ----------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------
class PeakRSS:
    """Sample this process's RSS every 20 ms; ``peak`` is the highest seen (bytes)."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self.start = self.proc.memory_info().rss
        self.peak = self.start
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def timed(fn: Callable[[], Any]) -> tuple[Any, float, PeakRSS]:
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - t0
    return out, elapsed, rss


def numpy_all_pairs(X: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    """The plain baseline: the whole similarity matrix, its upper triangle thresholded."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    sims = Xn @ Xn.T
    np.fill_diagonal(sims, -np.inf)
    sims.max(axis=1)  # nearest neighbours, as the library computes them
    a, b = np.nonzero(np.triu(sims, 1) >= threshold)
    return set(zip(a.tolist(), b.tolist(), strict=True))


def pair_set(report: Any) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b, _ in report.pairs}


def gflops(n: int, d: int, seconds: float) -> float:
    """GFLOP/s of the useful work: n(n-1)/2 dot products of 2d flops."""
    return n * (n - 1) * d / seconds / 1e9


def mib(x: float) -> str:
    return f"{x / 2**20:,.0f} MiB"


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} vCPU, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}, "
        f"numpy {np.__version__}"
    )


def pairs_digest(report: Any) -> str:
    """A short hash of a report's pairs (ids and scores to 6 decimals), to compare runs."""
    import hashlib

    lines = sorted(f"{a}\t{b}\t{float(s):.6f}" for a, b, s in report.pairs)
    return (
        f"{len(lines):,} pairs, sha1 {hashlib.sha1(chr(10).join(lines).encode()).hexdigest()[:12]}"
    )


def say(*parts: Any) -> None:
    print(*parts, flush=True)


# ----------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------
def baseline(X: np.ndarray, threshold: float, n_sub: int) -> tuple[float, float]:
    """Time NumPy all-pairs and exact on the same subsample; returns (numpy s, exact s)."""
    sub = X[:n_sub]
    truth, t_np, rss_np = timed(lambda: numpy_all_pairs(sub, threshold))
    rep, t_ex, rss_ex = timed(lambda: find_duplicates(sub, threshold=threshold, method="exact"))
    assert pair_set(rep) == truth, "exact engine disagrees with NumPy all-pairs"
    say(
        f"baseline   n={n_sub:>9,}  numpy all-pairs {t_np:7.2f} s "
        f"({2 * gflops(n_sub, X.shape[1], t_np):5.1f} GFLOP/s over the full square), "
        f"peak +{mib(rss_np.peak - rss_np.start)}"
    )
    say(
        f"           n={n_sub:>9,}  exact           {t_ex:7.2f} s "
        f"({gflops(n_sub, X.shape[1], t_ex):5.1f} GFLOP/s useful), "
        f"peak +{mib(rss_ex.peak - rss_ex.start)}; same {len(truth):,} pairs; "
        f"exact / numpy time = {t_ex / t_np:.2f}"
    )
    return t_np, t_ex


def threads(X: np.ndarray, threshold: float, n_sub: int) -> None:
    sub = X[:n_sub]
    find_duplicates(sub[:4096], threshold=threshold, method="exact")  # warm up
    base = None
    for jobs, blas in ((1, 1), (1, 2), (2, 1)):
        _, t, _ = timed(
            lambda j=jobs, b=blas: find_duplicates(
                sub, threshold=threshold, method="exact", n_jobs=j, blas_threads=b
            )
        )
        base = base or t
        say(
            f"threads    n={n_sub:>9,}  n_jobs={jobs} blas_threads={blas}: {t:7.2f} s "
            f"({gflops(n_sub, X.shape[1], t):5.1f} GFLOP/s), time ratio vs 1x1 {t / base:.2f}"
        )


def crossover(X: np.ndarray, threshold: float, sizes: list[int]) -> None:
    for n in sizes:
        sub = X[:n]
        ex, t_ex, _ = timed(lambda s=sub: find_duplicates(s, threshold=threshold, method="exact"))
        an, t_an, _ = timed(lambda s=sub: find_duplicates(s, threshold=threshold, method="ann"))
        truth = pair_set(ex)
        rec = len(pair_set(an) & truth) / max(1, len(truth))
        say(
            f"crossover  n={n:>9,}  exact {t_ex:7.2f} s   ann {t_an:7.2f} s   "
            f"ann/exact time {t_an / t_ex:.2f}   ann recall {rec:.4f}"
        )


def libraries(X: np.ndarray, threshold: float, n_sub: int, nprobe: int = 4) -> None:
    """The ann engine next to faiss IVF range search (same cells and probes) and usearch
    HNSW top-k (on at most 20k rows: its index build is slow here)."""
    import faiss
    from usearch.index import Index

    sub = np.ascontiguousarray(X[:n_sub])
    sub /= np.linalg.norm(sub, axis=1, keepdims=True)
    truth = pair_set(find_duplicates(sub, threshold=threshold, method="exact"))

    rep, t_ours, _ = timed(
        lambda: find_duplicates(sub, threshold=threshold, method="ann", nprobe=nprobe)
    )
    rec = len(pair_set(rep) & truth) / max(1, len(truth))
    say(
        f"libs       n={n_sub:>9,}  ours (faiss k-means + blocked GEMM) {t_ours:7.2f} s  "
        f"recall {rec:.4f}"
    )

    def ivf() -> set[tuple[int, int]]:
        nlist = int(round(np.sqrt(nprobe * n_sub)))
        quant = faiss.IndexFlatIP(D)
        index = faiss.IndexIVFFlat(quant, D, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(sub[:: max(1, n_sub // (32 * nlist))])
        index.add(sub)
        index.nprobe = nprobe
        lims, _, found = index.range_search(sub, threshold)
        rows = np.repeat(np.arange(n_sub), np.diff(lims).astype(np.int64))
        keep = rows < found
        return set(zip(rows[keep].tolist(), found[keep].tolist(), strict=True))

    got, t_ivf, _ = timed(ivf)
    say(
        f"libs       n={n_sub:>9,}  faiss IndexIVFFlat.range_search nprobe={nprobe} "
        f"{t_ivf:7.2f} s  recall {len(got & truth) / max(1, len(truth)):.4f}"
    )

    n_h = min(n_sub, 20_000)
    truth_h = pair_set(find_duplicates(sub[:n_h], threshold=threshold, method="exact"))

    def hnsw(k: int = 32) -> set[tuple[int, int]]:
        index = Index(ndim=D, metric="ip", dtype="f32")
        index.add(np.arange(n_h), sub[:n_h])
        res = index.search(sub[:n_h], k)
        keys, dist = res.keys, res.distances
        rows = np.repeat(np.arange(n_h), k)
        keys, sims = keys.ravel(), 1 - dist.ravel()
        keep = (sims >= threshold) & (rows < keys.astype(np.int64))
        return set(zip(rows[keep].tolist(), keys[keep].astype(np.int64).tolist(), strict=True))

    got, t_hnsw, _ = timed(hnsw)
    say(
        f"libs       n={n_h:>9,}  usearch HNSW top-32 {t_hnsw:7.2f} s  "
        f"recall {len(got & truth_h) / max(1, len(truth_h)):.4f} (top-k caps a large cluster)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--method", default=None, help="default: exact to 150k, else ann")
    parser.add_argument("--baseline-n", type=int, default=12_000)
    parser.add_argument("--sample-n", type=int, default=100_000, help="exact check size")
    parser.add_argument("--threads", type=int, default=0, metavar="N", help="time threads")
    parser.add_argument("--crossover", default="", help="comma-separated sizes")
    parser.add_argument("--libs", type=int, default=0, metavar="N", help="compare libraries")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--blas-threads", type=int, default=1)
    parser.add_argument("--skip-main", action="store_true")
    args = parser.parse_args(argv)

    say(f"python -m benchmarks.dedupe {' '.join(sys.argv[1:])}")
    say(f"machine: {machine()}")
    t0 = time.perf_counter()
    X, label = planted(args.n)
    sizes = np.bincount(label[label >= 0])
    say(
        f"data: {args.n:,} x {D} float32 ({mib(X.nbytes)}), {len(sizes)} planted clusters "
        f"({sizes.max()} largest), made in {time.perf_counter() - t0:.1f} s"
    )

    if args.threads:
        threads(X, args.threshold, args.threads)
    if args.crossover:
        crossover(X, args.threshold, [int(s) for s in args.crossover.split(",")])
    if args.libs:
        libraries(X, args.threshold, args.libs)
    if args.skip_main:
        return

    t_np, t_ex_sub = baseline(X, args.threshold, min(args.baseline_n, args.n))
    method = args.method or ("exact" if args.n <= 150_000 else "ann")
    rep, t, rss = timed(
        lambda: find_duplicates(
            X,
            threshold=args.threshold,
            method=method,
            n_jobs=args.n_jobs,
            blas_threads=args.blas_threads,
        )
    )
    say(f"           pairs digest: {pairs_digest(rep)}")
    big = label == 0
    found_whole = any(set(np.flatnonzero(big).tolist()) <= set(c) for c in rep.clusters)
    np_rate = args.baseline_n**2 / t_np  # pair evaluations per second, NumPy all-pairs
    say(
        f"main       n={args.n:>9,}  {method:<5} {t:7.2f} s, peak RSS {mib(rss.peak)} "
        f"(+{mib(rss.peak - rss.start)} over the input), {len(rep.pairs):,} pairs, "
        f"{len(rep.clusters):,} clusters, 500-row cluster whole: {found_whole}, "
        f"recall estimate {rep.recall_estimate:.4f}"
    )
    if method == "exact":
        say(
            f"           GFLOP/s {gflops(args.n, D, t):.1f}; pair evaluations / s = "
            f"{args.n**2 / 2 / t / np_rate:.2f} x NumPy all-pairs (baseline n={args.baseline_n:,})"
        )
    else:
        # exact on a sample of rows, restricted to pairs inside it
        rng = np.random.default_rng(1)
        n_s = min(args.sample_n, args.n)
        rows = np.sort(rng.choice(args.n, size=n_s, replace=False))
        ex, t_s, _ = timed(
            lambda: find_duplicates(X[rows], ids=rows, threshold=args.threshold, method="exact")
        )
        truth = pair_set(ex)
        inside = set(rows.tolist())
        got = {p for p in pair_set(rep) if p[0] in inside and p[1] in inside}
        rec = len(got & truth) / max(1, len(truth))
        extra = len(got - truth)
        say(
            f"           pair recall vs exact on a {n_s:,}-row sample: {rec:.4f} "
            f"({len(truth):,} exact pairs, {extra} not in exact; exact took {t_s:.1f} s); "
            f"ann time / (NumPy all-pairs at n, from n^2 scaling) = "
            f"{t / (args.n**2 / np_rate):.4f}"
        )
    say(f"machine at the end: {machine()}")


if __name__ == "__main__":
    main()
