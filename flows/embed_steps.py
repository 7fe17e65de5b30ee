"""The steps of the embed-corpus flow between its tasks: checks before any work, the
chunked encode-and-persist loop, the reference corpus, the two-stage rescore and the
difference model. ``flows/embed_corpus.py`` reads as the pipeline; the work is here."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture
from prefect.utilities.annotations import quote

from embetter_core import store as store_lib
from embetter_core.corpus import Corpus, check_deduplicated_path
from embetter_core.dedupe import (
    DuplicateReport,
    ReferenceMatches,
    candidate_rows,
    check_reference_store,
)
from embetter_core.encoders import EncoderSpec
from embetter_core.store import StoreWriter
from flows.cli import check_model_loads
from flows.embed_params import EmbedParams, is_store
from tasks.dedupe import rescore_duplicates
from tasks.embed import cached_encoder, embed_chunk
from tasks.ingest import ingest
from tasks.persist import commit_store, create_store, persist_chunk
from tasks.reference import (
    ReferenceOutputs,
    find_reference_duplicates_in_store,
    write_reference_pairs,
)
from tasks.score import score_candidate_pairs


def cache_folder(cache_dir: str, spec: EncoderSpec, fingerprint: str | None = None) -> str:
    """One cache folder per encoder under ``cache_dir``, named for the model and fingerprint
    (``spec``'s, computed unless given).

    >>> cache_folder("out/cache", EncoderSpec())  # doctest: +ELLIPSIS
    'out/cache/all-MiniLM-L6-v2-...'
    """
    fingerprint = fingerprint or spec.build_local().fingerprint()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(spec.model_name).name).strip("-") or "model"
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:10]
    return str(Path(cache_dir) / f"{slug}-{digest}")


def check_before_work(params: EmbedParams, spec: EncoderSpec, cache: str) -> None:
    """Fail before any work on what would fail later: an output or cache folder that cannot
    be written, Modal without a token or network, a difference model of another encoder, a
    model that is not on this disk (loaded now into the encoder the chunks use)."""
    check_outputs(params)
    check_backend(spec)
    rescore_spec = params.rescore_spec()
    check_difference_model(params.difference_model, rescore_spec or spec, params.rescore)
    if spec.backend == "local":
        check_model_loads(cached_encoder(spec, cache).encoder)
    if rescore_spec is not None:
        rescore_cache = cache_folder(params.cache_dir, rescore_spec)
        check_model_loads(cached_encoder(rescore_spec, rescore_cache).encoder)
    check_reference(params.reference, spec, cache)


def check_outputs(params: EmbedParams) -> None:
    """Fail before any work when an output folder cannot be written."""
    store_lib.check_writable(params.output)
    for folder, option in [(params.report_dir, "--report-dir"), (params.cache_dir, "--cache-dir")]:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermissionError(f"cannot create the folder {folder} ({option}): {exc}") from exc
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"the folder {folder} ({option}) is not writable")
    if params.write_deduplicated:
        check_deduplicated_path(str(params.input_path), params.write_deduplicated)


def check_difference_model(path: str | None, spec: EncoderSpec, rescore: str | None = None) -> None:
    """Refuse, before any work, a difference model trained with another encoder than
    ``spec``, the one that decides the pairs (with ``--rescore``, the rescore encoder)."""
    if path:
        from embetter_core.difference import DifferenceClassifier
        from embetter_core.errors import FingerprintMismatchError

        try:
            DifferenceClassifier.load(path, enc=spec.build_local())
        except FingerprintMismatchError as exc:
            if rescore is None:
                raise
            raise FingerprintMismatchError(
                f"with --rescore {rescore} the difference model scores the {rescore} "
                f"encoder's pairs, so it must be trained with that encoder: {exc}"
            ) from exc


def check_reference(reference: str | None, spec: EncoderSpec, cache: str) -> None:
    """Refuse, before any encoding, a reference store written by another encoder (both
    fingerprints named) or, where the local encoder says its dimension, of another one."""
    if reference is None or not is_store(reference):
        return
    dim = None
    if spec.backend == "local":
        embedding_dim = getattr(cached_encoder(spec, cache).encoder, "embedding_dim", None)
        dim = embedding_dim() if embedding_dim is not None else None
    check_reference_store(reference, fingerprint=spec.build_local().fingerprint(), dim=dim)


def ingest_reference(params: EmbedParams) -> Corpus | None:
    """The reference corpus, read like the input (same columns); None without a reference
    or when it is a store."""
    if params.reference is None or is_store(params.reference):
        return None
    return ingest(params.reference, params.text_column, params.id_column, params.skip_invalid)


def embed_reference(
    reference_corpus: Corpus | None,
    spec: EncoderSpec,
    fingerprint: str,
    cache: str,
    params: EmbedParams,
) -> str | None:
    """The store of the reference: a reference corpus embedded like the input (same encoder
    and cache) into :meth:`EmbedParams.reference_store`, or the store given as reference."""
    if reference_corpus is None:
        return params.reference
    output = params.reference_store()
    writer, _ = embed_and_persist(
        reference_corpus, spec, fingerprint, cache, params, output=output, what="reference"
    )
    return str(commit_store(writer))


def match_reference(
    report: DuplicateReport,
    corpus: Corpus,
    reference_corpus: Corpus | None,
    store_path: Path,
    reference_store: str | None,
    params: EmbedParams,
) -> ReferenceOutputs | None:
    """The corpus's rows against the reference, with the dedupe's threshold and engine:
    ``reference_pairs.csv`` and the report's section. None without a reference."""
    if reference_store is None:
        return None
    matches: ReferenceMatches = find_reference_duplicates_in_store(
        str(store_path), reference_store, report.threshold, params.dedupe_method
    )
    text_of = corpus.texts_by_id()
    texts = {i: text_of[i] for i in matches.ids}
    reference_texts = None
    if reference_corpus is not None:
        reference_of = reference_corpus.texts_by_id()
        reference_texts = {r: reference_of[r] for r in matches.reference_ids}
    assert params.reference is not None
    return write_reference_pairs(
        quote(matches),
        params.report_dir,
        params.reference,
        quote(texts),
        quote(reference_texts),
        spreadsheet_safe=params.spreadsheet_safe,
    )


def check_backend(spec: EncoderSpec) -> None:
    """With Modal offload, stop before any work when no token or network is there."""
    if spec.backend == "modal":
        from embetter_core.offload import APP_NAME, check_modal_ready

        check_modal_ready(APP_NAME)


def apply_difference_model(
    report: DuplicateReport,
    corpus: Corpus,
    params: EmbedParams,
    spec: EncoderSpec,
    cache: str,
) -> tuple[DuplicateReport, np.ndarray | None]:
    """Score each pair with ``params.difference_model`` (if any); with ``min_probability``
    keep only the pairs it calls duplicates. Returns the report and the probabilities."""
    if not params.difference_model:
        return report, None
    text_of = corpus.texts_by_id()
    as_items = encoder_items(corpus, spec)
    probabilities = score_candidate_pairs(
        params.difference_model,
        quote(as_items([text_of[a] for a, _, _ in report.pairs])),
        quote(as_items([text_of[b] for _, b, _ in report.pairs])),
        spec,
        cache,
    )
    if params.min_probability is None:
        return report, probabilities
    keep = probabilities >= params.min_probability
    get_run_logger().info("difference model keeps %d of %d pairs", keep.sum(), len(keep))
    return report.keep_pairs(keep), probabilities[keep]


def encoder_items(corpus: Corpus, spec: EncoderSpec) -> Any:
    """How the corpus's rows go to the encoder: a text corpus's rows as texts, even where one
    looks like an image path (``ClipEncoder`` would read ``"cat.png"`` as a file), an image
    corpus's as the image files they are."""
    return spec.encoder_class().text_items if corpus.kind == "text" else list


def embed_and_persist(
    corpus: Corpus,
    spec: EncoderSpec,
    fingerprint: str,
    cache: str,
    params: EmbedParams,
    *,
    output: str | None = None,
    what: str = "corpus",
) -> tuple[StoreWriter, dict[str, int]]:
    """Embed the corpus chunk by chunk (at most ``max_in_flight`` at once), writing each
    chunk to the temporary store (``output``, default ``params.output``) as it completes.
    Returns the writer and cache counts. ``what`` names the corpus in logs and artifacts
    (``"reference"`` for a reference corpus).

    Chunks come from :meth:`Corpus.encode_chunks`: rows of similar length encode together,
    as in one ``encode`` call, and each vector is written back to its row.
    """
    logger = get_run_logger()
    chunks = corpus.encode_chunks(params.chunk_size)
    prefix = "" if what == "corpus" else f"{what} "
    progress_id = create_progress_artifact(
        progress=0.0,
        key=f"embed-{what}-progress",
        description=f"Chunks of the {what} embedded and persisted",
    )
    bar = None
    if params.progress_bar:
        from tqdm import tqdm

        desc = f"embedding {prefix}".strip()
        bar = tqdm(total=len(corpus), unit="row", desc=desc, file=sys.stderr)
    totals = {"hits": 0, "misses": 0}
    done = 0
    writer: StoreWriter | None = None
    encoded = encode_in_chunks(corpus, chunks, spec, cache, params.max_in_flight)
    try:
        for number, rows, vectors, chunk_stats in encoded:
            if writer is None:
                writer = create_store(
                    output or params.output,
                    len(corpus),
                    int(vectors.shape[1]),
                    fingerprint,
                    corpus.source,
                    corpus.corpus_hash(),
                    params.chunk_size,
                )
            persist_chunk(
                writer, rows, quote([corpus.ids[i] for i in rows]), quote(vectors), chunk=number
            )
            for key in totals:
                totals[key] += chunk_stats[key]
            done += len(rows)
            logger.info(
                "%schunk %d of %d written (%d rows; %d of %d done): %d cache hits, %d misses",
                prefix,
                number,
                len(chunks),
                len(rows),
                done,
                len(corpus),
                chunk_stats["hits"],
                chunk_stats["misses"],
            )
            update_progress_artifact(progress_id, progress=100.0 * done / len(corpus))
            if bar is not None:
                bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
    logger.info("%scache: %d hits, %d misses", prefix, totals["hits"], totals["misses"])
    assert writer is not None  # a corpus has at least one row
    return writer, totals


def encode_in_chunks(
    corpus: Corpus,
    chunks: Sequence[np.ndarray],
    spec: EncoderSpec,
    cache: str,
    max_in_flight: int,
    task: Any = embed_chunk,
) -> Iterator[tuple[int, np.ndarray, np.ndarray, dict[str, int]]]:
    """Encode ``corpus``'s rows chunk by chunk (``chunks``: row numbers) through the cached
    encoder task (``embed_chunk``, or a renamed copy of it), at most ``max_in_flight`` chunks
    at once. Yields ``(number, rows, vectors, cache counts)`` per chunk, in chunk order."""
    as_items = encoder_items(corpus, spec)
    pending: deque[tuple[int, Any, PrefectFuture[tuple[np.ndarray, dict[str, int]]]]] = deque()

    def finish() -> tuple[int, np.ndarray, np.ndarray, dict[str, int]]:
        number, rows, future = pending.popleft()
        vectors, stats = future.result()
        return number, rows, vectors, stats

    for number, rows in enumerate(chunks, start=1):
        items = as_items([corpus.items[i] for i in rows])
        pending.append((number, rows, task.submit(items, number, spec, cache)))
        if len(pending) >= max_in_flight:
            yield finish()
    while pending:
        yield finish()


def rescore_candidates(
    first: DuplicateReport,
    corpus: Corpus,
    params: EmbedParams,
    spec: EncoderSpec,
    cache: str,
    threshold: float,
) -> tuple[DuplicateReport, dict[str, Any]]:
    """The second stage of a two-stage dedupe (``--rescore``): the rows in ``first``'s pairs
    encoded with ``spec`` (through its own ``cache``, in chunks) and decided at
    ``threshold``. Returns the final report and what the report says about the two stages.
    """
    logger = get_run_logger()
    rows = candidate_rows(first)
    logger.info(
        "two-stage: %d of %d rows are in a first-stage pair at %g; encoding them with %s",
        len(rows),
        len(corpus),
        first.threshold,
        spec.kind,
    )
    counts = {"hits": 0, "misses": 0}
    vectors = np.zeros((len(rows), 1), dtype=np.float32)
    if len(rows):
        # length-sorted chunks of the candidate rows, as for the whole corpus
        candidates = Corpus([corpus.ids[i] for i in rows], [corpus.items[i] for i in rows])
        largest = spec.encoder_class().chunk_size  # the decider's, not the first stage's
        size = min(params.chunk_size or largest, largest)
        chunks = [rows[c] for c in candidates.encode_chunks(size)]
        task = embed_chunk.with_options(name="rescore-chunk", task_run_name="rescore-chunk-{chunk}")
        for number, at, part, stats in encode_in_chunks(
            corpus, chunks, spec, cache, params.max_in_flight, task
        ):
            if number == 1:
                vectors = np.empty((len(rows), part.shape[1]), dtype=np.float32)
            vectors[np.searchsorted(rows, at)] = part
            counts = {key: counts[key] + stats[key] for key in counts}
            logger.info("rescore chunk %d of %d: %d rows", number, len(chunks), len(at))
    report = rescore_duplicates(quote(first), rows, quote(vectors), threshold, params.dedupe_method)
    return report, {
        "first_encoder": params.encoder,
        "candidate_threshold": first.threshold,
        "rescore_encoder": spec.build_local().fingerprint(),
        "rows": len(rows),
        "of": len(corpus),
        "cache": counts,
    }
