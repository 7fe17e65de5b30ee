"""The retry policy shared by tasks that touch models, disks or remote GPUs.

Transient failures (a remote GPU call, a busy disk) are retried with exponential backoff and
jitter; bad input and missing set-up are not: retrying them only delays the error.
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

RETRIES = 3
RETRY_DELAYS = exponential_backoff(backoff_factor=2)  # 2 s, 4 s, 8 s
RETRY_JITTER = 0.5  # each delay varies by up to +-50 %

# Errors that say the input or the set-up is wrong: a retry cannot fix them.
PERMANENT: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    FileNotFoundError,
    PermissionError,
    NotImplementedError,
)


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry unless the error is a permanent one."""
    try:
        state.result()
    except PERMANENT:
        return False
    except Exception as exc:
        return type(exc).__name__ != "ModalUnavailableError"
    return True


# Keyword arguments for ``@task``: a task that retries transient failures with backoff.
RETRYING: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": is_transient,
}
