"""Dedupe: near-duplicate search over a committed store."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from embetter_core.dedupe import DuplicateReport, find_duplicates
from embetter_core.store import EmbeddingStore


@task(name="find-duplicates", cache_policy=NO_CACHE, persist_result=False)
def find_duplicates_in_store(
    store_path: str, threshold: float, method: str = "auto"
) -> DuplicateReport:
    """Near-duplicate pairs and clusters of the vectors in ``store_path``."""
    with EmbeddingStore.open(store_path) as st:
        return find_duplicates(st.dataset, ids=st.ids, threshold=threshold, method=method)
