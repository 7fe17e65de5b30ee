"""Train a DifferenceClassifier on labelled pairs and show it against a cosine threshold.

    python -m flows.train_difference PAIRS --text-a COL --text-b COL --label COL \\
        --output model.skops [--group COL] [--test-size 0.25] [--seed 0] \\
        [--cache-dir DIR] [--eval-dir DIR] [--model NAME] [--features absdiff product]

Splits the pairs into train / test (grouped when ``--group`` names a column, so no group is
on both sides), fits the model on train, evaluates F1, ROC-AUC, precision and recall on test
for the model and for a cosine threshold tuned on train, writes ``eval.json`` (into
``--eval-dir``, by default the output's folder), publishes a markdown artifact, and saves the
model with skops.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from embetter_core.model import FEATURES
from embetter_core.text import DEFAULT_MODEL
from tasks.train import evaluate, fit_model, load_pairs, save_model, split, write_eval

ARTIFACT_KEY = "difference-model-eval"
# The training flow's default features: on the Debian pairs they beat a tuned cosine
# threshold by about 3 F1 points, where the library default (absdiff, product) gains 0.6.
FLOW_FEATURES = ("concat", "absdiff", "product")


@flow(name="train-difference")
def train_difference(
    pairs: str,
    text_a: str = "text_a",
    text_b: str = "text_b",
    label: str = "label",
    output: str = "model.skops",
    group: str | None = None,
    test_size: float = 0.25,
    seed: int = 0,
    cache_dir: str | None = None,
    eval_dir: str | None = None,
    model_name: str = DEFAULT_MODEL,
    features: list[str] | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Load, split, fit, evaluate, save; returns the evaluation (also in ``eval.json``)."""
    logger = get_run_logger()
    enc = make_encoder(model_name, batch_size, cache_dir)
    feats = tuple(features or FLOW_FEATURES)

    frame = load_pairs(pairs, text_a, text_b, label, group)
    train_rows, test_rows = split(frame, test_size, seed)
    model = fit_model(frame, train_rows, enc, feats)
    result = evaluate(model, frame, train_rows, test_rows)
    result.update(
        {
            "pairs": str(pairs),
            "features": list(feats),
            "encoder": enc.fingerprint(),
            "test_size": test_size,
            "seed": seed,
        }
    )
    model_path = save_model(model, output)
    result["model_path"] = model_path
    eval_path = write_eval(result, eval_dir or str(Path(output).resolve().parent))
    create_markdown_artifact(
        markdown=render_markdown(result),
        key=ARTIFACT_KEY,
        description="DifferenceClassifier vs tuned cosine threshold",
    )
    logger.info(
        "model F1 %.3f vs cosine F1 %.3f; model at %s, evaluation at %s",
        result["model"]["f1"],
        result["cosine"]["f1"],
        model_path,
        eval_path,
    )
    result["eval_path"] = eval_path
    return result


def make_encoder(model_name: str, batch_size: int, cache_dir: str | None) -> Any:
    """A SentenceEncoder, wrapped in ``cached(cache_dir, ...)`` when a folder is given."""
    from embetter_core.cache import cached
    from embetter_core.text import SentenceEncoder

    enc = SentenceEncoder(name=model_name, batch_size=batch_size)
    return cached(cache_dir, enc) if cache_dir else enc


def render_markdown(result: dict[str, Any]) -> str:
    """A markdown table of the model's and the cosine baseline's test metrics.

    >>> row = {"f1": 0.9, "roc_auc": 0.95, "precision": 0.9, "recall": 0.9, "threshold": 0.5}
    >>> print(render_markdown({"model": row, "cosine": row, "n_train": 6, "n_test": 2}))
    ... # doctest: +ELLIPSIS
    # Difference model vs cosine threshold
    ...
    | DifferenceClassifier | 0.900 | 0.950 | 0.900 | 0.900 | 0.500 |
    ...
    """

    def fmt(value: Any) -> str:
        return "n/a" if value is None or value != value else f"{value:.3f}"

    lines = [
        "# Difference model vs cosine threshold",
        "",
        f"{result['n_train']} training pairs, {result['n_test']} test pairs.",
        "",
        "| scorer | F1 | ROC-AUC | precision | recall | threshold |",
        "|---|---|---|---|---|---|",
    ]
    for name, key in [("DifferenceClassifier", "model"), ("cosine (tuned on train)", "cosine")]:
        m = result[key]
        cells = [fmt(m[k]) for k in ("f1", "roc_auc", "precision", "recall", "threshold")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    gain = 100 * (result["model"]["f1"] - result["cosine"]["f1"])
    lines += ["", f"F1 gain over the cosine threshold: {gain:+.1f} points."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m flows.train_difference",
        description="Train and evaluate a DifferenceClassifier on labelled pairs.",
    )
    parser.add_argument("pairs", help="pair file: CSV, Parquet or JSONL")
    parser.add_argument("--text-a", required=True, help="column with the first text")
    parser.add_argument("--text-b", required=True, help="column with the second text")
    parser.add_argument("--label", required=True, help="column with 1 (similar) / 0")
    parser.add_argument("--output", required=True, help="where to save the model (.skops)")
    parser.add_argument("--group", help="column to group the train / test split by")
    parser.add_argument("--test-size", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", help="embedding cache folder (diskcache)")
    parser.add_argument("--eval-dir", help="folder for eval.json (default: the output's)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="sentence-transformers model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--features",
        nargs="+",
        choices=FEATURES,
        default=None,
        help=f"pair features (default: {' '.join(FLOW_FEATURES)}, which beat a tuned cosine "
        "threshold by 3 F1 points on the Debian pairs; see BENCHMARKS.md)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the flow from the command line; bad input exits with status 2 and a message."""
    args = parse_args(argv)
    try:
        result = train_difference(
            pairs=args.pairs,
            text_a=args.text_a,
            text_b=args.text_b,
            label=args.label,
            output=args.output,
            group=args.group,
            test_size=args.test_size,
            seed=args.seed,
            cache_dir=args.cache_dir,
            eval_dir=args.eval_dir,
            model_name=args.model,
            features=args.features,
            batch_size=args.batch_size,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_markdown(result))
    print(f"\nmodel: {result['model_path']}\nevaluation: {result['eval_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
