"""Does a DifferenceClassifier beat a tuned cosine threshold on real near-duplicates?

``python -m benchmarks.difference_quality [--encoder sentence|static] [--multi 900 --single 2000
--splits 5 --heads ...]``

Pairs come from the Debian descriptions: positives are two packages built from the same
``source``; negatives are hard ones (a text's nearest neighbours with another source) and
random ones. Sources are split into train and test first, so no source is in both. The
script prints F1 / ROC-AUC / precision / recall of several DifferenceClassifier set-ups and of
a cosine threshold tuned on the training split, and each model's F1 gain over that baseline,
averaged over ``--splits`` random source splits (one split's test F1 moves by about a point).

Embedding all 63k rows takes hours on a small CPU, so a random subset of sources is used:
``--multi`` sources that build 2 to 8 packages plus ``--single`` one-package sources.
Vectors are cached in ``out/cache/debian-minilm`` (shared with the other benchmarks).

``--encoder static`` trains and scores every set-up (and the cosine baseline) on
``StaticEncoder`` vectors (cached in ``out/cache/debian-static``). The labelled pairs stay the
same as with the default MiniLM (hard negatives are MiniLM's nearest neighbours), so the two
encoders are compared on one test set.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.data import ROOT, load_debian

CACHES = {
    "sentence": ROOT / "out" / "cache" / "debian-minilm",
    "static": ROOT / "out" / "cache" / "debian-static",
}
CACHE = CACHES["sentence"]


def sample_sources(frame: pd.DataFrame, multi: int, single: int, seed: int) -> pd.DataFrame:
    """Rows of ``multi`` random sources with 2-8 packages and ``single`` one-package sources."""
    rng = np.random.default_rng(seed)
    sizes = frame.groupby("source").size()
    many = np.sort(sizes[(sizes >= 2) & (sizes <= 8)].index.to_numpy())
    ones = np.sort(sizes[sizes == 1].index.to_numpy())
    # Prefixes of fixed permutations: a larger sample contains a smaller one.
    chosen = set(rng.permutation(many)[:multi]) | set(rng.permutation(ones)[:single])
    return frame[frame["source"].isin(chosen)].reset_index(drop=True)


def encoder(name: str = "sentence"):
    """The cached MiniLM (``"sentence"``) or static encoder every Debian benchmark shares."""
    from embetter_core import SentenceEncoder, StaticEncoder, cached

    inner = SentenceEncoder(batch_size=64) if name == "sentence" else StaticEncoder()
    return cached(CACHES[name], inner)


def embed(texts: list[str], chunk: int = 256, name: str = "sentence") -> np.ndarray:
    """Vectors for ``texts``, written to the cache chunk by chunk (an interrupted run resumes)."""
    enc = encoder(name)
    parts = []
    start = time.perf_counter()
    for i in range(0, len(texts), chunk):
        parts.append(enc.transform(texts[i : i + chunk]))
        done = min(i + chunk, len(texts))
        print(f"  embedded {done}/{len(texts)} ({time.perf_counter() - start:.0f} s)", flush=True)
    enc.close()
    return np.concatenate(parts) if parts else np.zeros((0, 384), dtype=np.float32)


def make_pairs(
    rows: pd.DataFrame, vectors: np.ndarray, seed: int, hard: int = 2, max_pos: int = 6
) -> pd.DataFrame:
    """Labelled pairs within ``rows``: every same-source pair (at most ``max_pos`` per source)
    as positives; each row's ``hard`` nearest neighbours with another source and as many
    random different-source pairs as there are positives as negatives."""
    rng = np.random.default_rng(seed)
    source = rows["source"].to_numpy()
    found: dict[tuple[int, int], tuple[int, str]] = {}
    for _, idx in rows.groupby("source").indices.items():
        combos = [(int(i), int(j)) for n, i in enumerate(idx) for j in idx[n + 1 :]]
        for k in rng.permutation(len(combos))[:max_pos]:
            found[combos[k]] = (1, "same source")
    n_pos = len(found)
    sims = vectors @ vectors.T
    sims[source[:, None] == source[None, :]] = -np.inf  # neighbours with another source only
    for i, row in enumerate(sims):
        for j in np.argpartition(-row, hard)[:hard]:
            found.setdefault((min(i, int(j)), max(i, int(j))), (0, "hard negative"))
    added = 0
    while added < n_pos:
        i, j = sorted(int(v) for v in rng.choice(len(rows), size=2, replace=False))
        if source[i] != source[j] and (i, j) not in found:
            found[(i, j)] = (0, "random negative")
            added += 1
    keys = sorted(found)
    text = rows["text"].to_numpy()
    return pd.DataFrame(
        {
            "a": [text[i] for i, _ in keys],
            "b": [text[j] for _, j in keys],
            "label": [found[k][0] for k in keys],
            "kind": [found[k][1] for k in keys],
            "source": [source[i] for i, _ in keys],
        }
    )


def heads() -> dict[str, tuple[str, Any, tuple[str, ...]]]:
    """The set-ups compared with the cosine threshold: name -> (head label, head, features)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import TunedThresholdClassifierCV
    from sklearn.neural_network import MLPClassifier

    lr = LogisticRegression(class_weight="balanced", max_iter=1000)
    default = ("absdiff", "product")
    return {
        "default": ("LogisticRegression (default)", None, default),
        "cosine": ("LogisticRegression", None, ("absdiff", "product", "cosine")),
        "maxmin": ("LogisticRegression", None, ("absdiff", "product", "max", "min")),
        "concat": ("LogisticRegression", None, ("concat", "absdiff", "product")),
        "tuned": (
            "LogisticRegression, F1 threshold tuned by 5-fold CV on train",
            TunedThresholdClassifierCV(lr, scoring="f1", cv=5, random_state=0),
            default,
        ),
        "maxmin-tuned": (
            "LogisticRegression, F1 threshold tuned by 5-fold CV on train",
            TunedThresholdClassifierCV(lr, scoring="f1", cv=5, random_state=0),
            ("absdiff", "product", "max", "min"),
        ),
        "mlp": (
            "MLPClassifier(64), early stopping",
            MLPClassifier((64,), alpha=1e-3, early_stopping=True, max_iter=300, random_state=0),
            default,
        ),
        "hgb": (
            "HistGradientBoosting(200 iter)",
            HistGradientBoostingClassifier(max_iter=200, class_weight="balanced", random_state=0),
            ("cosine", "absdiff", "product"),
        ),
    }


def split_by_source(rows: pd.DataFrame, vectors: np.ndarray, share: float, seed: int):
    """Train and test pairs from disjoint random sets of sources."""
    rng = np.random.default_rng(seed)
    sources = rng.permutation(np.sort(rows["source"].unique()))
    in_test = rows["source"].isin(set(sources[: int(share * len(sources))])).to_numpy()
    out = []
    for mask in (~in_test, in_test):
        out.append(make_pairs(rows[mask].reset_index(drop=True), vectors[mask], seed=seed))
    assert not set(out[0]["source"]) & set(out[1]["source"])
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--multi", type=int, default=900, help="sources with 2-8 packages")
    parser.add_argument("--single", type=int, default=2000, help="one-package sources")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-share", type=float, default=0.3, help="share of test sources")
    parser.add_argument("--splits", type=int, default=5, help="random source splits")
    parser.add_argument(
        "--heads",
        nargs="+",
        default=["default", "cosine", "maxmin", "concat", "tuned", "maxmin-tuned", "mlp"],
        help="set-ups to run (hgb: slow on a small CPU)",
    )
    parser.add_argument("--embed-only", action="store_true", help="fill the cache and stop")
    parser.add_argument(
        "--encoder",
        choices=("sentence", "static"),
        default="sentence",
        help="encoder the models and the cosine baseline use (pairs are mined with MiniLM)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from embetter_core import DifferenceClassifier
    from embetter_core.difference import evaluate_against_cosine

    args = parse_args(argv)
    rows = sample_sources(load_debian(), args.multi, args.single, args.seed)
    print(f"{len(rows)} rows from {rows['source'].nunique()} sources")
    vectors = embed(rows["text"].tolist())  # MiniLM's: they pick the hard negatives
    if args.encoder != "sentence":
        embed(rows["text"].tolist(), chunk=len(rows), name=args.encoder)
    if args.embed_only:
        return

    enc = encoder(args.encoder)
    print(f"encoder: {args.encoder}")
    setups = heads()
    results: dict[str, list[dict]] = {"cosine threshold": []}
    for split in range(args.splits):
        tr, te = split_by_source(rows, vectors, args.test_share, seed=args.seed + split)
        kinds = te["kind"].value_counts().to_dict()
        print(f"split {split}: train {len(tr)} pairs, test {len(te)} pairs {kinds}", flush=True)
        for key in args.heads:
            label, head, features = setups[key]
            start = time.perf_counter()
            model = DifferenceClassifier(enc, clf_head=head, features=features)
            model.fit(tr["a"], tr["b"], tr["label"])
            out = evaluate_against_cosine(
                model, (tr["a"], tr["b"], tr["label"]), (te["a"], te["b"], te["label"])
            )
            if key == args.heads[0]:
                results["cosine threshold"].append(out["cosine"])
            name = f"{label}: {', '.join(features)}"
            results.setdefault(name, []).append(
                {**out["model"], "seconds": time.perf_counter() - start}
            )
            gain = 100 * (out["model"]["f1"] - out["cosine"]["f1"])
            print(f"  {name}: F1 {out['model']['f1']:.3f} ({gain:+.1f} pts)", flush=True)

    base = np.array([m["f1"] for m in results["cosine threshold"]])
    print(f"\n{args.splits} source splits; cosine threshold tuned on each train split\n")
    print("| scorer | F1 | ROC-AUC | precision | recall | F1 gain (pts) | per split | fit+eval |")
    print("|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        f1 = np.array([m["f1"] for m in runs])
        gains = 100 * (f1 - base)
        mean = {k: np.mean([m[k] for m in runs]) for k in ("f1", "roc_auc", "precision", "recall")}
        took = (
            "-" if name == "cosine threshold" else f"{np.mean([m['seconds'] for m in runs]):.0f} s"
        )
        per = " ".join(f"{g:+.1f}" for g in gains)
        spread = gains.std(ddof=1) if len(gains) > 1 else 0.0
        print(
            f"| {name} | {mean['f1']:.3f} | {mean['roc_auc']:.3f} | {mean['precision']:.3f} | "
            f"{mean['recall']:.3f} | {gains.mean():+.1f} ± {spread:.1f} | "
            f"{per} | {took} |"
        )


if __name__ == "__main__":
    main()
