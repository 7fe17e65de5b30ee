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
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.utilities.annotations import quote

from embetter_core.corpus import Corpus
from embetter_core.dedupe import DuplicateReport
from flows.checks import check_before_work, check_models_load
from flows.cli import Stopped, error_line, stop_on_signals, temporary_server
from flows.embed_params import DEMO_CORPUS, EmbedParams
from flows.embed_report import EmbedResult, publish_report
from flows.embed_steps import (
    apply_difference_model,
    cache_folder,
    embed_and_persist,
    embed_reference,
    ingest_reference,
    match_reference,
    rescore_candidates,
)
from flows.offline import use_offline_defaults
from flows.params import add_options, flow_with_params, options_given
from tasks.dedupe import find_duplicates_in_store
from tasks.incremental import find_duplicates_incremental_in_store
from tasks.ingest import ingest, keep_values
from tasks.persist import commit_store

__all__ = [
    "DEMO_CORPUS",
    "EmbedParams",
    "EmbedResult",
    "build_parser",
    "cache_folder",
    "embed_corpus",
    "main",
]


@flow_with_params(EmbedParams, name="embed-corpus", validate_parameters=True)
def embed_corpus(params: EmbedParams) -> EmbedResult:
    """Embed a corpus into an HDF5 store and report its near-duplicates.

    Only what the cache lacks is encoded; a rerun after a crash reads the cache and
    finishes. ``input_path=None`` runs on the bundled demo corpus (2,000 Debian package
    descriptions). ``max_in_flight`` chunks are encoded at once (raise it with a Dask runner).
    With ``difference_model`` (a saved ``DifferenceClassifier``) each pair gets the model's
    probability; ``min_probability`` then keeps only the pairs the model calls duplicates.
    With ``reference`` (a corpus file, embedded like the input, or an earlier run's store)
    every (row, reference row) pair at the threshold goes to ``reference_pairs.csv``; with
    ``incremental`` the dedupe searches only new and edited rows, reusing the state file the
    last run left beside the store. With ``rescore`` (``encoder="static", rescore="sentence"``)
    only the rows in a first-stage candidate pair are encoded again, and the second encoder
    decides. ``threshold=None`` is the deciding encoder's recommended threshold.
    """
    started = time.perf_counter()
    spec = params.encoder_spec()
    fingerprint = spec.build_local().fingerprint()
    cache = cache_folder(params.cache_dir, spec, fingerprint)
    check_before_work(params, spec, cache)
    threshold, threshold_source = params.threshold_choice()
    get_run_logger().info("threshold %g: %s", threshold, threshold_source)

    corpus: Corpus = ingest(
        params.input_path, params.text_column, params.id_column, params.skip_invalid
    )
    reference_corpus = ingest_reference(params)  # a bad reference file fails here
    values = keep_values(params.keep, quote(corpus))  # a bad --keep column fails here
    writer, counts = embed_and_persist(corpus, spec, fingerprint, cache, params)
    store_path: Path = commit_store(writer)
    reference_store = embed_reference(reference_corpus, spec, fingerprint, cache, params)
    rescore_spec = params.rescore_spec()
    first_threshold = (
        threshold if rescore_spec is None else spec.encoder_class().candidate_threshold
    )
    report: DuplicateReport
    if params.incremental:  # only new and edited rows are searched; the same result
        method = params.dedupe_method
        if method == "partitioned":
            get_run_logger().warning(
                "--incremental with --dedupe-method partitioned runs the ann engine in memory: "
                "an incremental run searches its new rows against the old ones held in "
                "memory, so the partition files cannot serve the next run"
            )
            method = "ann"
        report = find_duplicates_incremental_in_store(
            str(store_path), threshold, method, params.keep, quote(values)
        )
    else:  # search no lower than it decides, unless the review page should reach below
        report = find_duplicates_in_store(
            str(store_path),
            first_threshold,
            params.dedupe_method,
            params.keep,
            quote(values),
            floor=first_threshold if params.review_floor is None else params.review_floor,
            memory_budget=params.memory_budget,
            work_dir=params.dedupe_work_dir,
            on_dask=_on_dask(),
        )
    decider, decider_cache, two_stage = spec, cache, None
    if rescore_spec is not None:  # the rows in a first-stage pair, decided by a better encoder
        decider, decider_cache = rescore_spec, cache_folder(params.cache_dir, rescore_spec)
        report, two_stage = rescore_candidates(
            report, corpus, params, decider, decider_cache, threshold
        )
    report, probabilities = apply_difference_model(report, corpus, params, decider, decider_cache)
    against = match_reference(report, corpus, reference_corpus, store_path, reference_store, params)
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
        reference=against,
        spreadsheet_safe=params.spreadsheet_safe,
        threshold_source=threshold_source,
        two_stage=two_stage,
    )


def _on_dask() -> bool:
    """Whether this flow run's task runner is a Dask cluster (the partitioned dedupe then
    runs its cells there)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    runner = getattr(context, "task_runner", None)
    return type(runner).__name__ == "DaskTaskRunner"


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

    Parameters and outputs are checked before the temporary Prefect server starts, the model
    loaded while it starts (a model not on this disk stops the run before any work);
    SIGTERM / Ctrl-C stop the run and its server (status 128 + signal).
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
        cache = cache_folder(params.cache_dir, spec)
        check_before_work(params, spec, cache, load_models=False)
    except (ValueError, OSError, RuntimeError) as exc:  # pydantic's ValidationError too
        print(f"error: {error_line(exc, EmbedParams)}", file=sys.stderr)
        return 1
    flow_fn = embed_corpus
    if args.runner == "dask":
        flow_fn = embed_corpus.with_options(
            task_runner=dask_runner(args.dask_address, args.dask_workers)
        )
    # the models load while the server starts (seconds each); the flow waits for them, and a
    # model that is not on this disk stops the run before any work, as a check would
    loading = ThreadPoolExecutor(1, thread_name_prefix="model-load")
    models = loading.submit(check_models_load, params, spec, cache)
    loading.shutdown(wait=False)
    try:
        with stop_on_signals(), temporary_server():
            waited = time.perf_counter()
            try:
                models.result()
            except (ValueError, OSError, RuntimeError) as exc:
                print(f"error: {error_line(exc, EmbedParams)}", file=sys.stderr)
                return 1
            if (waited := time.perf_counter() - waited) > 0.05:
                print(f"model load: {waited:.2f} s after the server had started", file=sys.stderr)
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
    print(f"threshold:  {result.threshold:g} — {result.threshold_source}")
    if result.rescored_rows is not None:
        print(
            f"two-stage:  {result.rescored_rows} of {result.rows} rows re-encoded with "
            f"--rescore {args.rescore}"
        )
    print(f"embeddings: {result.store_path}")
    print(f"pairs:      {result.pairs_csv}")
    print(f"report:     {result.report_html}")
    print(f"review:     {result.review_html}")
    print(f"removed:    {result.removed_csv} ({result.removed} rows)")
    if result.deduplicated:
        print(f"deduplicated corpus: {result.deduplicated}")
    if result.reference_pairs_csv:
        print(
            f"reference:  {result.reference_pairs_csv} "
            f"({result.reference_rows_matched} rows match the reference)"
        )
    if result.incremental:
        print(f"dedupe run: {result.incremental}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
