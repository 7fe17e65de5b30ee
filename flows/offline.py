"""Offline, quiet defaults for running the flows where there may be no network.

Nothing here runs on import. The command lines (``python -m flows.embed_corpus``,
``python -m flows.train_difference``) and the test configuration call
:func:`use_offline_defaults`; ``make`` runs its commands through ``python -m flows.offline``;
deployments set the same variables in ``prefect.yaml`` (``job_variables: env:``). From
Python, call it before running a flow, or leave it out to let Hugging Face download a model
named on the hub.

    python -m flows.offline COMMAND [ARG ...]   # run COMMAND with these defaults
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

OFFLINE_DEFAULTS: dict[str, str] = {
    # Without PREFECT_API_URL Prefect starts a temporary server per process; in a brand-new
    # PREFECT_HOME its first start can exceed the default 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    # There may be no network: send no analytics.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # Models come from local files (the packaged MiniLM, a checkpoint): never ask a hub.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # The tokenizers' thread pool does not survive the forks of Dask and Prefect workers.
    "TOKENIZERS_PARALLELISM": "false",
}


def use_offline_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set each variable of :data:`OFFLINE_DEFAULTS` that is not set yet (values already
    there win) in ``environ`` (default: ``os.environ``); returns the ones it set.

    Call it before a model loads: Hugging Face reads its variables once, when imported.

    >>> env = {"HF_HUB_OFFLINE": "0"}
    >>> sorted(use_offline_defaults(env))  # doctest: +NORMALIZE_WHITESPACE
    ['DO_NOT_TRACK', 'PREFECT_SERVER_ANALYTICS_ENABLED',
     'PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS', 'TOKENIZERS_PARALLELISM',
     'TRANSFORMERS_OFFLINE']
    >>> env["HF_HUB_OFFLINE"], env["DO_NOT_TRACK"]
    ('0', '1')
    """
    env = os.environ if environ is None else environ
    added = {key: value for key, value in OFFLINE_DEFAULTS.items() if key not in env}
    env.update(added)
    if environ is None and added and "prefect.context" in sys.modules:
        # Prefect reads its settings once, when imported: make it read them again.
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
    return added


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.offline COMMAND [ARG ...]``: run COMMAND with the defaults set."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 0 if argv else 2
    use_offline_defaults()
    os.execvp(argv[0], argv)
    return 127  # not reached: execvp replaces this process or raises


if __name__ == "__main__":
    sys.exit(main())
