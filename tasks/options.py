"""The options every task here shares, in one place: ``@step("name")`` instead of
``@task(name=..., cache_policy=NO_CACHE, persist_result=False)``.

No task is cached or has its result persisted: the embedding cache is the pipeline's
journal, and a task's result (a chunk's vectors, a report of 100,000s of pairs) would only
be copied into Prefect's result storage. ``retrying=True`` adds the shared retry policy
(:data:`tasks.retry.RETRYING`) for tasks that touch models, disks or remote GPUs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from tasks.retry import RETRYING

P = ParamSpec("P")
R = TypeVar("R")

#: What every task here is given: no cache, no persisted result.
SHARED: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


def step(
    name: str | None = None, *, retrying: bool = False, **options: Any
) -> Callable[[Callable[P, R]], Task[P, R]]:
    """``prefect.task`` with the shared options: the task ``name`` (None: the function's),
    the retry policy when ``retrying``, and any other ``@task`` ``options``
    (``task_run_name=...``).

    >>> @step("double", retrying=True)
    ... def double(x: int) -> int:
    ...     return 2 * x
    >>> double.name, double.retries, double.persist_result, double.fn(2)
    ('double', 3, False, 4)
    """
    chosen = {**SHARED, **(RETRYING if retrying else {}), **options}
    if name is not None:
        chosen["name"] = name
    return task(**chosen)
