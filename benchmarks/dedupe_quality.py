"""Dedupe quality on real labels: the Debian corpus, same ``source`` = positive pair.

``python -m benchmarks.dedupe_quality`` embeds every description with the default
``SentenceEncoder`` (through the shared cache ``out/cache/debian-minilm``), then reports
pair precision / recall / F1 at thresholds 0.70-0.95 (pairs found once by exact search,
then ``rethreshold``), the recall averaged per source, and the per-row decision: how many
rows dedupe would remove, the share of those that have the kept row's source (removal
precision), and that count over the rows - sources that could rightly be removed (removal
recall). The per-row decision is scored twice: "components" removes every cluster member
but the first (the connected-component rule, before issue 13), "no chain" removes a row only
for a kept row it directly duplicates (the rule ``find_duplicates`` applies now).
Also the number of exact-text duplicates, and ann's recall against exact here.
``--embed-only`` fills the cache and stops; ``--sources N`` runs on a random sample of N
whole sources; ``--sample ROWS`` on ``benchmarks.data.make_sample(rows=ROWS, seed=3)`` (whole
sources, about half of the rows from sources with several packages).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from benchmarks.data import ROOT, load_debian, make_sample
from embetter_core.dedupe import DuplicateReport, find_duplicates

CACHE = ROOT / "out" / "cache" / "debian-minilm"


def embed_corpus(texts: list[str], chunk: int = 2000, reverse: bool = True) -> np.ndarray:
    """Vectors for ``texts`` through the shared cache, in chunks (progress survives a kill).

    Chunks go last-to-first by default, so a helper filling the same cache first-to-last
    meets this one in the middle instead of encoding the same rows twice.
    """
    from embetter_core import SentenceEncoder, cached

    enc = cached(CACHE, SentenceEncoder(batch_size=64))
    starts = list(range(0, len(texts), chunk))
    if reverse:
        starts = starts[::-1]
    parts: dict[int, np.ndarray] = {}
    t0 = time.perf_counter()
    for i, start in enumerate(starts):
        parts[start] = enc.transform(texts[start : start + chunk])
        stats = enc.last_stats_
        print(
            f"chunk {i + 1}/{len(starts)} rows {start}: hits {stats['hits']} "
            f"misses {stats['misses']} ({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    return np.concatenate([parts[s] for s in sorted(parts)])


#: The coarse grid, and steps of 0.01 around the best per-row decision.
FINE = [round(0.78 + k / 100, 2) for k in range(11)]  # 0.78 ... 0.88
THRESHOLDS = [0.70, 0.75, *FINE, 0.90, 0.925, 0.95]


def exact_text_duplicates(frame: pd.DataFrame) -> dict[str, int]:
    """Rows whose text occurs more than once, the groups, and groups spanning sources."""
    groups = frame.groupby("text")["source"].agg(["size", "nunique"])
    dup = groups[groups["size"] > 1]
    return {
        "rows": int(dup["size"].sum()),
        "groups": len(dup),
        "rows removable": int((dup["size"] - 1).sum()),
        "groups across sources": int((dup["nunique"] > 1).sum()),
    }


def component_removals(report: DuplicateReport) -> dict[int, tuple[int, float]]:
    """The removal rule before issue 13: every cluster member but the first in keep order,
    each pointing at that first row (a chain ``a ~ b ~ c`` removes ``c`` for ``a``)."""
    place = dict(zip(report.ids, report.keep_rank.tolist(), strict=True))
    removed = {}
    for members in report.clusters:
        kept = min(members, key=place.__getitem__)
        removed.update((m, (kept, float("nan"))) for m in members if m != kept)
    return removed


def score(
    report: DuplicateReport,
    source: np.ndarray,
    positives: int,
    removals: dict[int, tuple[int, float]] | None = None,
) -> dict[str, float]:
    """Pair precision / recall / F1 against same-source pairs, the recall averaged over
    sources (each multi-package source counts once), and the removal precision / recall /
    F1 of ``removals`` (default: the report's own)."""
    a = np.fromiter((p[0] for p in report.pairs), dtype=np.int64, count=len(report.pairs))
    b = np.fromiter((p[1] for p in report.pairs), dtype=np.int64, count=len(report.pairs))
    same = source[a] == source[b]
    tp = int(same.sum())
    codes, inverse = np.unique(source, return_inverse=True)
    size = np.bincount(inverse, minlength=len(codes))
    found = np.bincount(inverse[a[same]], minlength=len(codes))
    multi = size > 1
    balanced = float((found[multi] / (size[multi] * (size[multi] - 1) / 2)).mean())
    precision = tp / len(a) if len(a) else float("nan")
    recall = tp / positives
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    removals = report.removed if removals is None else removals
    removed = np.fromiter(removals, dtype=np.int64, count=len(removals))
    kept = np.fromiter((v[0] for v in removals.values()), dtype=np.int64, count=len(removals))
    # the per-row decision: a removed row is right when it shares the kept row's source;
    # at most (rows - sources) rows can be removed rightly
    same_kept = source[removed] == source[kept]
    removal = float(same_kept.mean()) if len(removed) else float("nan")
    removable = len(source) - len(codes)
    removal_recall = int(same_kept.sum()) / removable
    removal_f1 = (
        2 * removal * removal_recall / (removal + removal_recall) if same_kept.any() else 0.0
    )
    return {
        "threshold": report.threshold,
        "pairs": len(a),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "balanced_recall": balanced,
        "removed": len(removed),
        "removed_same_source": removal,
        "removal_recall": removal_recall,
        "removal_f1": removal_f1,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-only", action="store_true", help="fill the cache and stop")
    parser.add_argument("--sources", type=int, default=None, help="sample this many sources")
    parser.add_argument(
        "--sample", type=int, default=None, help="use make_sample(rows=SAMPLE, seed=3)"
    )
    args = parser.parse_args(argv)
    print(f"python -m benchmarks.dedupe_quality {' '.join(sys.argv[1:])}", flush=True)
    frame = make_sample(rows=args.sample, seed=3) if args.sample else load_debian()
    if args.sources:
        rng = np.random.default_rng(0)
        chosen = rng.choice(frame["source"].unique(), size=args.sources, replace=False)
        frame = frame[frame["source"].isin(set(chosen))].reset_index(drop=True)
    t0 = time.perf_counter()
    vectors = embed_corpus(frame["text"].tolist())
    print(f"embedded {len(frame):,} rows in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.embed_only:
        return

    sizes = frame.groupby("source").size()
    positives = int((sizes * (sizes - 1) // 2).sum())
    dups = exact_text_duplicates(frame)
    print(
        f"corpus: {len(frame):,} rows, {len(sizes):,} sources, {positives:,} same-source pairs; "
        f"exact-text duplicates: {dups}",
        flush=True,
    )
    t0 = time.perf_counter()
    report = find_duplicates(
        vectors, threshold=min(THRESHOLDS), floor=min(THRESHOLDS), method="exact"
    )
    elapsed = time.perf_counter() - t0
    print(f"find_duplicates exact at {min(THRESHOLDS)}: {elapsed:.1f} s", flush=True)
    source = frame["source"].to_numpy()
    rows, before = [], []
    decide = 0.0
    for t in THRESHOLDS:
        t0 = time.perf_counter()
        at = report.rethreshold(t)
        decide += time.perf_counter() - t0
        rows.append(score(at, source, positives))
        before.append(score(at, source, positives, component_removals(at)))
    print(f"rethreshold (pairs, clusters, no-chain removals) at {len(THRESHOLDS)} thresholds: "
          f"{decide:.1f} s")  # fmt: skip
    print()
    print(
        "| threshold | pairs | precision | recall | F1 | recall per source | rows removed "
        "| removal precision | removal recall | removal F1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['threshold']:.3f} | {r['pairs']:,} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {r['f1']:.3f} | {r['balanced_recall']:.3f} | "
            f"{r['removed']:,} | {r['removed_same_source']:.3f} | {r['removal_recall']:.3f} | "
            f"{r['removal_f1']:.3f} |"
        )
    print()
    print("Removal, before (connected components) and after (no chain):")
    print()
    print(
        "| threshold | removed before | after | precision before | after | recall before "
        "| after | F1 before | after |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for b, r in zip(before, rows, strict=True):
        print(
            f"| {r['threshold']:.3f} | {b['removed']:,} | {r['removed']:,} | "
            f"{b['removed_same_source']:.3f} | {r['removed_same_source']:.3f} | "
            f"{b['removal_recall']:.3f} | {r['removal_recall']:.3f} | "
            f"{b['removal_f1']:.3f} | {r['removal_f1']:.3f} |"
        )
    print()
    for table, label in ((rows, ""), (before, " (connected components)")):
        in_range = [r for r in table if r["threshold"] >= 0.80]
        for key, name in (
            ("f1", "pair F1"),
            ("precision", "pair precision"),
            ("removal_f1", "removal F1"),
        ):
            if label and key != "removal_f1":
                continue
            best = max(in_range, key=lambda r, k=key: r[k])
            print(
                f"best {name}{label} in 0.80-0.95: {best[key]:.4f} at threshold "
                f"{best['threshold']:.3f}"
            )
    t0 = time.perf_counter()
    ann = find_duplicates(vectors, threshold=min(THRESHOLDS), floor=min(THRESHOLDS), method="ann")
    elapsed_ann = time.perf_counter() - t0
    for t in (0.80, 0.90):
        exact_pairs = {(a, b) for a, b, _ in report.rethreshold(t).pairs}
        ann_pairs = {(a, b) for a, b, _ in ann.rethreshold(t).pairs}
        print(
            f"ann on this corpus at {t:.2f}: {elapsed_ann:.1f} s (exact {elapsed:.1f} s), "
            f"pair recall vs exact {len(ann_pairs & exact_pairs) / max(1, len(exact_pairs)):.4f}, "
            f"its own estimate {ann.rethreshold(t).recall_estimate:.4f}"
        )
    dist = report.nearest[np.isfinite(report.nearest)]
    print(
        "nearest-neighbour similarity quantiles (10/50/90 %): "
        + " / ".join(f"{q:.3f}" for q in np.quantile(dist, [0.1, 0.5, 0.9]))
    )


if __name__ == "__main__":
    main()
