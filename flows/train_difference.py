"""Train a DifferenceClassifier on labelled pairs and show it against a cosine threshold.

    python -m flows.train_difference PAIRS --text-a COL --text-b COL --label COL \\
        --output model.skops [--group COL] [--test-size 0.25] [--seed 0] \\
        [--cache-dir DIR] [--eval-dir DIR] [--model NAME] [--features absdiff product]

Splits the pairs into train / test (grouped when ``--group`` names a column, so no group is
on both sides), fits the model on train, evaluates F1, ROC-AUC, precision and recall on test
for the model and for a cosine threshold tuned on train, writes ``eval.json`` (into
``--eval-dir``, by default the output's folder), publishes a markdown artifact, and saves the
model with skops. The parameters are declared once, as the fields of :class:`TrainParams`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from embetter_core.model import FEATURES
from embetter_core.spec import EncoderSpec
from embetter_core.text import DEFAULT_MODEL
from flows.offline import use_offline_defaults
from flows.params import Cli, add_options, flow_with_params, options_given
from tasks.train import (
    ARTIFACT_KEY,
    evaluate,
    fit_model,
    load_pairs,
    render_markdown,
    report_evaluation,
    save_model,
    split,
)

__all__ = ["ARTIFACT_KEY", "TrainParams", "render_markdown", "train_difference", "main"]

# The training flow's default features: on the Debian pairs they beat a tuned cosine
# threshold by about 3 F1 points, where the library default (absdiff, product) gains 0.6.
FLOW_FEATURES = ("concat", "absdiff", "product")
Feature = Literal[FEATURES]  # type: ignore[valid-type]  # the names the classifier knows


class TrainParams(BaseModel):
    """The training flow's parameters: its signature and its command-line options.

    >>> TrainParams(pairs="pairs.csv").features
    ['concat', 'absdiff', 'product']
    """

    model_config = ConfigDict(protected_namespaces=())

    pairs: Annotated[str, Cli(positional=True)] = Field(
        description="pair file: CSV, Parquet or JSONL"
    )
    text_a: Annotated[str, Cli(required=True)] = Field(
        "text_a", description="column with the first text"
    )
    text_b: Annotated[str, Cli(required=True)] = Field(
        "text_b", description="column with the second text"
    )
    label: Annotated[str, Cli(required=True)] = Field(
        "label", description="column with 1 (similar) / 0"
    )
    output: Annotated[str, Cli(required=True)] = Field(
        "model.skops", description="where to save the model (.skops)"
    )
    group: str | None = Field(None, description="column to group the train / test split by")
    test_size: float = Field(0.25, description="share of the pairs held out for the test")
    seed: int = Field(0, description="random seed of the split")
    cache_dir: str | None = Field(None, description="embedding cache folder (diskcache)")
    eval_dir: str | None = Field(None, description="folder for eval.json (default: the output's)")
    model_name: Annotated[str, Cli(flag="--model")] = Field(
        DEFAULT_MODEL, description="sentence-transformers model name or local path"
    )
    features: list[Feature] = Field(
        default_factory=lambda: list(FLOW_FEATURES),
        description="pair features; the default beats a tuned cosine threshold by 3 F1 "
        "points on the Debian pairs (see BENCHMARKS.md)",
    )
    batch_size: int = Field(32, ge=1, description="texts per forward pass")

    def encoder_spec(self) -> EncoderSpec:
        """The encoder these parameters describe."""
        return EncoderSpec.parse(self.model_name, batch_size=self.batch_size)

    def eval_folder(self) -> str:
        """Where ``eval.json`` goes: ``eval_dir``, else the model's folder."""
        return self.eval_dir or str(Path(self.output).resolve().parent)


@flow_with_params(TrainParams, name="train-difference")
def train_difference(params: TrainParams) -> dict[str, Any]:
    """Load, split, fit, evaluate, save; returns the evaluation (also in ``eval.json``)."""
    frame = load_pairs(params.pairs, params.text_a, params.text_b, params.label, params.group)
    train_rows, test_rows = split(frame, params.test_size, params.seed)
    model = fit_model(frame, train_rows, params.encoder_spec(), params.features, params.cache_dir)
    scores = evaluate(model, frame, train_rows, test_rows)
    model_path = save_model(model, params.output)
    return report_evaluation(
        scores,
        model,
        model_path,
        params.eval_folder(),
        pairs=params.pairs,
        features=params.features,
        test_size=params.test_size,
        seed=params.seed,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: one option per field of :class:`TrainParams`."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.train_difference",
        description="Train and evaluate a DifferenceClassifier on labelled pairs.",
    )
    add_options(parser, TrainParams)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the flow from the command line; bad input exits with status 2 and a message."""
    use_offline_defaults()
    args = parse_args(argv)
    try:
        result = train_difference(**options_given(args, TrainParams))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_markdown(result))
    print(f"\nmodel: {result['model_path']}\nevaluation: {result['eval_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
