"""The real Debian corpus used by benchmarks, and the bundled demo slice made from it.

``python -m benchmarks.data`` rebuilds ``embetter_core/data/debian-sample.csv.gz``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DEBIAN = ROOT.parent / "shared" / "data" / "debian-descriptions.csv.gz"
SAMPLE = ROOT / "embetter_core" / "data" / "debian-sample.csv.gz"


def load_debian(n: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The Debian descriptions (id, package, source, text); ``n`` rows sampled if given."""
    if not DEBIAN.exists():
        sys.exit(f"missing {DEBIAN}: rebuild it with ../shared/data/make_debian_corpus.py")
    frame = pd.read_csv(DEBIAN, keep_default_na=False, dtype={"text": str})
    if n is not None and n < len(frame):
        frame = frame.sample(n=n, random_state=seed).sort_index().reset_index(drop=True)
    return frame


def make_sample(rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Whole source groups, drawn at random until ``rows`` rows: about half the rows come
    from sources that build several packages, so the demo finds real near-duplicates."""
    frame = load_debian()
    rng = np.random.default_rng(seed)
    sizes = frame.groupby("source").size()
    multi = rng.permutation(sizes[(sizes > 1) & (sizes <= 8)].index.to_numpy())
    single = rng.permutation(sizes[sizes == 1].index.to_numpy())
    chosen, total = [], 0
    for src in multi:
        if total >= rows // 2:
            break
        chosen.append(src)
        total += int(sizes[src])
    chosen.extend(single[: rows - total])
    sample = frame[frame["source"].isin(set(chosen))]
    return sample[["id", "package", "source", "text"]].reset_index(drop=True)


if __name__ == "__main__":
    sample = make_sample()
    SAMPLE.parent.mkdir(parents=True, exist_ok=True)
    sample.to_csv(SAMPLE, index=False, compression={"method": "gzip", "mtime": 0})
    print(f"{len(sample)} rows, {sample['source'].nunique()} sources -> {SAMPLE}")
