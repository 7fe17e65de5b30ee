"""What chunking costs sentence-transformers, and what length-sorted chunks win back.

    python -m benchmarks.chunking [--n 3000] [--chunk-size 1000]

Same ``--n`` Debian texts (the seed-1 sample of benchmarks.pipeline), batch size 32, no
Prefect. One ``encode`` call sorts all texts by length; consecutive chunks are sorted only
within each chunk; chunks from ``Corpus.encode_chunks`` (what the flow uses) group rows of
similar length first. Prints each time and its ratio to the one call.
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
    args = parser.parse_args(argv)

    texts = load_debian(10000, seed=1)["text"].tolist()[: args.n]
    corpus = Corpus.from_texts(texts)
    model = SentenceEncoder().model_
    model.encode(texts[:64], batch_size=32)
    print(f"{len(texts)} Debian texts, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")

    start = time.perf_counter()
    model.encode(texts, batch_size=32)
    one = time.perf_counter() - start
    print(f"one encode call               : {one:7.1f} s")
    plans = {
        "consecutive chunks": [list(r) for r in corpus.chunks(args.chunk_size)],
        "encode_chunks (length-sorted)": corpus.encode_chunks(args.chunk_size),
    }
    for label, chunks in plans.items():
        start = time.perf_counter()
        for rows in chunks:
            model.encode([texts[i] for i in rows], batch_size=32)
        took = time.perf_counter() - start
        ratio = one / took
        print(f"{label:30s}: {took:7.1f} s  ({len(chunks)} calls; one call / this {ratio:.3f})")


if __name__ == "__main__":
    main()
