"""The steps of the embed-corpus flow between its tasks: the chunked encode-and-persist
loop, the reference corpus, the two-stage rescore and the difference model.
``flows/embed_corpus.py`` reads as the pipeline; the checks before any work are in
``flows/checks.py``, the report and the run's result in ``flows/embed_report.py``.

The rule for what lives here: work done inside the flow run (reading, encoding, searching,
scoring, writing, anything a person should see as a task run in the UI) goes through a task
in ``tasks/``; the plain functions of ``flows/`` only orchestrate (choose which tasks run on
what, chunk the rows, hand results on, log and report progress) or check before any work.
Tasks never import flows.
"""

from __future__ import annotations

import hashlib
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

from embetter_core.corpus import Corpus
from embetter_core.dedupe import DuplicateReport, ReferenceMatches
from embetter_core.encoders import EncoderSpec
from embetter_core.store import StoreWriter
from flows.embed_params import EmbedParams, is_store
from tasks.dedupe import find_candidate_rows, rescore_duplicates
from tasks.embed import embed_chunk
from tasks.ingest import hash_corpus, ingest
from tasks.persist import commit_store, create_store, persist_chunk
from tasks.reference import (
    ReferenceOutputs,
    find_reference_duplicates_in_store,
    write_reference_pairs,
)
from tasks.score import keep_likely_pairs, score_candidate_pairs


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
    return keep_likely_pairs(quote(report), quote(probabilities), params.min_probability)


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
                    hash_corpus(quote(corpus)),
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
    rows = find_candidate_rows(quote(first))
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
