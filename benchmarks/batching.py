"""How batching pads: sentence-transformers' own order against ``SentenceEncoder``'s.

    python -m benchmarks.batching [--n 10000] [--chunk-size 1000] [--timed 1500] [--rounds 2]

A batch is padded to its longest text, so the order texts are batched in decides how many
tokens the model runs. Part 1 counts them for ``--n`` Debian texts (the seed-1 sample of
benchmarks.pipeline), batch size 32, with the model's own tokenizer: exact and free of timing
noise. sentence-transformers sorts by characters within each ``encode`` call;
``SentenceEncoder`` sorts by tokens; the flow calls it once per chunk, with chunks either
consecutive or from ``Corpus.encode_chunks``. Part 2 times plain
``SentenceTransformer.encode`` against ``SentenceEncoder.transform`` on ``--timed`` of the
texts, alternating which goes first for ``--rounds`` rounds, and checks the vectors agree.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import numpy as np

from benchmarks.data import load_debian
from embetter_core import SentenceEncoder
from embetter_core.corpus import Corpus
from embetter_core.encoders.text import token_lengths


def padded_tokens(calls: Sequence[Sequence[int]], key: np.ndarray, tokens: np.ndarray) -> int:
    """Tokens run when each call sorts its rows by ``key`` (longest first) into batches of 32
    and pads each batch to its longest text."""
    total = 0
    for rows in calls:
        rows = np.asarray(rows)
        ordered = tokens[rows[np.argsort(-key[rows], kind="stable")]]
        for at in range(0, ordered.size, 32):
            batch = ordered[at : at + 32]
            total += int(batch.max()) * batch.size
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--timed", type=int, default=1500, help="texts in the timed part")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    texts = load_debian(args.n, seed=1)["text"].tolist()
    corpus = Corpus.from_texts(texts)
    enc = SentenceEncoder()
    model = enc.model_
    print(f"{len(texts)} Debian texts, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")

    start = time.perf_counter()
    tokens = token_lengths(model, texts)
    print(f"token_lengths of all {len(texts)}: {time.perf_counter() - start:.2f} s")
    chars = np.array([len(t) for t in texts])
    real = int(tokens.sum())
    every = [list(range(len(texts)))]
    plans = {
        "sentence-transformers, one call": (every, chars),
        "sentence-transformers, consecutive chunks": (corpus.chunks(args.chunk_size), chars),
        "SentenceEncoder, one call": (every, tokens),
        "SentenceEncoder, consecutive chunks": (corpus.chunks(args.chunk_size), tokens),
        "SentenceEncoder, encode_chunks (the flow)": (
            corpus.encode_chunks(args.chunk_size),
            tokens,
        ),
    }
    print(f"tokens without padding: {real}")
    for label, (calls, key) in plans.items():
        run = padded_tokens(calls, key, tokens)
        print(f"  {label:42s}: {run:9d} tokens run ({run / real:.3f} of the texts' own)")

    sample = texts[: args.timed]
    model.encode(sample[:64], batch_size=32)
    seconds = {"plain SentenceTransformer.encode": 0.0, "SentenceEncoder.transform": 0.0}
    vectors = {}
    for run in range(args.rounds):
        order = list(seconds) if run % 2 == 0 else list(seconds)[::-1]
        for label in order:
            start = time.perf_counter()
            if label.startswith("plain"):
                vectors[label] = model.encode(sample, batch_size=32)
            else:
                vectors[label] = enc.transform(sample)
            took = time.perf_counter() - start
            seconds[label] += took
            print(f"round {run + 1}, {label:32s}: {took:7.1f} s", flush=True)
    plain, ours = seconds.values()
    a, b = vectors.values()
    worst = float(np.max(1 - (a * b).sum(axis=1)))
    print(
        f"{len(sample)} texts x {args.rounds} rounds: plain {plain:.1f} s, SentenceEncoder "
        f"{ours:.1f} s, speed-up {plain / ours:.3f}x; largest 1 - cos {worst:.1e}"
    )


if __name__ == "__main__":
    main()
