"""The pipeline against plain encoding: Debian rows through the embed-corpus flow.

    python -m benchmarks.pipeline [--n 10000] [--rounds 2] [--rss-rows 63482] [--rss-cache DIR]

In one run, after Prefect's server start (timed separately): ``--rounds`` pairs of plain
``SentenceTransformer.encode`` on ``--n`` Debian descriptions and the flow on the same rows
with a cold cache (a new cache folder, so it also loads the model), alternating which goes
first (plain-flow, flow-plain, ...) so that a machine drifting faster or slower over the
run does not favour either. The flow's throughput is given as a ratio of plain encode, per
round and over all rounds. Then the warm rerun. Last, peak RSS of the flow
in subprocesses at a few corpus sizes up to ``--rss-rows`` (sharing ``--rss-cache`` so
rows already embedded are not encoded again): bounded memory means peak RSS grows by the
corpus's texts and one n x 384 float32 matrix for dedupe, not by anything per chunk.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.data import load_debian
from flows.offline import use_offline_defaults

RSS_SCRIPT = """
import resource, sys, time
from flows.embed_corpus import embed_corpus
start = time.perf_counter()
r = embed_corpus(input_path=sys.argv[1], output=sys.argv[2], cache_dir=sys.argv[3],
                 report_dir=sys.argv[4], id_column="id")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
secs = time.perf_counter() - start
print(f"RESULT {r.rows} {r.cache_hits} {r.cache_misses} {secs:.1f} {peak:.0f}")
"""


def share_debian_cache(root: str) -> None:
    """Let the flow's cache folder under ``root`` be ``out/cache/debian-minilm``, which the
    quality benchmarks fill with the same model, so no row is embedded twice."""
    from embetter_core.encoders import EncoderSpec
    from flows.embed_corpus import cache_folder

    shared = Path("out/cache/debian-minilm").resolve()
    target = Path(cache_folder(root, EncoderSpec()))
    if shared.exists() and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(shared, target_is_directory=True)


def main(argv: list[str] | None = None) -> None:
    use_offline_defaults()  # before Prefect starts a server or the model loads
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="plain/flow pairs, alternating which goes first (ABBA) so drift cancels",
    )
    parser.add_argument("--rss-rows", type=int, default=63_482, help="0 skips the RSS part")
    parser.add_argument(
        "--rss-cache", default="out/cache", help="cache root for the RSS runs (default out/cache)"
    )
    args = parser.parse_args(argv)

    from embetter_core import SentenceEncoder

    frame = load_debian(args.n, seed=1)
    texts = frame["text"].tolist()
    print(f"{len(texts)} Debian descriptions, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")

    model = SentenceEncoder().model_
    model.encode(texts[:64], batch_size=32)

    from prefect import flow

    @flow
    def start_server() -> None:
        """A trivial flow: its run starts Prefect's temporary server."""

    t0 = time.perf_counter()
    from prefect.testing.utilities import prefect_test_harness

    plain_s: list[float] = []
    flow_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
        start_server()
        t_server = time.perf_counter() - t0
        print(f"Prefect server start (separate) : {t_server:8.1f} s")
        from flows.embed_corpus import embed_corpus

        corpus = Path(tmp) / "corpus.csv"
        frame.to_csv(corpus, index=False)

        def flow_kwargs(run: int) -> dict[str, object]:
            return {
                "input_path": str(corpus),
                "id_column": "id",
                "output": f"{tmp}/emb{run}.h5",
                "cache_dir": f"{tmp}/cache{run}",  # cold: a new cache (and model load) per run
                "report_dir": f"{tmp}/report{run}",
                "chunk_size": args.chunk_size,
            }

        for run in range(args.rounds):
            order = ("plain", "flow") if run % 2 == 0 else ("flow", "plain")
            for what in order:
                t0 = time.perf_counter()
                if what == "plain":
                    model.encode(texts, batch_size=32)
                    plain_s.append(time.perf_counter() - t0)
                    print(
                        f"round {run + 1}, plain SentenceTransformer.encode : "
                        f"{plain_s[-1]:8.1f} s  ({len(texts) / plain_s[-1]:6.1f} rows/s)"
                    )
                else:
                    cold = embed_corpus(**flow_kwargs(run))
                    flow_s.append(time.perf_counter() - t0)
                    print(
                        f"round {run + 1}, flow, cold cache               : "
                        f"{flow_s[-1]:8.1f} s  ({len(texts) / flow_s[-1]:6.1f} rows/s, "
                        f"{cold.cache_misses} misses)"
                    )
            print(
                f"round {run + 1}, flow / plain throughput       : {plain_s[-1] / flow_s[-1]:.3f}x"
            )
        t0 = time.perf_counter()
        warm = embed_corpus(**flow_kwargs(args.rounds - 1))
        t_warm = time.perf_counter() - t0
    ratio = sum(plain_s) / sum(flow_s)
    print(
        f"flow throughput / plain encode  : {ratio:8.3f}x  (all {args.rounds} rounds; "
        "target >= 0.9)"
    )
    print(f"flow, warm rerun                : {t_warm:8.1f} s  ({warm.cache_hits} hits)")

    if args.rss_rows:
        share_debian_cache(args.rss_cache)
        full = load_debian()
        sizes = sorted({min(s, args.rss_rows, len(full)) for s in (5_000, 20_000, args.rss_rows)})
        print("peak RSS of the whole flow (subprocess, own Prefect server):")
        for size in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                corpus = Path(tmp) / "corpus.csv"
                full.head(size).to_csv(corpus, index=False)
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        RSS_SCRIPT,
                        str(corpus),
                        f"{tmp}/emb.h5",
                        args.rss_cache,
                        f"{tmp}/report",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
                rows, hits, misses, secs, peak = line.split()[1:]
                print(
                    f"  {int(rows):6d} rows: peak RSS {float(peak):7.0f} MiB  "
                    f"({hits} hits, {misses} misses, {secs} s)"
                )


if __name__ == "__main__":
    main()
