"""``DifferenceClassifier``: learn from labelled pairs when two items count as "the same".

A cosine threshold is one number for a whole corpus; this model learns from pair features
(``|a - b|``, ``a * b``, ...) of the two embeddings, with any scikit-learn classifier as the
head. The module holds the estimator, its skops persistence and ``score_pairs``; reading pair
files, splitting them and comparing against a cosine threshold live in
:mod:`embetter_core.difference.evaluation`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from embetter_core.encoders.base import as_float32
from embetter_core.encoders.spec import ENCODERS, EncoderSpec, encoder_class
from embetter_core.errors import FingerprintMismatchError
from embetter_core.files import atomic_path
from embetter_core.moved import current_name

FEATURES = ("absdiff", "product", "concat", "max", "min", "sqdiff", "cosine")
FORMAT = "embetter-core/difference-classifier"
FORMAT_VERSION = 1
# The exact types, beyond skops' own trusted defaults (builtins, numpy arrays, scikit-learn
# estimators), that ``save`` writes with the heads this project uses: the default
# LogisticRegression needs none, HistGradientBoostingClassifier its tree predictor,
# TunedThresholdClassifierCV(scoring="f1") its scorers. Listed by saving each head with every
# feature (tests/test_model.py checks it); ``load`` refuses any other type, naming it.
# Exact names, never module prefixes: ``numpy.testing._private.utils.runstring`` is in numpy.
SAVED_TYPES = frozenset(
    {
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.metrics._classification.f1_score",
        "sklearn.metrics._scorer._CurveScorer",
        "sklearn.metrics._scorer._Scorer",
        "sklearn.utils._metadata_requests.MetadataRequest",
        "sklearn.utils._metadata_requests.MethodMetadataRequest",
    }
)
_PAYLOAD_KEYS = ("fingerprint", "encoder", "features", "n_features_in", "clf_head_")


def default_head() -> LogisticRegression:
    """The head used when ``clf_head`` is None."""
    return LogisticRegression(class_weight="balanced", max_iter=1000)


class DifferenceClassifier(ClassifierMixin, BaseEstimator):
    """Classify pairs ``(x1, x2)`` as similar or not from features of their embeddings.

    Args:
        enc: the encoder (any transformer returning ``(n, d)`` vectors; ``cached(...)`` too).
        clf_head: a scikit-learn classifier; ``None`` means
            ``LogisticRegression(class_weight="balanced", max_iter=1000)`` (made in ``fit``:
            a default instance in the signature would be one object shared by every model,
            so ``set_params(clf_head__C=...)`` on one would change all). ``fit`` fits a clone
            of it (the object passed is never modified, nor shared between models) and stores
            that fitted head as both ``clf_head`` and ``clf_head_``.
        features: pair features, concatenated in order, from ``"absdiff"`` (|a-b|),
            ``"product"`` (a*b), ``"concat"`` (a, b), ``"max"``, ``"min"``, ``"sqdiff"``
            ((a-b)^2) and ``"cosine"`` (one column).

    Each call encodes the union of ``X1`` and ``X2`` once, so repeated texts cost nothing.
    ``y`` must hold two classes; the larger one (``1`` / ``True``) means "similar".

    The seed example runs verbatim. As its documentation says, the fitted head is a
    scikit-learn model reachable as ``mod.clf_head`` (which could be saved separately, with
    joblib or skops); ``clf_head_`` is the same object. Unlike most scikit-learn parameters,
    ``clf_head`` is thus replaced by ``fit``; refitting clones it again (its fit discarded),
    and ``sklearn.base.clone(mod)`` is an unfitted copy, since cloning a head drops its fit.

    >>> from embetter_core import DifferenceClassifier, SentenceEncoder
    >>> mod = DifferenceClassifier(enc=SentenceEncoder())
    >>> texts1 = ["hello", "firehydrant", "greetings"]
    >>> texts2 = ["no",    "yes",         "greeting"]
    >>> similar = [0, 0, 1]
    >>> mod.fit(X1=texts1, X2=texts2, y=similar)  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    DifferenceClassifier(clf_head=LogisticRegression(...), enc=SentenceEncoder())
    >>> mod.predict(X1=texts1, X2=texts2)
    array([0, 0, 1])
    >>> mod.predict_proba(X1=texts1, X2=texts2).shape
    (3, 2)
    >>> mod.clf_head
    LogisticRegression(class_weight='balanced', max_iter=1000)
    >>> mod.clf_head is mod.clf_head_
    True
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

    def _items(self, X: Any, which: str) -> list[Any]:
        validate = getattr(self.enc, "validate_input", None)
        try:
            return list(validate(X)) if validate is not None else _as_list(X, which)
        except ValueError as exc:
            raise ValueError(f"{which}: {exc}") from exc

    def pair_vectors(self, X1: Any, X2: Any) -> tuple[np.ndarray, np.ndarray]:
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
    def fit(self, X1: Any, X2: Any, y: Any) -> DifferenceClassifier:
        """Fit a clone of the head on the pair features of ``(X1[i], X2[i])`` and ``y[i]``;
        the fitted head becomes ``clf_head`` and ``clf_head_``."""
        self._check_features()
        _check_lengths(X1=_length(X1), X2=_length(X2), y=_length(y))
        labels = _check_labels(y)
        a, b = self.pair_vectors(X1, X2)
        head = default_head() if self.clf_head is None else clone(self.clf_head)
        head.fit(self.pair_features(a, b), labels)
        # The seed's documented contract: mod.clf_head is the fitted scikit-learn head.
        self.clf_head = self.clf_head_ = head
        self.classes_ = head.classes_
        self.n_features_in_ = int(a.shape[1])
        return self

    def _fitted_features(self, X1: Any, X2: Any) -> np.ndarray:
        check_is_fitted(self, "clf_head_")
        a, b = self.pair_vectors(X1, X2)
        if a.shape[0] and a.shape[1] != self.n_features_in_:
            raise ValueError(
                f"the encoder gives {a.shape[1]}-d vectors but the model was fitted on "
                f"{self.n_features_in_}-d vectors"
            )
        return self.pair_features(a, b)

    def predict(self, X1: Any, X2: Any) -> np.ndarray:
        """The predicted class of each pair."""
        feats = self._fitted_features(X1, X2)
        if not len(feats):
            return self.classes_[:0].copy()
        return self.clf_head_.predict(feats)

    def predict_proba(self, X1: Any, X2: Any) -> np.ndarray:
        """Class probabilities ``(n, 2)``, columns in the order of ``classes_``."""
        feats = self._fitted_features(X1, X2)
        if not len(feats):
            return np.zeros((0, len(self.classes_)))
        return self.clf_head_.predict_proba(feats)

    def similarity(self, X1: Any, X2: Any) -> np.ndarray:
        """The probability of the "similar" class (``classes_[-1]``) for each pair."""
        return self.predict_proba(X1, X2)[:, -1]

    def score(self, X1: Any, X2: Any, y: Any) -> float:
        """Accuracy of ``predict(X1, X2)`` against ``y``."""
        _check_lengths(X1=_length(X1), X2=_length(X2), y=_length(y))
        labels = _check_labels(y, need_two=False)
        return float(np.mean(self.predict(X1, X2) == labels))

    # -- persistence -------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted model to ``path`` with skops (no pickle), with the encoder's
        fingerprint and :class:`~embetter_core.encoders.spec.EncoderSpec` beside. The file appears
        complete or not at all (written beside ``path``, then renamed into place).

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
            "encoder": _encoder_dump(self.enc),
            "features": list(self._check_features()),
            "n_features_in": self.n_features_in_,
            "clf_head_": self.clf_head_,  # also clf_head after fit: stored once
        }
        # Written beside the target and renamed into place: never seen half-written.
        with atomic_path(path) as tmp:
            skops.io.dump(payload, os.fspath(tmp))

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], enc: Any = None, *, trusted: Sequence[str] = ()
    ) -> DifferenceClassifier:
        """Read a model written by ``save``. Nothing in the file runs unless its type is
        trusted: skops' defaults, :data:`SAVED_TYPES` and the exact type names in ``trusted``
        (for a head of your own, after reading ``skops.io.get_untrusted_types(file=path)``).
        Any other type raises ``ValueError`` naming it.

        ``enc=None`` rebuilds the (uncached) encoder it was trained with; pass an encoder
        (``cached(...)`` too) to use that one. Either way its fingerprint must match the
        stored one, else :class:`FingerprintMismatchError` names both.
        """
        payload = _load_payload(os.fspath(path), trusted)
        if enc is None:
            enc = _saved_encoder(payload["encoder"])
        stored, given = payload["fingerprint"], enc.fingerprint()
        if stored != given:
            raise FingerprintMismatchError(
                f"model {os.fspath(path)!r} was trained with encoder {stored} "
                f"but is being loaded with encoder {given}"
            )
        head = payload["clf_head_"]  # files from before clf_head was the fitted head too
        mod = cls(enc=enc, clf_head=head, features=tuple(payload["features"]))
        mod.clf_head_ = head
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


# -- saving: the encoder's spec and the trusted-type check ---------------------------------
def _encoder_dump(enc: Any) -> dict[str, Any] | None:
    """The encoder's ``EncoderSpec`` as plain data (a ``cached()`` wrapper looked through);
    ``None`` for an encoder EncoderSpec cannot describe (``load`` then needs ``enc=``)."""
    try:
        return EncoderSpec.from_encoder(enc).model_dump()
    except TypeError:
        return None


def _saved_encoder(dump: dict[str, Any] | None) -> Any:
    """Rebuild the encoder ``save`` stored: an ``EncoderSpec`` dump, or the ``{"class",
    "params"}`` of files written before EncoderSpec (read for registered classes)."""
    if dump is not None and "class" in dump:  # the older format
        module, _, name = current_name(str(dump["class"])).rpartition(".")
        kind = next((k for k, v in ENCODERS.items() if v == f"{module}:{name}"), None)
        if kind is not None:
            return encoder_class(kind)(**dump.get("params", {}))
    if dump is None or "class" in dump:
        what = "an unregistered encoder" if dump is None else f"encoder {dump['class']!r}"
        raise ValueError(
            f"the model was saved with {what}, which load() cannot rebuild; pass enc= explicitly"
        )
    return EncoderSpec(**dump).build()


def _load_payload(path: str, trusted: Sequence[str] = ()) -> dict[str, Any]:
    import skops.io

    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    if isinstance(trusted, str):
        raise TypeError("trusted must be a list of exact type names, not one string")
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # not a zip / not a skops file
        raise ValueError(
            f"{path!r} is not a model saved by DifferenceClassifier.save: {exc}"
        ) from exc
    allowed = SAVED_TYPES | set(trusted)
    refused = sorted(t for t in untrusted if t not in allowed)
    if refused:
        raise ValueError(
            f"refusing to load {path!r}: it holds types that DifferenceClassifier.save does "
            f"not write, which could run code on load: {refused}. Load only files you trust; "
            "for a head of your own, pass its exact type names as load(..., trusted=[...])"
        )
    try:
        payload = skops.io.load(path, trusted=sorted(untrusted))
    except Exception as exc:  # a damaged or hand-made schema
        raise ValueError(
            f"{path!r} is not a model saved by DifferenceClassifier.save: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a model saved by DifferenceClassifier.save")
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path!r} has format version {payload.get('version')}; "
            f"this embetter-core reads version {FORMAT_VERSION}"
        )
    missing = [key for key in _PAYLOAD_KEYS if key not in payload]
    head = payload.get("clf_head_")
    if missing or not (hasattr(head, "predict_proba") and hasattr(head, "classes_")):
        what = f"lacks {missing}" if missing else "holds no fitted classifier head"
        raise ValueError(
            f"{path!r} {what}; it is damaged or was not written by DifferenceClassifier.save "
            "(train and save the model again)"
        )
    return payload


# -- validation helpers ------------------------------------------------------------------
def _as_list(X: Any, which: str) -> list[Any]:
    if isinstance(X, str):
        raise ValueError("expected a sequence, got a single string; wrap it in a list")
    if hasattr(X, "tolist") and getattr(X, "ndim", 1) == 1:
        return X.tolist()
    try:
        return list(X)
    except TypeError:
        raise ValueError(f"expected a sequence, got {type(X).__name__}") from None


def _length(X: Any) -> int:
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


# -- the cosine feature (also the baseline in embetter_core.difference.evaluation) ----------------
def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(n, d)`` arrays (0 where a row is all zeros).

    >>> cosine(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]])).round(3)
    array([0.707], dtype=float32)
    """
    a, b = as_float32(a), as_float32(b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
