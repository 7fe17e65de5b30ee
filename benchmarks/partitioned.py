"""The partitioned dedupe engine against the in-memory ann engine, each run in a fresh
process so that its peak RSS is its own (issue 19).

    python -m benchmarks.partitioned compare --n 1000000      # time ratio, same pairs, RSS
    python -m benchmarks.partitioned strict                   # 400k x 384, 256MiB budget
    python -m benchmarks.partitioned scale --n 2000000 5000000 --workers 2

The data are ``benchmarks.dedupe.planted`` vectors written to an HDF5 store block by block
(``scale``: one ``planted(100_000)`` block after another, never the whole matrix in memory).
Each figure line prints the machine load beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from benchmarks.dedupe import planted

D = 384
THRESHOLD = 0.9


def _peak_rss_mib() -> float:
    """This process's peak RSS (``VmHWM``: unlike ``ru_maxrss`` it is not inherited from
    the parent that started the process)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_store(path: Path, n: int, *, whole: bool, seed: int = 0) -> np.ndarray:
    """Planted vectors in ``path`` (dataset ``embeddings``); returns the cluster labels."""
    if path.exists():
        with h5py.File(path) as f:
            if f["embeddings"].shape == (n, D):
                return f["labels"][:]
        path.unlink()
    tmp = path.with_suffix(".tmp.h5")
    with h5py.File(tmp, "w") as f:
        ds = f.create_dataset("embeddings", (n, D), dtype="float32", chunks=(4096, D))
        labels = np.full(n, -1, dtype=np.int64)
        if whole:
            X, labels = planted(n, D, seed=seed)
            for s in range(0, n, 65_536):
                ds[s : s + 65_536] = X[s : s + 65_536]
            del X
        else:
            top = 0
            for b, s in enumerate(range(0, n, 100_000)):
                X, lab = planted(min(100_000, n - s), D, seed=seed + b)
                ds[s : s + len(X)] = X
                labels[s : s + len(X)] = np.where(lab >= 0, lab + top, -1)
                top = labels.max() + 1
        f["labels"] = labels
    tmp.rename(path)
    return labels


def child(args: argparse.Namespace) -> None:
    """One measured run (a fresh process): prints a JSON line of its figures."""
    from embetter_core.dedupe import find_duplicates
    from embetter_core.dedupe.partitioned import PartitionOptions

    search = {"nprobe": args.nprobe, "seed": 0}
    if args.nlist:
        search["nlist"] = args.nlist
    base = _peak_rss_mib()
    cluster = client = None
    if args.workers:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True)
        client = Client(cluster)
    start = time.perf_counter()
    with h5py.File(args.store) as f:
        if args.engine == "ann":
            report = find_duplicates(f["embeddings"], threshold=THRESHOLD, method="ann", **search)
        else:
            opts = PartitionOptions(client=client)
            report = find_duplicates(
                f["embeddings"],
                threshold=THRESHOLD,
                method="partitioned",
                memory_budget=args.budget,
                partitions=opts,
                n_jobs=args.threads,
                **search,
            )
        labels = f["labels"][:]
    seconds = time.perf_counter() - start
    cand = report.candidates
    digest = hashlib.sha256(cand.a.tobytes() + cand.b.tobytes()).hexdigest()[:16]
    of_row = np.full(report.n, -1, dtype=np.int64)
    for k, members in enumerate(report.clusters):
        of_row[members] = k
    planted_ids = np.unique(labels[labels >= 0])
    whole_each = [
        len(np.unique(of_row[labels == c])) == 1 and of_row[labels == c][0] >= 0
        for c in planted_ids
    ]
    sizes = np.array([(labels == c).sum() for c in planted_ids])
    whole = round(float(np.mean(whole_each)), 4) if whole_each else 1.0
    biggest_whole = bool(np.all(np.array(whole_each)[sizes == sizes.max()])) if len(sizes) else 1
    out = {
        "engine": args.engine,
        "seconds": round(seconds, 1),
        "pairs": len(cand),
        "digest": digest,
        "recall": round(report.recall_estimate, 4),
        "planted_whole_share": whole,  # clusters with pairs below 0.9 may split, by design
        "planted_500s_whole": biggest_whole,
        "peak_rss_mib": round(_peak_rss_mib()),
        "baseline_rss_mib": round(base),
        "timings": report.params.get("timings"),
    }
    if client is not None:
        peaks = client.run(_peak_rss_mib)
        out["worker_peak_rss_mib"] = sorted(round(v) for v in peaks.values())
        client.close()
        cluster.close()
    if args.exact_sample:  # after the peak RSS is read: the check is not the engine's
        from benchmarks.sample_recall import sample_recall

        with h5py.File(args.store) as f:
            out["sample_recall"] = sample_recall(
                f["embeddings"], cand.a, cand.b, THRESHOLD, size=args.exact_sample
            )
    print("RESULT " + json.dumps(out), flush=True)


def measure(store: Path, engine: str, **options: object) -> dict:
    """Run :func:`child` in a fresh process and return its figures."""
    cmd = [sys.executable, "-m", "benchmarks.partitioned", "child", "--store", str(store)]
    cmd += ["--engine", engine]
    for key, value in options.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{engine} run failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["load"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(result), flush=True)
    return result


def _recall_line(part: dict) -> str:
    """The exact-sample recall figure (``--exact-sample``), or that it was not measured."""
    rec = part.get("sample_recall")
    if not rec:
        return "recall on an exact sample not measured (--exact-sample 0)"
    return (
        f"recall against exact on a {rec['sample_rows']}-row sample (pairs with both rows in "
        f"it): {rec['recall']} ({rec['found']} / {rec['exact_pairs']}; target >= 0.995)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.partitioned")
    parser.add_argument("mode", choices=["compare", "strict", "scale", "child"])
    parser.add_argument("--n", type=int, nargs="+", default=None)
    parser.add_argument("--dir", default="/work/bench19")
    parser.add_argument("--budget", default="1GiB")
    parser.add_argument("--nprobe", type=int, default=4)
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--store", default=None)
    parser.add_argument("--engine", default="partitioned")
    parser.add_argument("--exact-sample", type=int, default=100_000)
    args = parser.parse_args(argv)
    if args.mode == "child":
        return child(args)
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()}", flush=True)
    if args.mode == "compare":
        n = (args.n or [1_000_000])[0]
        store = folder / f"planted-{n}.h5"
        write_store(store, n, whole=True)
        ann = measure(store, "ann", nprobe=args.nprobe, exact_sample=0)
        part = measure(
            store,
            "partitioned",
            nprobe=args.nprobe,
            budget=args.budget,
            exact_sample=args.exact_sample,
        )
        print(
            f"{n} x {D}: partitioned / ann time {part['seconds'] / ann['seconds']:.2f} "
            f"(target <= 1.2), same pairs {part['digest'] == ann['digest']} "
            f"({part['pairs']} / {ann['pairs']}), peak RSS partitioned "
            f"{part['peak_rss_mib']} MiB vs ann {ann['peak_rss_mib']} MiB (target <= 1229); "
            f"{_recall_line(part)}"
        )
    elif args.mode == "strict":
        store = folder / "planted-400000.h5"
        write_store(store, 400_000, whole=True)
        part = measure(store, "partitioned", nprobe=args.nprobe, budget="256MiB", exact_sample=0)
        print(
            f"400000 x {D}, budget 256MiB: peak RSS {part['peak_rss_mib']} MiB (target < 450), "
            f"planted 500-row clusters whole {part['planted_500s_whole']}, share of planted "
            f"clusters whole {part['planted_whole_share']}"
        )
    else:
        for n in args.n or [2_000_000, 5_000_000]:
            store = folder / f"blocks-{n}.h5"
            write_store(store, n, whole=False)
            part = measure(
                store,
                "partitioned",
                nprobe=args.nprobe,
                budget=args.budget,
                workers=args.workers,
                exact_sample=args.exact_sample,
            )
            t = part["timings"] or {}
            decide = part["seconds"] - sum(t.values())
            print(
                f"{n} x {D} on {args.workers} workers: {part['seconds']} s, driver peak "
                f"{part['peak_rss_mib']} MiB, workers {part.get('worker_peak_rss_mib')} MiB, "
                f"split {t} + decide {decide:.1f} s, recall {part['recall']}, planted 500s whole "
                f"{part['planted_500s_whole']}; {_recall_line(part)}"
            )


if __name__ == "__main__":
    main()
