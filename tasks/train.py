"""Thin Prefect tasks for training a difference model: load pairs, fit, evaluate, save, and
publish the evaluation."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from embetter_core.difference import (
    DifferenceClassifier,
    evaluate_against_cosine,
    read_pairs,
    split_pairs,
)
from embetter_core.encoders import EncoderSpec, cached
from tasks.options import step


@step()
def load_pairs(
    path: str, text_a: str, text_b: str, label: str, group: str | None = None
) -> pd.DataFrame:
    """The pair file as a frame with columns ``a``, ``b``, ``label`` (0/1) and ``group``."""
    out = read_pairs(path, text_a, text_b, label, group)
    get_run_logger().info("%d pairs (%d similar) from %s", len(out), out["label"].sum(), path)
    return out


@step()
def split(frame: pd.DataFrame, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train / test row indices (grouped when the frame has a ``group`` column)."""
    groups = frame.get("group")
    return split_pairs(frame["label"], test_size=test_size, seed=seed, groups=groups)


@step()
def fit_model(
    frame: pd.DataFrame,
    rows: np.ndarray,
    spec: EncoderSpec,
    features: Sequence[str],
    cache_dir: str | None = None,
) -> DifferenceClassifier:
    """Fit a DifferenceClassifier on the given rows, with the encoder ``spec`` describes
    (built here, wherever the task runs), cached in ``cache_dir`` when one is given."""
    part = frame.iloc[rows]
    enc = spec.build()
    if cache_dir:
        enc = cached(cache_dir, enc)
    model = DifferenceClassifier(enc=enc, features=tuple(features))
    return model.fit(part["a"], part["b"], part["label"])


@step()
def evaluate(
    model: DifferenceClassifier, frame: pd.DataFrame, train: np.ndarray, test: np.ndarray
) -> dict[str, Any]:
    """Test metrics of the model and of the cosine threshold tuned on the train rows."""
    tr, te = frame.iloc[train], frame.iloc[test]
    result = evaluate_against_cosine(
        model, (tr["a"], tr["b"], tr["label"]), (te["a"], te["b"], te["label"])
    )
    if "group" in frame:
        result["grouped_by"] = "group"
        result["test_groups"] = int(te["group"].nunique())
    return result


@step()
def save_model(model: DifferenceClassifier, path: str) -> str:
    """Save the model with skops (``save`` writes atomically); returns the path."""
    model.save(path)
    return str(Path(path))


@step()
def write_eval(result: dict[str, Any], folder: str) -> str:
    """Write ``eval.json`` into ``folder``; returns its path."""
    target = Path(folder) / "eval.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(_plain(result), indent=2, allow_nan=False) + "\n")
    return str(target)


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars to Python, NaN (undefined metric) to null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


ARTIFACT_KEY = "difference-model-eval"


@step()
def publish_evaluation(result: dict[str, Any]) -> None:
    """The evaluation as a markdown artifact (:data:`ARTIFACT_KEY`): the model's and the
    tuned cosine threshold's test metrics."""
    create_markdown_artifact(
        markdown=render_markdown(result),
        key=ARTIFACT_KEY,
        description="DifferenceClassifier vs tuned cosine threshold",
    )


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
