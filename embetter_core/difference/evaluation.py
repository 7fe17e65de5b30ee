"""Evaluating a :class:`~embetter_core.difference.model.DifferenceClassifier` on labelled pairs.

Reading a pair file (with the corpus readers, :func:`embetter_core.corpus.read_table`),
splitting it into train / test, the cosine-threshold baseline tuned on train, and the
metrics both are reported with.

>>> from embetter_core import DifferenceClassifier, SentenceEncoder
>>> x1, x2 = ["red car", "blue sky", "a cat", "tea"] * 2, ["a red car", "car", "cat", "sky"] * 2
>>> y = [1, 0, 1, 0] * 2
>>> train, test = split_pairs(y, test_size=0.5)
>>> pick = lambda rows: ([x1[i] for i in rows], [x2[i] for i in rows], [y[i] for i in rows])
>>> mod = DifferenceClassifier(SentenceEncoder()).fit(*pick(train))
>>> result = evaluate_against_cosine(mod, pick(train), pick(test))
>>> sorted(result["model"]), result["n_test"]
(['f1', 'precision', 'recall', 'roc_auc', 'threshold'], 4)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from embetter_core.difference.model import _check_labels, _check_lengths, cosine
from embetter_core.encoders.base import is_blank_text
from embetter_core.errors import MissingColumnError

if TYPE_CHECKING:
    import pandas as pd

    from embetter_core.difference.model import DifferenceClassifier

__all__ = [
    "cosine",
    "evaluate_against_cosine",
    "pair_metrics",
    "parse_labels",
    "read_pairs",
    "split_pairs",
    "tune_threshold",
]

_LABELS = {"1": 1, "0": 0, "true": 1, "false": 0, "1.0": 1, "0.0": 0}


def read_pairs(
    path: str | os.PathLike[str],
    text_a: str,
    text_b: str,
    label: str,
    group: str | None = None,
) -> pd.DataFrame:
    """Read a pair file into columns ``a``, ``b``, ``label`` (0 / 1) and, when ``group`` names
    a column, ``group``.

    The file is read as :func:`~embetter_core.corpus.read_corpus` reads a corpus (CSV, also
    gzipped, Parquet, JSONL), with its rules: a CSV cell is the string it is, so ``NA`` is a
    text and an empty cell is empty. A missing column raises ``ValueError`` naming it and the
    file; a missing or blank value (empty, whitespace or invisible characters only, such as
    U+200B: see :func:`~embetter_core.encoders.base.is_blank_text`), or a label other than
    0/1/true/false, raises one naming the file, the row (1-based data row) and the column.
    Numbers in text columns become strings.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "pairs.csv"
    >>> _ = f.write_text("x,y,same\\nred car,a red car,1\\nred car,NA,0\\n")
    >>> read_pairs(f, "x", "y", "same").to_dict("list")
    {'a': ['red car', 'red car'], 'b': ['a red car', 'NA'], 'label': [1, 0]}
    """
    import pandas as pd

    from embetter_core.corpus.reading import read_table

    where = f"pair file {os.fspath(path)!r}"
    columns = list(dict.fromkeys([text_a, text_b, label] + ([group] if group else [])))
    try:
        values = read_table(path, columns)
    except FileNotFoundError:
        raise FileNotFoundError(f"{where} does not exist") from None
    except MissingColumnError as err:
        raise MissingColumnError(
            f"{where} has no column(s) {list(err.missing)}; its columns are {list(err.columns)}",
            missing=err.missing,
            columns=err.columns,
        ) from err
    for col in columns:
        row = next((i for i, value in enumerate(values[col]) if _is_blank(value)), None)
        if row is not None:
            raise ValueError(f"{where}: row {row + 1} has no value in {col!r}")
    out = pd.DataFrame(
        {
            "a": [str(v) for v in values[text_a]],
            "b": [str(v) for v in values[text_b]],
            "label": parse_labels(values[label], f"{where}, column {label!r}"),
        }
    )
    if group:
        out["group"] = [str(v) for v in values[group]]
    return out


def _is_blank(value: Any) -> bool:
    """Missing (None, NaN) or a string that shows nothing (:func:`is_blank_text`: empty,
    whitespace or invisible characters only): what read_corpus rejects."""
    if isinstance(value, str):
        return is_blank_text(value)
    return value is None or (isinstance(value, float) and value != value)


def parse_labels(values: Any, where: str) -> np.ndarray:
    """Labels as 0 / 1: accepts 0/1 and true/false (any case); anything else names its row.

    >>> parse_labels(["1", "False", 0, True], "labels").tolist()
    [1, 0, 0, 1]
    """
    out = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(list(values)):
        key = str(value).strip().lower()
        if key not in _LABELS:
            raise ValueError(
                f"{where}: row {row + 1} has label {value!r}; expected 0/1 or true/false"
            )
        out[row] = _LABELS[key]
    return out


def split_pairs(
    y: Any, test_size: float = 0.25, seed: int = 0, groups: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Train / test row indices: stratified by ``y``, or grouped when ``groups`` is given.

    With groups no group is in both splits; of 50 random grouped splits the first with both
    classes on each side is taken.

    >>> train, test = split_pairs([0, 1] * 4, test_size=0.25)
    >>> len(train), len(test)
    (6, 2)
    """
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    labels = _check_labels(y)
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be between 0 and 1, got {test_size}")
    rows = np.arange(len(labels))
    if groups is None:
        values, counts = np.unique(labels, return_counts=True)
        if counts.min() < 2:
            raise ValueError(
                f"need at least 2 pairs of each label to split train / test; label "
                f"{values.tolist()[counts.argmin()]!r} has {counts.min()}"
            )
        n_test = max(len(values), round(test_size * len(labels)))
        if len(labels) - n_test < len(values):
            raise ValueError(f"{len(labels)} pairs are too few to split with test_size={test_size}")
        train, test = train_test_split(rows, test_size=n_test, random_state=seed, stratify=labels)
        return np.sort(train), np.sort(test)
    groups = np.asarray(groups)
    if len(groups) != len(labels):
        _check_lengths(groups=len(groups), y=len(labels))
    splitter = GroupShuffleSplit(n_splits=50, test_size=test_size, random_state=seed)
    for train, test in splitter.split(rows, labels, groups):
        if len(np.unique(labels[train])) == 2 and len(np.unique(labels[test])) == 2:
            return np.sort(train), np.sort(test)
    raise ValueError(
        f"no grouped split of {len(np.unique(groups))} groups puts both labels in train and test; "
        "add pairs or groups, or change test_size"
    )


def tune_threshold(scores: Any, y: Any) -> float:
    """The threshold on ``scores`` (predict similar when ``score >= t``) with the best F1.

    ``y`` is 1 / True for similar pairs.

    >>> tune_threshold([0.1, 0.4, 0.8, 0.9], [0, 0, 1, 1])
    0.8
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(y).astype(bool)
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    tp = np.cumsum(t)
    k = np.arange(1, len(s) + 1)
    last = np.r_[s[1:] != s[:-1], True]  # cut only between distinct scores
    f1 = np.where(last, 2 * tp / (k + t.sum()), -1.0)
    return float(s[int(np.argmax(f1))])


def pair_metrics(y: Any, scores: Any, threshold: float, predicted: Any = None) -> dict[str, float]:
    """F1, precision, recall at ``scores >= threshold`` and ROC-AUC of ``scores``.

    ``predicted`` (booleans) replaces ``scores >= threshold`` when given.

    >>> pair_metrics([0, 1, 1], [0.2, 0.6, 0.4], 0.5)["recall"]
    0.5
    """
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    truth = np.asarray(y).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    pred = scores >= threshold if predicted is None else np.asarray(predicted).astype(bool)
    both = truth.any() and not truth.all()
    return {
        "f1": float(f1_score(truth, pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(truth, scores)) if both else float("nan"),
        "precision": float(precision_score(truth, pred, zero_division=0)),
        "recall": float(recall_score(truth, pred, zero_division=0)),
        "threshold": float(threshold),
    }


def evaluate_against_cosine(
    model: DifferenceClassifier,
    train: tuple[Any, Any, Any],
    test: tuple[Any, Any, Any],
) -> dict[str, Any]:
    """Test-split metrics of ``model`` and of a cosine threshold tuned on the train split.

    ``train`` and ``test`` are ``(X1, X2, y)``. The model's F1 / precision / recall come from
    its ``predict`` (probability 0.5, or the head's own ``best_threshold_`` when it tunes one,
    as ``TunedThresholdClassifierCV`` does), its ROC-AUC from ``predict_proba``. Returns
    ``{"model": {...}, "cosine": {...}, "n_train": ..., "n_test": ..., "test_positives": ...}``.
    """
    x1, x2, y_train = train
    t1, t2, y_test = test
    positive = model.classes_[-1]
    a, b = model.pair_vectors(x1, x2)
    threshold = tune_threshold(cosine(a, b), np.asarray(y_train) == positive)
    a, b = model.pair_vectors(t1, t2)
    truth = np.asarray(y_test) == positive
    feats = model.pair_features(a, b)
    proba = model.clf_head_.predict_proba(feats)[:, -1]
    predicted = np.asarray(model.clf_head_.predict(feats)) == positive
    head_threshold = float(getattr(model.clf_head_, "best_threshold_", 0.5))
    return {
        "model": pair_metrics(truth, proba, head_threshold, predicted=predicted),
        "cosine": pair_metrics(truth, cosine(a, b), threshold),
        "n_train": len(y_train),
        "n_test": len(y_test),
        "test_positives": int(truth.sum()),
    }
