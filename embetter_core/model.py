"""``DifferenceClassifier``: learn from labelled pairs when two items count as "the same".

A cosine threshold is one number for a whole corpus; this model learns from pair features
(``|a - b|``, ``a * b``, ...) of the two embeddings, with any scikit-learn classifier as the
head. The module also holds what training and evaluating it needs and what the flows call:
the pair splitter, the tuned cosine-threshold baseline, the metrics, and ``score_pairs``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from embetter_core.base import as_float32
from embetter_core.cache import FingerprintMismatchError

if TYPE_CHECKING:
    import pandas as pd

FEATURES = ("absdiff", "product", "concat", "max", "min", "sqdiff", "cosine")
FORMAT = "embetter-core/difference-classifier"
FORMAT_VERSION = 1
# Module prefixes whose types a saved model may hold beyond skops' own trusted defaults.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")


def default_head() -> LogisticRegression:
    """The head used when ``clf_head`` is None."""
    return LogisticRegression(class_weight="balanced", max_iter=1000)


class DifferenceClassifier(ClassifierMixin, BaseEstimator):
    """Classify pairs ``(x1, x2)`` as similar or not from features of their embeddings.

    Args:
        enc: the encoder (any transformer returning ``(n, d)`` vectors; ``cached(...)`` too).
        clf_head: an unfitted scikit-learn classifier; ``None`` means
            ``LogisticRegression(class_weight="balanced", max_iter=1000)``. It is cloned in
            ``fit`` and never modified: the fitted head is ``clf_head_``.
        features: pair features, concatenated in order, from ``"absdiff"`` (|a-b|),
            ``"product"`` (a*b), ``"concat"`` (a, b), ``"max"``, ``"min"``, ``"sqdiff"``
            ((a-b)^2) and ``"cosine"`` (one column).

    Each call encodes the union of ``X1`` and ``X2`` once, so repeated texts cost nothing.
    ``y`` must hold two classes; the larger one (``1`` / ``True``) means "similar".

    The seed example runs verbatim. As in scikit-learn, ``clf_head`` stays the parameter that
    was passed (here ``None``, so the last line shows nothing); the fitted head is
    ``clf_head_``:

    >>> from embetter_core import DifferenceClassifier, SentenceEncoder
    >>> mod = DifferenceClassifier(enc=SentenceEncoder())
    >>> texts1 = ["hello", "firehydrant", "greetings"]
    >>> texts2 = ["no",    "yes",         "greeting"]
    >>> similar = [0, 0, 1]
    >>> mod.fit(X1=texts1, X2=texts2, y=similar)
    DifferenceClassifier(enc=SentenceEncoder())
    >>> mod.predict(X1=texts1, X2=texts2)
    array([0, 0, 1])
    >>> mod.predict_proba(X1=texts1, X2=texts2).shape
    (3, 2)
    >>> mod.clf_head
    >>> mod.clf_head_
    LogisticRegression(class_weight='balanced', max_iter=1000)
    """

    def __init__(
        self,
        enc: Any,
        clf_head: Any = None,
        features: Sequence[str] = ("absdiff", "product"),
    ) -> None:
        self.enc = enc
        self.clf_head = clf_head
        self.features = features

    # -- encoding and features ---------------------------------------------------------
    def _check_features(self) -> tuple[str, ...]:
        if isinstance(self.features, str):
            raise ValueError(
                f"features must be a sequence of names, got the string {self.features!r}"
            )
        names = tuple(self.features)
        unknown = [name for name in names if name not in FEATURES]
        if unknown or not names:
            raise ValueError(f"unknown pair features {unknown or names}; choose from {FEATURES}")
        return names

    def _items(self, X: Any, which: str) -> list[Any]:  # noqa: N803
        validate = getattr(self.enc, "validate_input", None)
        try:
            return list(validate(X)) if validate is not None else _as_list(X, which)
        except ValueError as exc:
            raise ValueError(f"{which}: {exc}") from exc

    def pair_vectors(self, X1: Any, X2: Any) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        """The embeddings of ``X1`` and ``X2``, from one encoder call on their union.

        >>> from embetter_core import SentenceEncoder
        >>> a, b = DifferenceClassifier(SentenceEncoder()).pair_vectors(["x", "y"], ["y", "x"])
        >>> bool((a[0] == b[1]).all()), a.shape
        (True, (2, 384))
        """
        items1, items2 = self._items(X1, "X1"), self._items(X2, "X2")
        _check_lengths(X1=len(items1), X2=len(items2))
        items = items1 + items2
        keys = _keys(self.enc, items)
        first: dict[Any, int] = {}
        for pos, key in enumerate(keys):
            first.setdefault(key, pos)
        if items:
            vectors = as_float32(self.enc.transform([items[pos] for pos in first.values()]))
        else:
            vectors = np.zeros((0, 0), dtype=np.float32)
        row = {key: i for i, key in enumerate(first)}
        table = vectors[[row[key] for key in keys]] if items else vectors
        n = len(items1)
        return table[:n], table[n:]

    def pair_features(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The feature matrix for vector pairs ``a[i], b[i]`` (the configured ``features``).

        >>> from embetter_core import SentenceEncoder
        >>> mod = DifferenceClassifier(SentenceEncoder(), features=("absdiff", "cosine"))
        >>> mod.pair_features(np.ones((2, 3)), np.zeros((2, 3))).shape
        (2, 4)
        """
        a, b = as_float32(a), as_float32(b)
        parts = []
        for name in self._check_features():
            if name == "absdiff":
                parts.append(np.abs(a - b))
            elif name == "product":
                parts.append(a * b)
            elif name == "concat":
                parts.extend([a, b])
            elif name == "max":
                parts.append(np.maximum(a, b))
            elif name == "min":
                parts.append(np.minimum(a, b))
            elif name == "sqdiff":
                parts.append((a - b) ** 2)
            else:
                parts.append(cosine(a, b)[:, None])
        return np.hstack(parts)

    # -- the estimator -----------------------------------------------------------------
    def fit(self, X1: Any, X2: Any, y: Any) -> DifferenceClassifier:  # noqa: N803
        """Fit a clone of the head on the pair features of ``(X1[i], X2[i])`` and ``y[i]``."""
        self._check_features()
        _check_lengths(X1=_length(X1), X2=_length(X2), y=_length(y))
        labels = _check_labels(y)
        a, b = self.pair_vectors(X1, X2)
        head = default_head() if self.clf_head is None else clone(self.clf_head)
        head.fit(self.pair_features(a, b), labels)
        self.clf_head_ = head
        self.classes_ = head.classes_
        self.n_features_in_ = int(a.shape[1])
        return self

    def _fitted_features(self, X1: Any, X2: Any) -> np.ndarray:  # noqa: N803
        check_is_fitted(self, "clf_head_")
        a, b = self.pair_vectors(X1, X2)
        if a.shape[0] and a.shape[1] != self.n_features_in_:
            raise ValueError(
                f"the encoder gives {a.shape[1]}-d vectors but the model was fitted on "
                f"{self.n_features_in_}-d vectors"
            )
        return self.pair_features(a, b)

    def predict(self, X1: Any, X2: Any) -> np.ndarray:  # noqa: N803
        """The predicted class of each pair."""
        feats = self._fitted_features(X1, X2)
        if not len(feats):
            return self.classes_[:0].copy()
        return self.clf_head_.predict(feats)

    def predict_proba(self, X1: Any, X2: Any) -> np.ndarray:  # noqa: N803
        """Class probabilities ``(n, 2)``, columns in the order of ``classes_``."""
        feats = self._fitted_features(X1, X2)
        if not len(feats):
            return np.zeros((0, len(self.classes_)))
        return self.clf_head_.predict_proba(feats)

    def similarity(self, X1: Any, X2: Any) -> np.ndarray:  # noqa: N803
        """The probability of the "similar" class (``classes_[-1]``) for each pair."""
        return self.predict_proba(X1, X2)[:, -1]

    def score(self, X1: Any, X2: Any, y: Any) -> float:  # noqa: N803
        """Accuracy of ``predict(X1, X2)`` against ``y``."""
        _check_lengths(X1=_length(X1), X2=_length(X2), y=_length(y))
        labels = _check_labels(y, need_two=False)
        return float(np.mean(self.predict(X1, X2) == labels))

    # -- persistence -------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted model to ``path`` with skops (no pickle), encoder fingerprint beside.

        >>> import tempfile
        >>> from embetter_core import SentenceEncoder
        >>> enc = SentenceEncoder()
        >>> mod = DifferenceClassifier(enc).fit(["a", "b"], ["a", "c"], [1, 0])
        >>> path = tempfile.mkdtemp() + "/model.skops"
        >>> mod.save(path)
        >>> again = DifferenceClassifier.load(path, enc=enc)
        >>> bool((again.predict_proba(["a"], ["b"]) == mod.predict_proba(["a"], ["b"])).all())
        True
        """
        import skops.io

        check_is_fitted(self, "clf_head_")
        payload = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "fingerprint": self.enc.fingerprint(),
            "encoder": encoder_spec(self.enc),
            "features": list(self._check_features()),
            "n_features_in": self.n_features_in_,
            "clf_head": self.clf_head,
            "clf_head_": self.clf_head_,
        }
        skops.io.dump(payload, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], enc: Any = None) -> DifferenceClassifier:
        """Read a model written by ``save``; only scikit-learn / numpy types are trusted.

        ``enc=None`` rebuilds the (uncached) encoder it was trained with; pass an encoder
        (``cached(...)`` too) to use that one. Either way its fingerprint must match the
        stored one, else :class:`FingerprintMismatchError` names both.
        """
        payload = _load_payload(os.fspath(path))
        if enc is None:
            enc = build_encoder(payload["encoder"])
        stored, given = payload["fingerprint"], enc.fingerprint()
        if stored != given:
            raise FingerprintMismatchError(
                f"model {os.fspath(path)!r} was trained with encoder {stored} "
                f"but is being loaded with encoder {given}"
            )
        mod = cls(enc=enc, clf_head=payload["clf_head"], features=tuple(payload["features"]))
        mod.clf_head_ = payload["clf_head_"]
        mod.classes_ = mod.clf_head_.classes_
        mod.n_features_in_ = int(payload["n_features_in"])
        return mod


def score_pairs(
    model: DifferenceClassifier | str | os.PathLike[str],
    texts_a: Any,
    texts_b: Any,
    enc: Any = None,
) -> np.ndarray:
    """Probability that ``texts_a[i]`` and ``texts_b[i]`` are "similar", as float64 ``(n,)``.

    ``model`` is a fitted :class:`DifferenceClassifier` or the path of a saved one (loaded
    with ``enc``, see :meth:`DifferenceClassifier.load`).

    >>> from embetter_core import SentenceEncoder
    >>> mod = DifferenceClassifier(SentenceEncoder()).fit(["a", "b"], ["a", "c"], [1, 0])
    >>> p = score_pairs(mod, ["a", "b"], ["a", "c"])
    >>> p.shape, bool(p[0] > p[1])
    ((2,), True)
    """
    if not isinstance(model, DifferenceClassifier):
        model = DifferenceClassifier.load(model, enc=enc)
    return np.asarray(model.similarity(texts_a, texts_b), dtype=np.float64)


# -- saving: the encoder's parameters and the trusted-type check -------------------------
def _bare(enc: Any) -> Any:
    from embetter_core.cache import CachedEncoder

    while isinstance(enc, CachedEncoder):
        enc = enc.encoder
    return enc


def encoder_spec(enc: Any) -> dict[str, Any]:
    """Class and parameters of the encoder (a cache wrapper left out), as plain data.

    >>> from embetter_core import SentenceEncoder
    >>> encoder_spec(SentenceEncoder())["class"]
    'embetter_core.text.SentenceEncoder'
    """
    bare = _bare(enc)
    params = bare.get_params(deep=False) if hasattr(bare, "get_params") else {}
    plain = {}
    for key, value in params.items():
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if value is None or isinstance(value, str | int | float | bool):
            plain[key] = value
    cls = type(bare)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "params": plain}


def build_encoder(spec: dict[str, Any]) -> Any:
    """Rebuild an encoder from :func:`encoder_spec`; only embetter_core encoders qualify."""
    from importlib import import_module

    from embetter_core.base import EmbeddingEncoder

    module_name, _, name = str(spec.get("class", "")).rpartition(".")
    if not module_name.startswith("embetter_core."):
        raise ValueError(
            f"the model was saved with encoder {spec.get('class')!r}, which load() cannot "
            "rebuild; pass enc= explicitly"
        )
    cls = getattr(import_module(module_name), name, None)
    if not (isinstance(cls, type) and issubclass(cls, EmbeddingEncoder)):
        raise ValueError(f"{spec.get('class')!r} is not an embetter_core encoder; pass enc=")
    return cls(**spec.get("params", {}))


def _load_payload(path: str) -> dict[str, Any]:
    import skops.io

    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # not a zip / not a skops file
        raise ValueError(
            f"{path!r} is not a model saved by DifferenceClassifier.save: {exc}"
        ) from exc
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise ValueError(
            f"refusing to load {path!r}: it holds types outside scikit-learn / numpy: {refused}"
        )
    payload = skops.io.load(path, trusted=untrusted)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a model saved by DifferenceClassifier.save")
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path!r} has format version {payload.get('version')}; "
            f"this embetter-core reads version {FORMAT_VERSION}"
        )
    return payload


# -- validation helpers ------------------------------------------------------------------
def _as_list(X: Any, which: str) -> list[Any]:  # noqa: N803
    if isinstance(X, str):
        raise ValueError("expected a sequence, got a single string; wrap it in a list")
    if hasattr(X, "tolist") and getattr(X, "ndim", 1) == 1:
        return X.tolist()
    try:
        return list(X)
    except TypeError:
        raise ValueError(f"expected a sequence, got {type(X).__name__}") from None


def _length(X: Any) -> int:  # noqa: N803
    try:
        return len(X)
    except TypeError:
        raise ValueError(f"expected a sequence, got {type(X).__name__}") from None


def _check_lengths(**lengths: int) -> None:
    if len(set(lengths.values())) > 1:
        names = " and ".join(", ".join(lengths).rsplit(", ", 1))
        got = ", ".join(f"len({k})={v}" for k, v in lengths.items())
        raise ValueError(f"{names} must have the same length; got {got}")


def _check_labels(y: Any, need_two: bool = True) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {labels.shape}")
    check_classification_targets(labels)
    classes = np.unique(labels)
    if need_two and len(classes) != 2:
        found = classes.tolist()
        raise ValueError(
            f"y must hold exactly two classes (similar and not similar), got {len(classes)}: "
            f"{found}"
        )
    return labels


def _keys(enc: Any, items: list[Any]) -> list[Any]:
    keys = getattr(enc, "cache_keys", None)
    if keys is not None:
        return list(keys(items))
    try:
        for item in items:
            hash(item)
    except TypeError:
        return list(range(len(items)))  # unhashable items: no de-duplication
    return [(type(item).__name__, item) for item in items]


# -- evaluation --------------------------------------------------------------------------
def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(n, d)`` arrays (0 where a row is all zeros).

    >>> cosine(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]])).round(3)
    array([0.707], dtype=float32)
    """
    a, b = as_float32(a), as_float32(b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


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


def read_pairs(
    path: str | os.PathLike[str],
    text_a: str,
    text_b: str,
    label: str,
    group: str | None = None,
) -> pd.DataFrame:
    """Read a pair file (CSV, Parquet, JSONL) into columns ``a``, ``b``, ``label`` (0 / 1) and,
    when ``group`` names a column, ``group``.

    A missing column raises ``ValueError`` naming it and the file; an empty cell or a label
    other than 0/1/true/false raises one naming the file, the row (1-based data row) and
    the column.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "pairs.csv"
    >>> _ = f.write_text("x,y,same\\nred car,a red car,1\\nred car,blue sky,0\\n")
    >>> read_pairs(f, "x", "y", "same")["label"].tolist()
    [1, 0]
    """
    import pandas as pd

    columns = [text_a, text_b, label] + ([group] if group else [])
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pair file {str(path)!r} does not exist")
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith((".parquet", ".pq")):
        frame = pd.read_parquet(path)
    elif suffixes.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        frame = pd.read_json(path, lines=True)
    else:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str)
    missing = [col for col in columns if col not in frame.columns]
    if missing:
        raise ValueError(
            f"pair file {str(path)!r} has no column(s) {missing}; its columns are "
            f"{list(frame.columns)}"
        )
    for col in columns:
        empty = frame[col].isna().to_numpy()
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise ValueError(f"pair file {str(path)!r}: row {row + 1} has no value in {col!r}")
    out = pd.DataFrame(
        {
            "a": frame[text_a].astype(str).to_numpy(),
            "b": frame[text_b].astype(str).to_numpy(),
            "label": parse_labels(frame[label], f"pair file {str(path)!r}, column {label!r}"),
        }
    )
    if group:
        out["group"] = frame[group].astype(str).to_numpy()
    return out


def parse_labels(values: Any, where: str) -> np.ndarray:
    """Labels as 0 / 1: accepts 0/1 and true/false (any case); anything else names its row."""
    mapping = {"1": 1, "0": 0, "true": 1, "false": 0, "1.0": 1, "0.0": 0}
    out = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(list(values)):
        key = str(value).strip().lower()
        if key not in mapping:
            raise ValueError(
                f"{where}: row {row + 1} has label {value!r}; expected 0/1 or true/false"
            )
        out[row] = mapping[key]
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
