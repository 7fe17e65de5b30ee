"""The main flow: ingest → embed (cached, in chunks) → persist HDF5 → dedupe → report.

Run it ad hoc (without INPUT it embeds the bundled demo corpus)::

    python -m flows.embed_corpus data.csv --text-column text --output out/data.h5

or from a deployment (see ``prefect.yaml``). Its parameters are declared once, as the
fields of :class:`EmbedParams`: they make the flow's signature (and so the Prefect UI's
form and a deployment's parameters) and the command-line options.
``python -m flows.embed_corpus --help`` lists every option.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture
from pydantic import BaseModel, Field, field_validator, model_validator

from embetter_core import store as store_lib
from embetter_core.corpus import Corpus, corpus_kind
from embetter_core.dedupe import DEFAULT_THRESHOLD, DuplicateReport
from embetter_core.files import check_outputs_apart
from embetter_core.keep import KeepRule, keep_values_for
from embetter_core.outputs import check_deduplicated_path
from embetter_core.spec import ENCODERS, EncoderSpec, encoder_class
from embetter_core.store import StoreWriter
from flows.cli import Stopped, check_model_loads, error_line, stop_on_signals, temporary_server
from flows.offline import use_offline_defaults
from flows.params import Cli, add_options, flow_with_params, options_given
from tasks.dedupe import find_duplicates_in_store
from tasks.embed import cached_encoder, embed_chunk
from tasks.ingest import ingest
from tasks.persist import commit_store, create_store, persist_chunk
from tasks.report import EmbedResult, publish_report
from tasks.score import score_candidate_pairs

__all__ = ["EmbedParams", "EmbedResult", "embed_corpus", "main"]

DEMO_CORPUS = (
    Path(__file__).resolve().parent.parent / "embetter_core" / "data" / "debian-sample.csv.gz"
)


class EmbedParams(BaseModel):
    """The flow's parameters, validated together (paths, ranges, choices).

    Each field is a parameter of :func:`embed_corpus` and an option of the command line
    (``--field-name``); its description is the option's help and the Prefect UI's.

    >>> EmbedParams(chunk_size=500).id_column  # no input: the demo corpus, named by package
    'package'
    """

    input_path: Annotated[str | None, Cli(positional=True, flag="input")] = Field(
        None,
        description="corpus file (.csv[.gz], .parquet, .jsonl[.gz], .txt) or a folder of "
        "images; default: the bundled demo corpus (2,000 Debian package descriptions)",
    )
    text_column: str = Field("text", description="column holding the text")
    id_column: str | None = Field(
        None, description="column holding unique ids (default: row numbers)"
    )
    encoder: Literal[tuple(ENCODERS)] = Field(  # type: ignore[valid-type]  # registered kinds
        "sentence", description="sentence-transformers for text, or open_clip for images"
    )
    model: str | None = Field(
        None,
        description="model name or local path "
        "(default: all-MiniLM-L6-v2 for sentence, ViT-B-32 for clip)",
    )
    pretrained: str | None = Field(
        None,
        description="clip only: open_clip pretrained tag or local checkpoint (default: openai)",
    )
    output: str = Field("out/embeddings.h5", description="the .h5 store to write")
    cache_dir: str = Field(
        "out/cache", description="embedding cache root; one sub-folder per model"
    )
    chunk_size: int = Field(1000, ge=1, description="rows per chunk/task")
    batch_size: int = Field(32, ge=1, description="items per forward pass")
    threshold: float = Field(
        DEFAULT_THRESHOLD, gt=0, le=1, description="cosine similarity for a near-duplicate pair"
    )
    dedupe_method: Literal["auto", "exact", "ann"] = Field(
        "auto", description="exact blocked search, approximate (ann), or auto by corpus size"
    )
    report_dir: str = Field(
        "out/report", description="folder for pairs.csv, removed.csv and report.html"
    )
    keep: str = Field(
        "first",
        description="which row of near-duplicates is kept: first or last (input order), "
        "longest or shortest (text), or column:NAME[:desc|asc] (highest/lowest value of a "
        "numeric or date column); ties go to the first",
    )
    write_deduplicated: str | None = Field(
        None,
        description="also write the corpus without the removed rows to this path, in the "
        "input's format (for an image folder: a .txt of the kept paths)",
    )
    skip_invalid: bool = Field(
        False,
        description="drop empty/duplicate/unreadable rows and list them in the report "
        "instead of failing",
    )
    difference_model: str | None = Field(
        None,
        description="a DifferenceClassifier saved by flows.train_difference (.skops): adds "
        "each pair's probability to the report",
    )
    min_probability: float | None = Field(
        None,
        ge=0,
        le=1,
        description="with a difference model: keep only pairs whose probability is at least this",
    )
    backend: Literal["local", "modal"] = Field(
        "local", description="encode here, or on Modal GPUs (needs `modal setup`)"
    )
    gpu: str = Field("any", description="Modal GPU type with the modal backend, e.g. A10G")
    max_in_flight: int = Field(
        1,
        ge=1,
        description="chunks encoded at once (default: 1; on the command line with "
        "--runner dask, 2 per Dask worker)",
    )
    progress_bar: Annotated[bool, Cli(hidden=True)] = Field(
        False,
        description="show a progress bar on stderr (the command line does on a terminal, "
        "unless --no-progress)",
    )

    @model_validator(mode="before")
    @classmethod
    def _demo_corpus(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("input_path") is None:
            data = {**data, "input_path": str(DEMO_CORPUS)}
            if data.get("id_column") is None:
                data["id_column"] = "package"  # name the demo rows by their Debian package
        return data

    @field_validator("output")
    @classmethod
    def _h5_suffix(cls, value: str) -> str:
        if not value.endswith((".h5", ".hdf5")):
            raise ValueError(f"output must be an .h5 file, got {value!r}")
        return value

    @field_validator("keep")
    @classmethod
    def _keep_rule(cls, value: str) -> str:
        return str(KeepRule.parse(value))  # a bad rule fails here, before any work

    @field_validator("input_path", "difference_model")
    @classmethod
    def _exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).exists():
            raise ValueError(f"not found: {value}")
        return value

    @field_validator("cache_dir")
    @classmethod
    def _cache_is_a_folder(cls, value: str) -> str:
        if Path(value).exists() and not Path(value).is_dir():
            raise ValueError(f"{value} is a file; expected a folder for the embedding cache")
        return value

    @model_validator(mode="after")
    def _encoder_reads_the_corpus(self) -> EmbedParams:
        assert self.input_path is not None  # the demo corpus when none is given
        kind = corpus_kind(self.input_path)
        if kind not in encoder_class(self.encoder).modalities:
            what = "a folder of images" if kind == "image" else "a text corpus"
            readers = [k for k in ENCODERS if kind in encoder_class(k).modalities]
            raise ValueError(
                f"{self.input_path} is {what}, which the {self.encoder!r} encoder cannot read: "
                f"use encoder={readers[0]!r} (--encoder {readers[0]})"
            )
        return self

    @model_validator(mode="after")
    def _outputs_apart(self) -> EmbedParams:
        check_outputs_apart(self.input_paths(), self.output_paths())
        return self

    @model_validator(mode="after")
    def _probability_needs_model(self) -> EmbedParams:
        if self.min_probability is not None and not self.difference_model:
            raise ValueError("min_probability needs a difference_model to score the pairs")
        return self

    def input_paths(self) -> dict[str, str | None]:
        """The files the run reads, named as a user knows them."""
        return {"corpus": self.input_path, "--difference-model": self.difference_model}

    def output_paths(self) -> dict[str, str | None]:
        """Every file the run writes, named as a user knows them: one refused before any work
        if it would overwrite an input or another output. A new output is one line here."""
        report = Path(self.report_dir)
        return {
            "--output": self.output,
            "pairs.csv in --report-dir": str(report / "pairs.csv"),
            "removed.csv in --report-dir": str(report / "removed.csv"),
            "report.html in --report-dir": str(report / "report.html"),
            "--write-deduplicated": self.write_deduplicated,
        }

    def encoder_spec(self) -> EncoderSpec:
        """The encoder these parameters describe."""
        return EncoderSpec(
            kind=self.encoder,
            model=self.model,
            pretrained=self.pretrained,
            batch_size=self.batch_size,
            backend=self.backend,
            gpu=self.gpu,
        )


@flow_with_params(EmbedParams, name="embed-corpus", validate_parameters=True)
def embed_corpus(params: EmbedParams) -> EmbedResult:
    """Embed a corpus into an HDF5 store and report its near-duplicates.

    Only what the cache lacks is encoded; a rerun after a crash reads the cache and
    finishes. ``input_path=None`` runs on the bundled demo corpus (2,000 Debian package
    descriptions). ``max_in_flight`` chunks are encoded at once (raise it with a Dask runner).
    With ``difference_model`` (a saved ``DifferenceClassifier``) each pair gets the model's
    probability; ``min_probability`` then keeps only the pairs the model calls duplicates.
    """
    started = time.perf_counter()
    spec = params.encoder_spec()
    fingerprint = spec.build_local().fingerprint()
    cache = cache_folder(params.cache_dir, spec, fingerprint)
    check_before_work(params, spec, cache)

    corpus: Corpus = ingest(
        params.input_path, params.text_column, params.id_column, params.skip_invalid
    )
    keep_values = keep_values_for(params.keep, corpus)  # a bad --keep column fails here
    writer, counts = embed_and_persist(corpus, spec, fingerprint, cache, params)
    store_path: Path = commit_store(writer)
    report: DuplicateReport = find_duplicates_in_store(
        str(store_path), params.threshold, params.dedupe_method, params.keep, keep_values
    )
    report, probabilities = apply_difference_model(report, corpus, params, spec, cache)
    return publish_report(
        report,
        corpus,
        store_path,
        counts,
        report_dir=params.report_dir,
        encoder=fingerprint,
        started=started,
        difference_model=params.difference_model,
        min_probability=params.min_probability,
        probabilities=probabilities,
        deduplicated=params.write_deduplicated,
        id_column=params.id_column,
    )


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
    check_difference_model(params.difference_model, spec)
    if spec.backend == "local":
        check_model_loads(cached_encoder(spec, cache).encoder)


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
        as_items([text_of[a] for a, _, _ in report.pairs]),
        as_items([text_of[b] for _, b, _ in report.pairs]),
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
) -> tuple[StoreWriter, dict[str, int]]:
    """Embed the corpus chunk by chunk (at most ``max_in_flight`` at once), writing each
    chunk to the temporary store as it completes. Returns the writer and cache counts.

    Chunks come from :meth:`Corpus.encode_chunks`: rows of similar length encode together,
    as in one ``encode`` call, and each vector is written back to its row.
    """
    logger = get_run_logger()
    chunks = corpus.encode_chunks(params.chunk_size)
    as_items = encoder_items(corpus, spec)
    progress_id = create_progress_artifact(
        progress=0.0, key="embed-corpus-progress", description="Chunks embedded and persisted"
    )
    bar = None
    if params.progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=len(corpus), unit="row", desc="embedding", file=sys.stderr)
    totals = {"hits": 0, "misses": 0}
    done = 0
    writer: StoreWriter | None = None
    pending: deque[tuple[int, Any, PrefectFuture[tuple[np.ndarray, dict[str, int]]]]] = deque()

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
            items = as_items([corpus.items[i] for i in rows])
            future = embed_chunk.submit(items, number, spec, cache)
            pending.append((number, rows, future))
            if len(pending) >= params.max_in_flight:
                drain_one()
        while pending:
            drain_one()
    finally:
        if bar is not None:
            bar.close()
    logger.info("cache: %d hits, %d misses", totals["hits"], totals["misses"])
    assert writer is not None  # a corpus has at least one row
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


# -- the command line ---------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command line: one option per field of :class:`EmbedParams`, and how to run."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.embed_corpus",
        description="Embed a corpus into an HDF5 store and write a near-duplicate report "
        "(a Prefect flow run). Without INPUT, runs on the bundled demo corpus.",
    )
    add_options(parser, EmbedParams)
    run = parser.add_argument_group("how to run")
    run.add_argument(
        "--runner",
        choices=["thread", "dask"],
        default="thread",
        help="Prefect task runner for embed_chunk: threads here, or a Dask cluster",
    )
    run.add_argument(
        "--dask-address",
        default=None,
        help="with --runner dask: scheduler of an existing cluster, e.g. tcp://HOST:8786 "
        "(default: start a LocalCluster)",
    )
    run.add_argument(
        "--dask-workers",
        type=_positive,
        default=2,
        help="with --runner dask and no address: LocalCluster worker processes (default: 2)",
    )
    run.add_argument(
        "--no-progress", action="store_true", help="no progress bar even on a terminal"
    )
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the flow from the command line; prints the output paths, or the error (status 1).

    Parameters and outputs are checked, and the model loaded, before the temporary Prefect
    server starts; SIGTERM / Ctrl-C stop the run and its server (status 128 + signal).
    """
    use_offline_defaults()
    args = build_parser().parse_args(argv)
    given = options_given(args, EmbedParams)
    given["progress_bar"] = sys.stderr.isatty() and not args.no_progress
    if args.runner == "dask":
        given.setdefault("max_in_flight", 2 * args.dask_workers)
    try:
        params = EmbedParams(**given)
        spec = params.encoder_spec()
        check_before_work(params, spec, cache_folder(params.cache_dir, spec))
    except (ValueError, OSError, RuntimeError) as exc:  # pydantic's ValidationError too
        print(f"error: {error_line(exc, EmbedParams)}", file=sys.stderr)
        return 1
    flow_fn = embed_corpus
    if args.runner == "dask":
        flow_fn = embed_corpus.with_options(
            task_runner=dask_runner(args.dask_address, args.dask_workers)
        )
    try:
        with stop_on_signals(), temporary_server():
            result = flow_fn(**given)
    except Stopped as exc:
        print(
            f"stopped by {exc}: the run is marked crashed and its temporary server stopped; "
            "the same command finishes it from the cache",
            file=sys.stderr,
        )
        return exc.exit_code
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
    print(f"removed:    {result.removed_csv} ({result.removed} rows)")
    if result.deduplicated:
        print(f"deduplicated corpus: {result.deduplicated}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
