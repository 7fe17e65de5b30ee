"""Texts per second: ``StaticEncoder.transform`` against ``SentenceEncoder.transform``.

    python -m benchmarks.static_speed [--n 2000] [--seed 0] [--static-repeats 5]
                                      [--batch-sizes 32,1024]

Both encode the same ``--n`` Debian descriptions (a seeded sample of
``../shared/data/debian-descriptions.csv.gz``) with their models already loaded: the static
model ``--static-repeats`` times before and as many after the one MiniLM run (its texts/s
is the median), so a change in the machine's load during the MiniLM run shows up in both.
Prints each encoder's texts/s, the ratio (target: at least 50x) and how long a fresh
``StaticEncoder()`` takes to load its already distilled model; ``--batch-sizes`` also times
the static encoder at other ``batch_size`` values (``EncoderSpec``'s default is 32).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.data import load_debian
from embetter_core import SentenceEncoder, StaticEncoder


def _seconds(encode, texts: list[str]) -> float:
    start = time.perf_counter()
    encode(texts)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--static-repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", default="32,1024", help="static batch sizes to time")
    args = parser.parse_args(argv)

    texts = load_debian(args.n, seed=args.seed)["text"].tolist()
    chars = sum(map(len, texts))
    print(
        f"{len(texts)} Debian texts ({chars / len(texts):.0f} characters on average), "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    StaticEncoder().transform(["distil here, if this machine has not yet"])
    start = time.perf_counter()
    static = StaticEncoder()
    static.transform(["load"])
    print(f"StaticEncoder() load of the distilled model: {time.perf_counter() - start:.2f} s")
    sentence = SentenceEncoder()
    sentence.transform(["load"])

    static_runs = [_seconds(static.transform, texts) for _ in range(args.static_repeats)]
    sentence_s = _seconds(sentence.transform, texts)
    static_runs += [_seconds(static.transform, texts) for _ in range(args.static_repeats)]
    static_s = statistics.median(static_runs)
    print(
        f"StaticEncoder.transform   : {len(texts) / static_s:9.0f} texts/s "
        f"(median of {len(static_runs)}: {static_s * 1000:.0f} ms; "
        f"range {min(static_runs) * 1000:.0f}-{max(static_runs) * 1000:.0f} ms)"
    )
    print(
        f"SentenceEncoder.transform : {len(texts) / sentence_s:9.1f} texts/s ({sentence_s:.1f} s)"
    )
    ratio = sentence_s / static_s
    verdict = "met" if ratio >= 50 else "NOT met"
    print(f"ratio static / sentence   : {ratio:9.1f}x (target >= 50x: {verdict})")

    for size in [int(s) for s in args.batch_sizes.split(",") if s.strip()]:
        enc = StaticEncoder(batch_size=size)
        enc.transform(["load"])
        runs = [_seconds(enc.transform, texts) for _ in range(args.static_repeats)]
        best = statistics.median(runs)
        print(f"  StaticEncoder(batch_size={size:5d}): {len(texts) / best:9.0f} texts/s")
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
