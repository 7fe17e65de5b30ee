"""What chunking costs sentence-transformers, and what length-sorted chunks win back.

    python -m benchmarks.chunking [--n 3000] [--chunk-size 1000] [--rounds 2]

Same ``--n`` Debian texts (the seed-1 sample of benchmarks.pipeline), batch size 32, no
Prefect. One ``encode`` call sorts all texts by length; consecutive chunks are sorted only
within each chunk; chunks from ``Corpus.encode_chunks`` (what the flow uses) group rows of
similar length first. Each round runs the three in a rotated order (this machine's speed
drifts by several percent over minutes); prints each time, and the totals as ratios to the
one call.
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks.data import load_debian
from embetter_core import SentenceEncoder
from embetter_core.corpus import Corpus


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="each round rotates the order")
    args = parser.parse_args(argv)

    texts = load_debian(10000, seed=1)["text"].tolist()[: args.n]
    corpus = Corpus.from_texts(texts)
    model = SentenceEncoder().model_
    model.encode(texts[:64], batch_size=32)
    print(f"{len(texts)} Debian texts, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")

    plans = {
        "one encode call": [list(range(len(texts)))],
        "consecutive chunks": [list(r) for r in corpus.chunks(args.chunk_size)],
        "encode_chunks (length-sorted)": corpus.encode_chunks(args.chunk_size),
    }
    seconds = {label: 0.0 for label in plans}
    labels = list(plans)
    for run in range(args.rounds):
        for label in labels[run % len(labels) :] + labels[: run % len(labels)]:
            start = time.perf_counter()
            for rows in plans[label]:
                model.encode([texts[i] for i in rows], batch_size=32)
            took = time.perf_counter() - start
            seconds[label] += took
            print(f"round {run + 1}, {label:30s}: {took:7.1f} s", flush=True)
    one = seconds["one encode call"]
    for label, took in seconds.items():
        calls, ratio = len(plans[label]), one / took
        print(
            f"all rounds, {label:30s}: {took:7.1f} s  ({calls} calls; one call / this {ratio:.3f})"
        )


if __name__ == "__main__":
    main()
