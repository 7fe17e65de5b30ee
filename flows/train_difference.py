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
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from embetter_core.difference import FEATURES, DifferenceClassifier
from embetter_core.encoders import DEFAULT_MODEL, EncoderSpec
from embetter_core.files import check_outputs_apart
from flows.cli import Stopped, check_model_loads, error_line, stop_on_signals, temporary_server
from flows.offline import use_offline_defaults
from flows.params import Cli, add_options, flow_with_params, options_given
from tasks.train import (
    ARTIFACT_KEY,
    evaluate,
    fit_model,
    load_pairs,
    publish_evaluation,
    render_markdown,
    save_model,
    split,
    write_eval,
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

    @field_validator("output")
    @classmethod
    def _output_is_a_file(cls, value: str) -> str:
        if Path(value).is_dir():
            raise ValueError(f"{value} is a folder; expected the model's file path (.skops)")
        return value

    @field_validator("cache_dir")
    @classmethod
    def _cache_is_a_folder(cls, value: str | None) -> str | None:
        if value is not None and Path(value).exists() and not Path(value).is_dir():
            raise ValueError(f"{value} is a file; expected a folder for the embedding cache")
        return value

    @model_validator(mode="after")
    def _outputs_apart(self) -> TrainParams:
        check_outputs_apart(
            {"pairs": self.pairs},
            {"--output": self.output, "eval.json": str(Path(self.eval_folder()) / "eval.json")},
        )
        return self

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


def report_evaluation(
    scores: dict[str, Any],
    model: DifferenceClassifier,
    model_path: str,
    eval_dir: str,
    *,
    pairs: str,
    features: Sequence[str],
    test_size: float,
    seed: int,
) -> dict[str, Any]:
    """Write ``eval.json`` (the test ``scores`` and what produced them) into ``eval_dir``,
    publish it as a markdown artifact and log the comparison; returns it, with ``eval_path``.
    """
    result = {
        **scores,
        "pairs": str(pairs),
        "features": list(features),
        "encoder": model.enc.fingerprint(),
        "test_size": test_size,
        "seed": seed,
        "model_path": model_path,
    }
    eval_path = write_eval(result, eval_dir)
    publish_evaluation(result)
    get_run_logger().info(
        "model F1 %.3f vs cosine F1 %.3f; model at %s, evaluation at %s",
        result["model"]["f1"],
        result["cosine"]["f1"],
        model_path,
        eval_path,
    )
    return {**result, "eval_path": eval_path}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: one option per field of :class:`TrainParams`."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.train_difference",
        description="Train and evaluate a DifferenceClassifier on labelled pairs.",
    )
    add_options(parser, TrainParams)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the flow from the command line; bad input exits with status 2 and a message.

    Parameters are checked and the model loaded before the temporary Prefect server starts;
    SIGTERM / Ctrl-C stop the run and its server (status 128 + signal).
    """
    use_offline_defaults()
    given = options_given(parse_args(argv), TrainParams)
    try:
        check_model_loads(TrainParams(**given).encoder_spec().build_local())
    except (ValueError, OSError, RuntimeError) as exc:  # pydantic's ValidationError too
        print(f"error: {error_line(exc, TrainParams)}", file=sys.stderr)
        return 2
    try:
        with stop_on_signals(), temporary_server():
            result = train_difference(**given)
    except Stopped as exc:
        print(f"stopped by {exc}: no model saved; the temporary server stopped", file=sys.stderr)
        return exc.exit_code
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the flow run has logged the traceback; say what went wrong
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(render_markdown(result))
    print(f"\nmodel: {result['model_path']}\nevaluation: {result['eval_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
