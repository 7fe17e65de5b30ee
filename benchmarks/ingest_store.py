"""Ingest and store overheads on the whole Debian corpus, as ratios to plain baselines.

- ``read_corpus(debian.csv.gz, id_column="id")`` (reading + validation) against a plain
  ``pandas.read_csv`` of the same file;
- ``corpus_hash()`` of that corpus, in seconds;
- an ``EmbeddingStore`` written chunk by chunk (``write_rows`` per chunk: open, lock, write,
  close; then ``commit``) against one plain h5py write of the same ids and float32 array.

Run: ``python -m benchmarks.ingest_store [--chunk-size 1000] [--dim 384] [--repeat 3]``
(best of ``repeat`` runs each, baseline and subject interleaved).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from benchmarks.data import DEBIAN
from embetter_core.corpus import read_corpus
from embetter_core.store import EmbeddingStore, write_rows


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    pd.read_csv(DEBIAN)  # warm the page cache and imports
    read_corpus(DEBIAN, id_column="id")
    plain = subject = float("inf")
    for _ in range(args.repeat):
        plain = min(plain, best_of(1, lambda: pd.read_csv(DEBIAN)))
        subject = min(subject, best_of(1, lambda: read_corpus(DEBIAN, id_column="id")))
    corpus = read_corpus(DEBIAN, id_column="id")
    hash_s = best_of(args.repeat, corpus.corpus_hash)
    n = len(corpus)
    print(f"rows: {n}")
    print(f"plain pandas.read_csv:            {plain:.3f} s")
    print(f"read_corpus (read + validate):    {subject:.3f} s  ratio {subject / plain:.2f}x")
    print(f"corpus_hash():                    {hash_s:.3f} s")

    vectors = np.random.default_rng(0).standard_normal((n, args.dim)).astype(np.float32)
    ids = corpus.ids
    chunks = corpus.chunks(args.chunk_size)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)

        def plain_h5py() -> None:
            with h5py.File(out / "plain.h5", "w") as f:
                f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
                f.create_dataset("embeddings", data=vectors, chunks=(args.chunk_size, args.dim))

        def store() -> None:
            writer = EmbeddingStore.create(
                out / "store.h5", n=n, dim=args.dim, fingerprint="bench",
                chunk_rows=args.chunk_size,
            )  # fmt: skip
            for rows in chunks:
                write_rows(writer.tmp_path, rows.start, ids[rows.start : rows.stop],
                           vectors[rows.start : rows.stop])  # fmt: skip
            writer.commit()

        base = mine = float("inf")
        for _ in range(args.repeat):
            base = min(base, best_of(1, plain_h5py))
            mine = min(mine, best_of(1, store))
        with EmbeddingStore.open(out / "store.h5") as check:
            assert check.ids == ids and np.array_equal(check.embeddings, vectors)
    mb = vectors.nbytes / 1e6
    print(f"plain h5py, one write ({mb:.0f} MB):   {base:.3f} s")
    print(
        f"EmbeddingStore, {len(chunks)} write_rows calls + commit: {mine:.3f} s  "
        f"ratio {mine / base:.2f}x"
    )


if __name__ == "__main__":
    main()
