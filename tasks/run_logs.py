"""The log bridge: a library logger's records copied into the current Prefect run's log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prefect import get_run_logger


@contextlib.contextmanager
def logs_in_run(source: logging.Logger, level: int = logging.INFO) -> Iterator[None]:
    """Copy ``source``'s records at ``level`` and above into the current Prefect run's log
    (a library logs to its own logger, which the run log does not show), unless Prefect
    sends them there already (``PREFECT_LOGGING_EXTRA_LOGGERS``, which
    :func:`flows.offline.use_offline_defaults` sets): then each record would show twice."""
    if _reaches_api(source):
        yield
        return
    run_logger = get_run_logger()

    class ToRunLog(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            run_logger.log(record.levelno, "%s", record.getMessage())

    handler = ToRunLog(level)
    before = source.level
    if source.getEffectiveLevel() > level:
        source.setLevel(level)
    source.addHandler(handler)
    try:
        yield
    finally:
        source.removeHandler(handler)
        source.setLevel(before)


def _reaches_api(source: logging.Logger) -> bool:
    """Whether ``source`` (or a logger it propagates to) has Prefect's API log handler."""
    from prefect.logging.handlers import APILogHandler

    logger: logging.Logger | None = source
    while logger is not None:
        if any(isinstance(h, APILogHandler) for h in logger.handlers):
            return True
        logger = logger.parent if logger.propagate else None
    return False
