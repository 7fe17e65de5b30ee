"""Thin Prefect tasks for training a difference model: load pairs, fit, evaluate, save."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from embetter_core.model import (
    DifferenceClassifier,
    evaluate_against_cosine,
    read_pairs,
    split_pairs,
)


@task(cache_policy=NO_CACHE)
def load_pairs(
    path: str, text_a: str, text_b: str, label: str, group: str | None = None
) -> pd.DataFrame:
    """The pair file as a frame with columns ``a``, ``b``, ``label`` (0/1) and ``group``."""
    out = read_pairs(path, text_a, text_b, label, group)
    get_run_logger().info("%d pairs (%d similar) from %s", len(out), out["label"].sum(), path)
    return out


@task(cache_policy=NO_CACHE)
def split(frame: pd.DataFrame, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train / test row indices (grouped when the frame has a ``group`` column)."""
    groups = frame.get("group")
    return split_pairs(frame["label"], test_size=test_size, seed=seed, groups=groups)


@task(cache_policy=NO_CACHE)
def fit_model(
    frame: pd.DataFrame, rows: np.ndarray, enc: Any, features: tuple[str, ...]
) -> DifferenceClassifier:
    """Fit a DifferenceClassifier on the given rows."""
    part = frame.iloc[rows]
    model = DifferenceClassifier(enc=enc, features=features)
    return model.fit(part["a"], part["b"], part["label"])


@task(cache_policy=NO_CACHE)
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


@task(cache_policy=NO_CACHE)
def save_model(model: DifferenceClassifier, path: str) -> str:
    """Save the model with skops, written beside and renamed into place; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    model.save(partial)
    os.replace(partial, target)
    return str(target)


@task(cache_policy=NO_CACHE)
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
