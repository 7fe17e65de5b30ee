"""The main flow: ingest → embed (cached, in chunks) → persist HDF5 → dedupe report.

Run it ad hoc (without INPUT it embeds the bundled demo corpus)::

    python -m flows.embed_corpus data.csv --text-column text --output out/data.h5

or from a deployment (see ``prefect.yaml``). ``python -m flows.embed_corpus --help`` lists
every option.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

import flows  # noqa: F401  (offline-friendly Prefect defaults, before Prefect is imported)
from embetter_core.dedupe import DEFAULT_THRESHOLD
from embetter_core.spec import EncoderSpec

DEMO_CORPUS = (
    Path(__file__).resolve().parent.parent / "embetter_core" / "data" / "debian-sample.csv.gz"
)

from prefect import flow, get_run_logger  # noqa: E402
from prefect.artifacts import create_progress_artifact, update_progress_artifact  # noqa: E402

from embetter_core import store as store_lib  # noqa: E402
from tasks.dedupe import find_duplicates_in_store  # noqa: E402
from tasks.embed import embed_chunk  # noqa: E402
from tasks.ingest import ingest  # noqa: E402
from tasks.persist import commit_store, create_store, persist_chunk  # noqa: E402
from tasks.report import write_report  # noqa: E402
from tasks.score import score_candidate_pairs  # noqa: E402


class EmbedParams(BaseModel):
    """The flow's parameters, validated together (paths, ranges, choices)."""

    input_path: str = str(DEMO_CORPUS)
    text_column: str = "text"
    id_column: str | None = None
    encoder: Literal["sentence", "clip"] = "sentence"
    model: str | None = None
    pretrained: str | None = None
    output: str = "out/embeddings.h5"
    cache_dir: str = "out/cache"
    chunk_size: int = Field(1000, ge=1)
    threshold: float = Field(DEFAULT_THRESHOLD, gt=0, le=1)
    report_dir: str = "out/report"
    skip_invalid: bool = False
    dedupe_method: Literal["auto", "exact", "ann"] = "auto"
    batch_size: int = Field(32, ge=1)
    backend: Literal["local", "modal"] = "local"
    gpu: str = "any"
    max_in_flight: int = Field(1, ge=1)
    difference_model: str | None = None
    min_probability: float | None = Field(None, ge=0, le=1)

    @field_validator("output")
    @classmethod
    def _h5_suffix(cls, value: str) -> str:
        if not value.endswith((".h5", ".hdf5")):
            raise ValueError(f"output must be an .h5 file, got {value!r}")
        return value

    @field_validator("input_path", "difference_model")
    @classmethod
    def _exists(cls, value: str) -> str:
        if value is not None and not Path(value).exists():
            raise ValueError(f"not found: {value}")
        return value

    @model_validator(mode="after")
    def _probability_needs_model(self) -> EmbedParams:
        if self.min_probability is not None and not self.difference_model:
            raise ValueError("min_probability needs a difference_model to score the pairs")
        return self

    def encoder_spec(self) -> EncoderSpec:
        return EncoderSpec(
            kind=self.encoder,
            model=self.model,
            pretrained=self.pretrained,
            batch_size=self.batch_size,
            backend=self.backend,
            gpu=self.gpu,
        )


class EmbedResult(BaseModel):
    """What a run produced, and what it cost."""

    store_path: str
    pairs_csv: str
    report_html: str
    rows: int
    skipped: int
    pairs: int
    clusters: int
    cache_hits: int
    cache_misses: int
    dedupe_method: str
    seconds: float


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


def check_outputs(params: EmbedParams) -> None:
    """Fail before any work when an output folder cannot be written."""
    store_lib.check_writable(params.output)
    report_dir = Path(params.report_dir)
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"cannot create the report folder {report_dir}: {exc}") from exc
    if not os.access(report_dir, os.W_OK | os.X_OK):
        raise PermissionError(f"the report folder {report_dir} is not writable")


def check_difference_model(path: str | None, spec: EncoderSpec) -> None:
    """Refuse, before any work, a difference model trained with another encoder."""
    if path:
        from embetter_core.model import DifferenceClassifier

        DifferenceClassifier.load(path, enc=spec.build_local())


def check_backend(spec: EncoderSpec) -> None:
    """With Modal offload, stop before any work when no token or network is there."""
    if spec.backend == "modal":
        from embetter_core.offload import APP_NAME, check_modal_ready

        check_modal_ready(APP_NAME)


@flow(name="embed-corpus", validate_parameters=True)
def embed_corpus(
    input_path: str | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    encoder: Literal["sentence", "clip"] = "sentence",
    model: str | None = None,
    pretrained: str | None = None,
    output: str = "out/embeddings.h5",
    cache_dir: str = "out/cache",
    chunk_size: Annotated[int, Field(ge=1)] = 1000,
    threshold: Annotated[float, Field(gt=0, le=1)] = DEFAULT_THRESHOLD,
    report_dir: str = "out/report",
    skip_invalid: bool = False,
    dedupe_method: Literal["auto", "exact", "ann"] = "auto",
    batch_size: Annotated[int, Field(ge=1)] = 32,
    backend: Literal["local", "modal"] = "local",
    gpu: str = "any",
    max_in_flight: Annotated[int, Field(ge=1)] = 1,
    difference_model: str | None = None,
    min_probability: Annotated[float, Field(ge=0, le=1)] | None = None,
    progress_bar: bool = False,
) -> EmbedResult:
    """Embed a corpus into an HDF5 store and report its near-duplicates.

    Only what the cache lacks is encoded; a rerun after a crash reads the cache and
    finishes. ``input_path=None`` runs on the bundled demo corpus (2,000 Debian package
    descriptions). ``max_in_flight`` chunks are encoded at once (raise it with a Dask runner).
    With ``difference_model`` (a saved ``DifferenceClassifier``) each pair gets the model's
    probability; ``min_probability`` then keeps only the pairs the model calls duplicates.
    """
    started = time.perf_counter()
    logger = get_run_logger()
    args = {k: v for k, v in locals().items() if k in EmbedParams.model_fields and v is not None}
    if input_path is None and id_column is None:
        args["id_column"] = "package"  # the demo corpus: name rows by their Debian package
    params = EmbedParams(**args)
    spec = params.encoder_spec()
    fingerprint = spec.build_local().fingerprint()
    folder = cache_folder(params.cache_dir, spec, fingerprint)
    check_outputs(params)
    check_backend(spec)
    check_difference_model(params.difference_model, spec)

    corpus = ingest(params.input_path, params.text_column, params.id_column, params.skip_invalid)
    logger.info(
        "ingested %d rows from %s (%d skipped)", len(corpus), corpus.source, len(corpus.skipped)
    )

    writer, stats = embed_and_persist(corpus, spec, fingerprint, folder, params, progress_bar)
    store_path = commit_store(writer)
    logger.info("store written: %s", store_path)

    report = find_duplicates_in_store(str(store_path), params.threshold, params.dedupe_method)
    text_of = corpus.texts_by_id()
    report, probabilities = apply_difference_model(report, text_of, params, spec, folder)
    wanted = {i for pair in report.pairs for i in pair[:2]} | {
        i for members in report.clusters for i in members
    }
    texts = {i: text_of[i] for i in wanted}
    extra = {
        "corpus": corpus.source,
        "rows": len(corpus),
        "skipped rows": len(corpus.skipped),
        **({"first skipped": "; ".join(map(str, corpus.skipped[:5]))} if corpus.skipped else {}),
        "encoder": fingerprint,
        "cache hits / misses": f"{stats['hits']} / {stats['misses']}",
        "store": str(store_path),
        **(
            {"difference model": params.difference_model, "min probability": params.min_probability}
            if params.difference_model
            else {}
        ),
    }
    paths = write_report(
        report,
        texts,
        params.report_dir,
        extra,
        probabilities=None if probabilities is None else probabilities.tolist(),
    )
    result = EmbedResult(
        store_path=str(store_path),
        pairs_csv=str(paths["pairs_csv"]),
        report_html=str(paths["report_html"]),
        rows=len(corpus),
        skipped=len(corpus.skipped),
        pairs=len(report.pairs),
        clusters=len(report.clusters),
        cache_hits=stats["hits"],
        cache_misses=stats["misses"],
        dedupe_method=report.method,
        seconds=round(time.perf_counter() - started, 2),
    )
    logger.info("done: %s", result.model_dump_json())
    return result


def apply_difference_model(
    report: Any, text_of: dict[str, Any], params: EmbedParams, spec: EncoderSpec, folder: str
) -> tuple[Any, Any]:
    """Score each pair with ``params.difference_model`` (if any); with ``min_probability``
    keep only the pairs it calls duplicates. Returns the report and the probabilities."""
    if not params.difference_model:
        return report, None
    probabilities = score_candidate_pairs(
        params.difference_model,
        [text_of[a] for a, _, _ in report.pairs],
        [text_of[b] for _, b, _ in report.pairs],
        spec,
        folder,
    )
    if params.min_probability is None:
        return report, probabilities
    keep = probabilities >= params.min_probability
    get_run_logger().info("difference model keeps %d of %d pairs", keep.sum(), len(keep))
    return report.keep_pairs(keep), probabilities[keep]


def embed_and_persist(
    corpus: Any,
    spec: EncoderSpec,
    fingerprint: str,
    folder: str,
    params: EmbedParams,
    progress_bar: bool,
) -> tuple[Any, dict[str, int]]:
    """Embed the corpus chunk by chunk (at most ``max_in_flight`` at once), writing each
    chunk to the temporary store as it completes. Returns the writer and cache counts.

    Chunks come from :meth:`Corpus.encode_chunks`: rows of similar length encode together,
    as in one ``encode`` call, and each vector is written back to its row.
    """
    logger = get_run_logger()
    chunks = corpus.encode_chunks(params.chunk_size)
    progress_id = create_progress_artifact(
        progress=0.0, key="embed-corpus-progress", description="Chunks embedded and persisted"
    )
    bar = None
    if progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=len(corpus), unit="row", desc="embedding", file=sys.stderr)
    totals = {"hits": 0, "misses": 0}
    done = 0
    writer = None
    pending: deque[tuple[int, Any, Any]] = deque()

    def drain_one() -> None:
        nonlocal writer, done
        number, rows, future = pending.popleft()
        vectors, chunk_stats = future.result()
        if writer is None:
            writer = create_store(
                params.output,
                len(corpus),
                int(vectors.shape[1]),
                fingerprint,
                corpus.source,
                corpus.corpus_hash(),
                params.chunk_size,
            )
        persist_chunk(writer, rows, [corpus.ids[i] for i in rows], vectors, chunk=number)
        for key in totals:
            totals[key] += chunk_stats[key]
        done += len(rows)
        logger.info(
            "chunk %d of %d written (%d rows; %d of %d done): %d cache hits, %d misses",
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

    try:
        for number, rows in enumerate(chunks, start=1):
            items = [corpus.items[i] for i in rows]
            future = embed_chunk.submit(items, number, spec, folder)
            pending.append((number, rows, future))
            if len(pending) >= params.max_in_flight:
                drain_one()
        while pending:
            drain_one()
    finally:
        if bar is not None:
            bar.close()
    logger.info("cache: %d hits, %d misses", totals["hits"], totals["misses"])
    return writer, totals


def dask_runner(address: str | None = None, n_workers: int = 2) -> Any:
    """A ``DaskTaskRunner`` on an existing scheduler, or on a new process ``LocalCluster``.

    Every worker needs this package installed and the cache folder on storage it can reach.
    """
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1, "processes": True}
    )


@contextmanager
def api_for_workers(needed: bool) -> Iterator[None]:
    """Without ``PREFECT_API_URL``, start one temporary server that Dask workers share.

    Otherwise each worker process would start a temporary server of its own.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    if not needed or PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            try:
                yield
            finally:
                from prefect.logging.handlers import APILogHandler

                APILogHandler().flush()  # send the run's last logs while the server is up
    finally:
        server.stop()


# -- the command line ---------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flows.embed_corpus",
        description="Embed a corpus into an HDF5 store and write a near-duplicate report "
        "(a Prefect flow run). Without INPUT, runs on the bundled demo corpus.",
    )
    p.add_argument(
        "input",
        nargs="?",
        help="corpus file (.csv[.gz], .parquet, .jsonl[.gz], "
        ".txt) or a folder of images; default: the bundled demo corpus",
    )
    p.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    p.add_argument(
        "--id-column", default=None, help="column holding unique ids (default: row numbers)"
    )
    p.add_argument(
        "--encoder",
        choices=["sentence", "clip"],
        default="sentence",
        help="sentence-transformers for text, or open_clip for images (default: sentence)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="model name or local path (default: all-MiniLM-L6-v2 for sentence, ViT-B-32 for clip)",
    )
    p.add_argument(
        "--pretrained",
        default=None,
        help="clip only: open_clip pretrained tag or local checkpoint (default: openai)",
    )
    p.add_argument(
        "--output",
        default="out/embeddings.h5",
        help="the .h5 store to write (default: out/embeddings.h5)",
    )
    p.add_argument(
        "--cache-dir",
        default="out/cache",
        help="embedding cache root; one sub-folder per model (default: out/cache)",
    )
    p.add_argument(
        "--chunk-size", type=int, default=1000, help="rows per chunk/task (default: 1000)"
    )
    p.add_argument(
        "--batch-size", type=int, default=32, help="items per forward pass (default: 32)"
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"cosine similarity for a near-duplicate pair (default: {DEFAULT_THRESHOLD})",
    )
    p.add_argument(
        "--dedupe-method",
        choices=["auto", "exact", "ann"],
        default="auto",
        help="exact blocked search, approximate (ann), or auto by corpus size",
    )
    p.add_argument(
        "--report-dir",
        default="out/report",
        help="folder for pairs.csv and report.html (default: out/report)",
    )
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="drop empty/duplicate/unreadable rows and list them in the report instead of failing",
    )
    p.add_argument(
        "--difference-model",
        default=None,
        help="a DifferenceClassifier saved by flows.train_difference (.skops): adds each "
        "pair's probability to the report",
    )
    p.add_argument(
        "--min-probability",
        type=float,
        default=None,
        help="with --difference-model: keep only pairs whose probability is at least this",
    )
    p.add_argument(
        "--backend",
        choices=["local", "modal"],
        default="local",
        help="encode here, or on Modal GPUs (needs `modal setup`)",
    )
    p.add_argument(
        "--gpu", default="any", help="Modal GPU type with --backend modal, e.g. A10G (default: any)"
    )
    p.add_argument(
        "--runner",
        choices=["thread", "dask"],
        default="thread",
        help="Prefect task runner for embed_chunk: threads here, or a Dask cluster",
    )
    p.add_argument(
        "--dask-address",
        default=None,
        help="with --runner dask: scheduler of an existing cluster, e.g. tcp://HOST:8786 "
        "(default: start a LocalCluster)",
    )
    p.add_argument(
        "--dask-workers",
        type=int,
        default=2,
        help="with --runner dask and no address: LocalCluster worker processes (default: 2)",
    )
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="chunks encoded at once (default: 1, or 2 per Dask worker)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kwargs: dict[str, Any] = {
        "input_path": args.input,
        "text_column": args.text_column,
        "id_column": args.id_column,
        "encoder": args.encoder,
        "model": args.model,
        "pretrained": args.pretrained,
        "output": args.output,
        "cache_dir": args.cache_dir,
        "chunk_size": args.chunk_size,
        "batch_size": args.batch_size,
        "threshold": args.threshold,
        "dedupe_method": args.dedupe_method,
        "report_dir": args.report_dir,
        "skip_invalid": args.skip_invalid,
        "backend": args.backend,
        "gpu": args.gpu,
        "difference_model": args.difference_model,
        "min_probability": args.min_probability,
        "progress_bar": sys.stderr.isatty() and not args.no_progress,
        "max_in_flight": args.max_in_flight
        or (2 * args.dask_workers if args.runner == "dask" else 1),
    }
    flow_fn = embed_corpus
    if args.runner == "dask":
        flow_fn = embed_corpus.with_options(
            task_runner=dask_runner(args.dask_address, args.dask_workers)
        )
    try:
        with api_for_workers(args.runner == "dask"):
            result = flow_fn(**kwargs)
    except Exception as exc:  # the flow run has logged the traceback; say what went wrong
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(
        f"rows: {result.rows} (skipped {result.skipped}); cache: {result.cache_hits} hits, "
        f"{result.cache_misses} misses; {result.pairs} pairs in {result.clusters} clusters "
        f"({result.dedupe_method}); {result.seconds:.1f} s"
    )
    print(f"embeddings: {result.store_path}")
    print(f"pairs:      {result.pairs_csv}")
    print(f"report:     {result.report_html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
