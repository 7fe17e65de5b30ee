"""The embed flow's checks before any work: each fails fast, naming the option to fix, on
what would otherwise fail after minutes of encoding (an output folder that cannot be
written, Modal without a token, a difference model or reference store of another encoder, a
model that is not on this disk). The command line runs them before its Prefect server
starts, and the flow again at its start (a deployment's run has no command line)."""

from __future__ import annotations

import os
from pathlib import Path

from embetter_core import store as store_lib
from embetter_core.corpus import check_deduplicated_path
from embetter_core.dedupe import check_reference_store
from embetter_core.encoders import EncoderSpec
from flows.cli import check_model_loads
from flows.embed_params import EmbedParams, is_store
from flows.embed_steps import cache_folder
from tasks.embed import cached_encoder


def check_before_work(
    params: EmbedParams, spec: EncoderSpec, cache: str, load_models: bool = True
) -> None:
    """Fail before any work on what would fail later: an output or cache folder that cannot
    be written, Modal without a token or network, a difference model of another encoder, a
    model that is not on this disk (loaded now into the encoder the chunks use, unless
    ``load_models`` is false: the command line loads them while its server starts, see
    :func:`check_models_load`)."""
    check_outputs(params)
    check_backend(spec)
    rescore_spec = params.rescore_spec()
    check_difference_model(params.difference_model, rescore_spec or spec, params.rescore)
    if load_models:
        check_models_load(params, spec, cache)
    check_reference(params.reference, spec, cache)


def check_models_load(params: EmbedParams, spec: EncoderSpec, cache: str) -> None:
    """Load the run's models (the encoder's, and the rescore encoder's) into the encoders
    the chunks use; :class:`~embetter_core.errors.ModelUnavailableError` names a model that
    is not on this disk."""
    if spec.backend == "local":
        check_model_loads(cached_encoder(spec, cache).encoder)
    rescore_spec = params.rescore_spec()
    if rescore_spec is not None:
        rescore_cache = cache_folder(params.cache_dir, rescore_spec)
        check_model_loads(cached_encoder(rescore_spec, rescore_cache).encoder)


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


def check_backend(spec: EncoderSpec) -> None:
    """With Modal offload, stop before any work when no token or network is there."""
    if spec.backend == "modal":
        from embetter_core.offload import APP_NAME, check_modal_ready

        check_modal_ready(APP_NAME)
