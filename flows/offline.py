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

#: Loggers whose records reach a flow run's logs (the Prefect UI), besides Prefect's own: the
#: library's warnings, such as a cached vector that failed its checksum and was re-encoded.
#: :func:`use_offline_defaults` appends them to ``PREFECT_LOGGING_EXTRA_LOGGERS``.
RUN_LOGGERS: tuple[str, ...] = ("embetter_core",)
EXTRA_LOGGERS = "PREFECT_LOGGING_EXTRA_LOGGERS"
RUN_LOG_DEFAULTS: dict[str, str] = {
    # Outside a flow run (a model check before it, a library call) such a record goes to the
    # console only; without this Prefect adds a warning that it did not reach the API.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


def use_offline_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set each variable of :data:`OFFLINE_DEFAULTS` and :data:`RUN_LOG_DEFAULTS` that is not
    set yet (values already there win) in ``environ`` (default: ``os.environ``), and append
    :data:`RUN_LOGGERS` to ``PREFECT_LOGGING_EXTRA_LOGGERS`` (a user's loggers stay); returns
    what it set.

    Call it before a model loads: Hugging Face reads its variables once, when imported.
    Prefect reads its own when imported too: with ``os.environ`` they are read again, and
    the run loggers attached to Prefect's handlers as Prefect would have.

    >>> env = {"HF_HUB_OFFLINE": "0", "PREFECT_LOGGING_EXTRA_LOGGERS": "mylib"}
    >>> sorted(use_offline_defaults(env))  # doctest: +NORMALIZE_WHITESPACE
    ['DO_NOT_TRACK', 'PREFECT_LOGGING_EXTRA_LOGGERS', 'PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW',
     'PREFECT_SERVER_ANALYTICS_ENABLED', 'PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS',
     'TOKENIZERS_PARALLELISM', 'TRANSFORMERS_OFFLINE']
    >>> env["HF_HUB_OFFLINE"], env["DO_NOT_TRACK"], env["PREFECT_LOGGING_EXTRA_LOGGERS"]
    ('0', '1', 'mylib,embetter_core')
    """
    env = os.environ if environ is None else environ
    defaults = {**OFFLINE_DEFAULTS, **RUN_LOG_DEFAULTS}
    added = {key: value for key, value in defaults.items() if key not in env}
    names = [n.strip() for n in env.get(EXTRA_LOGGERS, "").split(",") if n.strip()]
    if missing := [name for name in RUN_LOGGERS if name not in names]:
        added[EXTRA_LOGGERS] = ",".join([*names, *missing])
    env.update(added)
    if environ is None and added and "prefect.context" in sys.modules:
        # Prefect reads its settings once, when imported: make it read them again.
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
    if environ is None:
        attach_run_loggers()
    return added


def attach_run_loggers() -> None:
    """Send :data:`RUN_LOGGERS`' records to Prefect's run-log handlers now, if Prefect has
    configured logging in this process already.

    Prefect attaches the loggers named in ``PREFECT_LOGGING_EXTRA_LOGGERS`` to the handlers
    of its ``prefect.extra`` logger (the API handler: the run's logs in the UI) only while it
    configures logging, at ``import prefect``; a command line that sets the variable after
    importing Prefect attaches them here the same way. Attaching twice adds nothing.
    """
    configuration = sys.modules.get("prefect.logging.configuration")
    if configuration is None or not configuration.PROCESS_LOGGING_CONFIG:
        return  # not configured yet: Prefect reads the variable when it is
    import logging

    # only Prefect's own handlers (the API handler): another library or a test harness may
    # have added its own to prefect.extra, which would then see each record twice
    ours = [
        h
        for h in logging.getLogger("prefect.extra").handlers
        if type(h).__module__.startswith("prefect.")
    ]
    for name in RUN_LOGGERS:
        for handler in ours:
            logging.getLogger(name).addHandler(handler)  # a handler it has already: no-op


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
