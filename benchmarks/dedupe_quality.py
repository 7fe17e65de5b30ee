"""Dedupe quality on real labels: the Debian corpus, same ``source`` = positive pair.

``python -m benchmarks.dedupe_quality [--encoder sentence|static|both] [--rescore]``
embeds every description with each encoder through its shared cache (``SentenceEncoder``:
``out/cache/debian-minilm``, all-MiniLM-L6-v2; ``StaticEncoder``: ``out/cache/debian-static``),
searches once exactly down to the encoder's lowest threshold, then ``rethreshold``\\ s and
reports, per encoder and threshold (each encoder has its own grid: static similarities run
higher): pair precision / recall / F1, the recall averaged per source, and the per-row
decision with the no-chain rule ``find_duplicates`` applies (a row is removed only for a kept
row it directly duplicates): rows removed, the share of those that have the kept row's
source (removal precision), and that count over the rows - sources that could rightly be
removed (removal recall). A side-by-side summary gives each encoder's best removal F1 and the
gap between them. ``--components`` adds the old connected-component rule ("before", issue 13)
next to the no-chain one; ``--ann`` ann's pair recall against exact.

``--rescore`` measures the two-stage mode (``embetter_core.dedupe.rescore``: a static search
picks the candidate rows, MiniLM decides among them) at several candidate thresholds: the rows in
static pairs, how much of MiniLM's pairs at its best threshold they cover, and the two-stage
removal F1 (MiniLM's cached vectors of those rows, the same as encoding them). Its speed is
measured for real on a corpus of at most ``--real-speed-max`` rows (both encoders uncached:
full MiniLM vs static + MiniLM on the candidate rows only) and estimated above that (MiniLM's
texts/s measured on ``--rate-rows`` random rows, times the candidate rows).

``--embed-only`` fills the caches and stops; ``--sources N`` runs on a random sample of N
whole sources; ``--sample ROWS`` on ``benchmarks.data.make_sample(rows=ROWS, seed=3)`` (whole
sources, about half of the rows from sources with several packages).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.data import ROOT, load_debian, make_sample
from embetter_core.dedupe import DuplicateReport, find_duplicates

CACHES = {
    "sentence": ROOT / "out" / "cache" / "debian-minilm",
    "static": ROOT / "out" / "cache" / "debian-static",
}
CACHE = CACHES["sentence"]  # kept for scripts that import it

#: MiniLM: the coarse grid, and steps of 0.01 around the best per-row decision.
FINE = [round(0.78 + k / 100, 2) for k in range(11)]  # 0.78 ... 0.88
THRESHOLDS = [0.70, 0.75, *FINE, 0.90, 0.925, 0.95]
#: Static: 0.80-0.97, steps of 0.01 from 0.86 on (its best lies near 0.90).
STATIC_THRESHOLDS = sorted(
    {0.80, 0.82, 0.84, 0.925, *(round(0.86 + k / 100, 2) for k in range(12))}
)
GRIDS = {"sentence": THRESHOLDS, "static": STATIC_THRESHOLDS}
#: Where the "best" of each grid is looked for (MiniLM's 0.70 / 0.75 remove far too much).
BEST_FROM = {"sentence": 0.78, "static": 0.80}
#: Static thresholds tried as the two-stage mode's candidate threshold.
CANDIDATE_THRESHOLDS = [0.75, 0.78, 0.80, 0.82, 0.85, 0.86, 0.87, 0.88, 0.90]
#: MiniLM thresholds the two-stage report is decided at.
RESCORE_THRESHOLDS = [t for t in THRESHOLDS if 0.78 <= t <= 0.90]
#: Share of MiniLM's pairs the candidate rows must cover for a candidate threshold to qualify.
COVERAGE_TARGET = 0.99


def make_encoder(name: str, cache: bool = True) -> Any:
    """The benchmark's ``SentenceEncoder`` or ``StaticEncoder``, through its shared cache."""
    from embetter_core import SentenceEncoder, StaticEncoder, cached

    enc = SentenceEncoder(batch_size=64) if name == "sentence" else StaticEncoder()
    return cached(CACHES[name], enc) if cache else enc


def embed_corpus(
    texts: list[str], chunk: int = 2000, reverse: bool = True, encoder: str = "sentence"
) -> np.ndarray:
    """Vectors for ``texts`` through the encoder's shared cache, in chunks (progress survives
    a kill).

    Chunks go last-to-first by default, so a helper filling the same cache first-to-last
    meets this one in the middle instead of encoding the same rows twice.
    """
    enc = make_encoder(encoder)
    starts = list(range(0, len(texts), chunk))
    if reverse:
        starts = starts[::-1]
    parts: dict[int, np.ndarray] = {}
    t0 = time.perf_counter()
    misses = 0
    for start in starts:
        parts[start] = enc.transform(texts[start : start + chunk])
        misses += enc.last_stats_["misses"]
        if enc.last_stats_["misses"]:
            print(
                f"{encoder}: rows {start}+: {enc.last_stats_} ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    enc.close()
    print(
        f"{encoder}: {len(texts):,} rows from {CACHES[encoder].name}, {misses:,} encoded, "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    return np.concatenate([parts[s] for s in sorted(parts)])


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
    F1 of ``removals`` (default: the report's own). Ids must be row positions."""
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


def best(rows: list[dict[str, float]], key: str, low: float) -> dict[str, float]:
    """The row of ``rows`` with the highest ``key`` among thresholds ``>= low``."""
    return max((r for r in rows if r["threshold"] >= low - 1e-9), key=lambda r: r[key])


def print_table(rows: list[dict[str, float]]) -> None:
    """One markdown row per threshold; the best removal F1 in bold."""
    top = max(r["removal_f1"] for r in rows)
    print(
        "| threshold | pairs | precision | recall | F1 | recall per source | rows removed "
        "| removal precision | removal recall | removal F1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f1 = f"{r['removal_f1']:.3f}"
        if r["removal_f1"] == top:
            f1 = f"**{f1}**"
        print(
            f"| {r['threshold']:.3f} | {r['pairs']:,} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {r['f1']:.3f} | {r['balanced_recall']:.3f} | "
            f"{r['removed']:,} | {r['removed_same_source']:.3f} | {r['removal_recall']:.3f} | "
            f"{f1} |"
        )


def print_components(before: list[dict], rows: list[dict]) -> None:
    """Removal before (connected components) and after (no chain), side by side."""
    print("Removal, before (connected components) and after (no chain):\n")
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


def pair_keys(report: DuplicateReport, threshold: float) -> np.ndarray:
    """The report's candidate pairs at ``threshold`` as sorted ``low * n + high`` codes."""
    cand = report.candidates
    at = cand.scores >= threshold
    a, b = cand.a[at].astype(np.int64), cand.b[at].astype(np.int64)
    return np.unique(np.minimum(a, b) * len(report.ids) + np.maximum(a, b))


def at_threshold(report: DuplicateReport, threshold: float) -> DuplicateReport:
    """``report`` read at another threshold without deciding its pairs again: all that
    ``candidate_rows`` and ``rescore_report`` read (``rethreshold`` would also build the
    pair list, millions of tuples for static at 0.75 on 63k rows)."""
    return dataclasses.replace(report, threshold=threshold)


def two_stage_quality(
    static: DuplicateReport,
    minilm: np.ndarray,
    minilm_report: DuplicateReport,
    minilm_best: float,
    source: np.ndarray,
    positives: int,
) -> list[dict[str, Any]]:
    """Per candidate threshold: the candidate rows, their coverage of MiniLM's pairs at
    ``minilm_best``, and the two-stage removal scores at ``RESCORE_THRESHOLDS``."""
    from embetter_core.dedupe import candidate_rows, rescore_report

    n = len(source)
    target = pair_keys(minilm_report, minilm_best)
    lo, hi = target // n, target % n
    out = []
    for ct in CANDIDATE_THRESHOLDS:
        t0 = time.perf_counter()
        first = at_threshold(static, ct)
        rows = candidate_rows(first)
        member = np.zeros(n, dtype=bool)
        member[rows] = True
        covered = float((member[lo] & member[hi]).mean()) if len(target) else float("nan")
        as_pairs = float(np.isin(target, pair_keys(static, ct)).mean())
        second = rescore_report(
            first, rows, minilm[rows], minilm_best, floor=min(RESCORE_THRESHOLDS)
        )
        scores = [score(second.rethreshold(t), source, positives) for t in RESCORE_THRESHOLDS]
        at_best = next(s for s in scores if abs(s["threshold"] - minilm_best) < 1e-9)
        out.append(
            {
                "candidate_threshold": ct,
                "static_pairs": int((static.candidates.scores >= ct).sum()),
                "rows": len(rows),
                "row_share": len(rows) / n,
                "covered": covered,
                "covered_as_pairs": as_pairs,
                "at_best": at_best,
                "best": best(scores, "removal_f1", 0.0),
                "seconds": time.perf_counter() - t0,
            }
        )
        print(f"two-stage at {ct}: {len(rows):,} rows, {out[-1]['seconds']:.1f} s", flush=True)
    return out


def pick_candidate(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """The candidate threshold with the fewest rows whose rows cover ``COVERAGE_TARGET`` of
    MiniLM's pairs (else the one covering most)."""
    ok = [s for s in stages if s["covered"] >= COVERAGE_TARGET]
    if ok:
        return min(ok, key=lambda s: s["rows"])
    return max(stages, key=lambda s: s["covered"])


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and its wall seconds."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def two_stage_speed(
    texts: list[str],
    thresholds: dict[str, float],
    minilm: np.ndarray,
    real: bool,
    rate_rows: int,
) -> dict[str, Any]:
    """Encode + search seconds of full MiniLM, static alone, and static + MiniLM on the
    candidate rows, uncached, each search as the flow runs it (``method="auto"``).
    ``thresholds``: ``sentence``, ``static`` (static alone) and ``candidate`` (the first
    stage). ``real``: every step runs; else MiniLM's encoding is estimated from its texts/s
    on ``rate_rows`` random rows (searches use the cached ``minilm`` vectors)."""
    from embetter_core.dedupe import candidate_rows

    sentence, static = make_encoder("sentence", cache=False), make_encoder("static", cache=False)
    _, load_s = timed(sentence.transform, ["warm up"])
    _, load_st = timed(static.transform, ["warm up"])
    print(f"loaded MiniLM in {load_s:.1f} s, static in {load_st:.1f} s", flush=True)
    n, mt, ct = len(texts), thresholds["sentence"], thresholds["candidate"]
    out: dict[str, Any] = {"rows": n, "real": real, **thresholds}
    if real:
        mv, out["minilm_encode"] = timed(sentence.transform, texts)
        out["minilm_rate"] = n / out["minilm_encode"]
        out["minilm_rate_rows"] = n
    else:
        pick = np.sort(np.random.default_rng(0).choice(n, size=min(rate_rows, n), replace=False))
        _, took = timed(sentence.transform, [texts[i] for i in pick])
        out["minilm_rate"] = len(pick) / took
        out["minilm_rate_rows"] = len(pick)
        out["minilm_encode"] = n / out["minilm_rate"]
        mv = minilm
    print(f"MiniLM: {out['minilm_rate']:.1f} texts/s", flush=True)
    _, out["minilm_search"] = timed(find_duplicates, mv, threshold=mt)
    sv, out["static_encode"] = timed(static.transform, texts)
    _, out["static_search"] = timed(find_duplicates, sv, threshold=thresholds["static"])
    # the first stage never goes below its threshold: candidates down to the default floor
    # (threshold - 0.1) would only cost time and memory; timed both ways
    first, out["first_search"] = timed(find_duplicates, sv, threshold=ct, floor=ct)
    _, out["first_search_default_floor"] = timed(find_duplicates, sv, threshold=ct)
    rows = candidate_rows(first)
    out["candidate_rows"] = len(rows)
    if real:
        cv, out["rescore_encode"] = timed(sentence.transform, [texts[i] for i in rows])
    else:
        cv, out["rescore_encode"] = minilm[rows], len(rows) / out["minilm_rate"]
    _, out["rescore_search"] = timed(find_duplicates, cv, threshold=mt)
    out["minilm_total"] = out["minilm_encode"] + out["minilm_search"]
    out["two_stage_total"] = (
        out["static_encode"] + out["first_search"] + out["rescore_encode"] + out["rescore_search"]
    )
    return out


def print_speed(sp: dict[str, Any]) -> None:
    """The speed table of :func:`two_stage_speed`."""
    est = "" if sp["real"] else " (estimate)"
    n = sp["rows"]
    print(
        f"Speed on {n:,} rows, uncached, this machine (load {os.getloadavg()[0]:.2f}); "
        f"MiniLM at {sp['sentence']}, static at {sp['static']}, two-stage: static candidates "
        f"at {sp['candidate']} then MiniLM at {sp['sentence']}"
        + (
            ""
            if sp["real"]
            else f"; MiniLM's encoding estimated from {sp['minilm_rate']:.1f} texts/s "
            f"measured on {sp['minilm_rate_rows']:,} random rows"
        )
        + ":\n"
    )
    print("| mode | rows MiniLM encodes | encode s | search s | total s | texts/s |")
    print("|---|---|---|---|---|---|")
    lines = (
        ("MiniLM (sentence)" + est, n, sp["minilm_encode"], sp["minilm_search"]),
        ("static", 0, sp["static_encode"], sp["static_search"]),
        (
            "static + rescore sentence" + est,
            sp["candidate_rows"],
            sp["static_encode"] + sp["rescore_encode"],
            sp["first_search"] + sp["rescore_search"],
        ),
    )
    for label, rows, enc, search in lines:
        total = enc + search
        print(f"| {label} | {rows:,} | {enc:.1f} | {search:.1f} | {total:.1f} | {n / total:,.0f} |")
    ratio = sp["minilm_total"] / sp["two_stage_total"]
    print(
        f"\nstatic encode alone: {n / sp['static_encode']:,.0f} texts/s; MiniLM encode: "
        f"{sp['minilm_rate']:.1f} texts/s\n"
        f"two-stage vs full MiniLM, encode + search: {ratio:.2f}x faster{est}; candidate rows "
        f"{sp['candidate_rows'] / n:.1%} of the rows\n"
        f"first-stage search at {sp['candidate']}: {sp['first_search']:.1f} s with floor = "
        f"threshold, {sp['first_search_default_floor']:.1f} s with find_duplicates' default "
        f"floor ({sp['candidate'] - 0.1:.2f})"
    )


def store_bytes_per_row(ids: list[str], vectors: np.ndarray) -> float:
    """Bytes per row of an ``EmbeddingStore`` file holding ``ids`` and ``vectors``."""
    from embetter_core.store import EmbeddingStore

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.h5"
        writer = EmbeddingStore.create(
            path, n=len(ids), dim=vectors.shape[1], fingerprint="benchmark"
        )
        writer.write(0, ids, vectors)
        writer.commit()
        return path.stat().st_size / len(ids)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--encoder", choices=("sentence", "static", "both"), default="both", help="encoders"
    )
    parser.add_argument("--rescore", action="store_true", help="measure the two-stage mode")
    parser.add_argument("--components", action="store_true", help="also the old removal rule")
    parser.add_argument("--ann", action="store_true", help="also ann's recall against exact")
    parser.add_argument("--embed-only", action="store_true", help="fill the caches and stop")
    parser.add_argument("--sources", type=int, default=None, help="sample this many sources")
    parser.add_argument(
        "--sample", type=int, default=None, help="use make_sample(rows=SAMPLE, seed=3)"
    )
    parser.add_argument(
        "--real-speed-max",
        type=int,
        default=10_000,
        help="--rescore: time MiniLM for real up to this many rows, estimate it above",
    )
    parser.add_argument(
        "--rate-rows", type=int, default=1000, help="rows MiniLM's texts/s is estimated from"
    )
    parser.add_argument(
        "--rescore-threshold",
        type=float,
        default=None,
        choices=RESCORE_THRESHOLDS,
        help="--rescore: MiniLM's threshold (default: its best removal F1 on this corpus)",
    )
    args = parser.parse_args(argv)
    print(f"python -m benchmarks.dedupe_quality {' '.join(sys.argv[1:])}", flush=True)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    names = ["sentence", "static"] if args.encoder == "both" or args.rescore else [args.encoder]
    frame = make_sample(rows=args.sample, seed=3) if args.sample else load_debian()
    if args.sources:
        rng = np.random.default_rng(0)
        chosen = rng.choice(frame["source"].unique(), size=args.sources, replace=False)
        frame = frame[frame["source"].isin(set(chosen))].reset_index(drop=True)
    texts = frame["text"].tolist()
    vectors = {name: embed_corpus(texts, encoder=name) for name in names}
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
    source = frame["source"].to_numpy()
    reports: dict[str, DuplicateReport] = {}
    tables: dict[str, list[dict[str, float]]] = {}
    for name in names:
        grid = GRIDS[name]
        floor = min(grid)
        if args.rescore and name == "static":
            floor = min(floor, *CANDIDATE_THRESHOLDS)
        report, took = timed(
            find_duplicates, vectors[name], threshold=floor, floor=floor, method="exact"
        )
        print(f"\n## {name}: {vectors[name].shape[1]} dims\n")
        print(f"find_duplicates exact at {floor}: {took:.1f} s, {len(report.candidates):,} pairs")
        rows, before = [], []
        t0 = time.perf_counter()
        for t in grid:
            at = report.rethreshold(t)
            rows.append(score(at, source, positives))
            if args.components:
                before.append(score(at, source, positives, component_removals(at)))
        print(f"rethreshold at {len(grid)} thresholds: {time.perf_counter() - t0:.1f} s\n")
        print_table(rows)
        if args.components:
            print()
            print_components(before, rows)
        print()
        for key, label in (("f1", "pair F1"), ("removal_f1", "removal F1")):
            top = best(rows, key, BEST_FROM[name])
            print(f"best {label} from {BEST_FROM[name]}: {top[key]:.4f} at {top['threshold']:.3f}")
        dist = report.nearest[np.isfinite(report.nearest)]
        print(
            "nearest-neighbour similarity quantiles (10/50/90 %): "
            + " / ".join(f"{q:.3f}" for q in np.quantile(dist, [0.1, 0.5, 0.9]))
        )
        if args.ann:
            ann, took_ann = timed(
                find_duplicates, vectors[name], threshold=floor, floor=floor, method="ann"
            )
            for t in (grid[len(grid) // 3], grid[-3]):
                exact_keys, ann_keys = pair_keys(report, t), pair_keys(ann, t)
                print(
                    f"ann at {t}: {took_ann:.1f} s (exact {took:.1f} s), pair recall vs exact "
                    f"{np.isin(exact_keys, ann_keys).mean():.4f}, "
                    f"its own estimate {ann.rethreshold(t).recall_estimate:.4f}"
                )
        reports[name], tables[name] = report, rows

    print(f"\n## Side by side ({len(frame):,} rows, no-chain removal rule)\n")
    print("| encoder | dims | best removal F1 | at | removal precision | removal recall "
          "| best pair F1 | at |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    tops = {}
    for name in names:
        top, pair = (
            best(tables[name], "removal_f1", BEST_FROM[name]),
            best(tables[name], "f1", BEST_FROM[name]),
        )
        tops[name] = top
        print(
            f"| {name} | {vectors[name].shape[1]} | {top['removal_f1']:.3f} | "
            f"{top['threshold']:.3f} | {top['removed_same_source']:.3f} | "
            f"{top['removal_recall']:.3f} | {pair['f1']:.3f} | {pair['threshold']:.3f} |"
        )
    if len(tops) == 2:
        gap = tops["static"]["removal_f1"] - tops["sentence"]["removal_f1"]
        whole = args.sample is None and args.sources is None
        verdict = ("met" if gap >= -0.01 else "missed") if whole else "judged on all rows only"
        print(
            f"\ngap (static best - MiniLM best removal F1): {gap:+.4f} "
            f"(target: within 0.01 on all 63,482 rows: {verdict})"
        )

    if args.rescore:
        mt = args.rescore_threshold or tops["sentence"]["threshold"]
        alone = next(r for r in tables["sentence"] if abs(r["threshold"] - mt) < 1e-9)
        stages = two_stage_quality(
            reports["static"], vectors["sentence"], reports["sentence"], mt, source, positives
        )
        print(
            f"\n## Two-stage: static candidates, MiniLM decides ({len(frame):,} rows; MiniLM "
            f"alone: removal F1 {alone['removal_f1']:.3f} at {mt})\n"
        )
        print(
            f"| static candidate threshold | static pairs | candidate rows | share of rows "
            f"| MiniLM pairs at {mt} covered by the rows | ... that are static pairs "
            f"| two-stage removal F1 at {mt} | best two-stage removal F1 (at) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for s in stages:
            print(
                f"| {s['candidate_threshold']:.2f} | {s['static_pairs']:,} | {s['rows']:,} | "
                f"{s['row_share']:.1%} | {s['covered']:.2%} | {s['covered_as_pairs']:.2%} | "
                f"{s['at_best']['removal_f1']:.3f} | {s['best']['removal_f1']:.3f} "
                f"({s['best']['threshold']:.2f}) |"
            )
        chosen = pick_candidate(stages)
        ct = chosen["candidate_threshold"]
        print(
            f"\ncandidate threshold: {ct} (fewest rows covering >= {COVERAGE_TARGET:.0%} of "
            f"MiniLM's pairs at {mt}): {chosen['row_share']:.1%} of the rows, two-stage removal "
            f"F1 {chosen['at_best']['removal_f1']:.4f} vs MiniLM "
            f"{alone['removal_f1']:.4f} and static {tops['static']['removal_f1']:.4f}\n"
        )
        real = len(frame) <= args.real_speed_max
        thresholds = {"sentence": mt, "static": tops["static"]["threshold"], "candidate": ct}
        sp = two_stage_speed(texts, thresholds, vectors["sentence"], real, args.rate_rows)
        print_speed(sp)

    ids = frame["id"].astype(str).tolist()
    for name in names:
        per_row = store_bytes_per_row(ids, vectors[name])
        print(
            f"store.h5 with {name} vectors ({vectors[name].shape[1]} dims): {per_row:.0f} bytes "
            f"per row, {per_row * 1e6 / 2**30:.2f} GiB per 1M rows"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.1f} GiB; load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
