"""The embed-corpus flow against a reference set (``--reference``) and incremental
(``--incremental``): the matches on disk and in the report, the refusals before any
encoding, and an incremental rerun that equals a full run."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from embetter_core.dedupe import state_path
from embetter_core.encoders import EncoderSpec
from embetter_core.store import EmbeddingStore
from flows.embed_corpus import DEMO_CORPUS, EmbedParams, embed_corpus

pytestmark = pytest.mark.slow


def demo_rows(start: int, stop: int) -> pd.DataFrame:
    frame = pd.read_csv(DEMO_CORPUS, keep_default_na=False, dtype=str)
    return frame.iloc[start:stop][["package", "text"]].reset_index(drop=True)


def run_flow(tmp_path: Path, input_path: Path, name: str = "run", **kwargs):
    defaults = {
        "input_path": str(input_path),
        "id_column": "package",
        "output": str(tmp_path / name / "emb.h5"),
        "cache_dir": str(tmp_path / "cache"),
        "report_dir": str(tmp_path / name / "report"),
        "chunk_size": 16,
        "threshold": 0.9,
    }
    return embed_corpus(**{**defaults, **kwargs})


def cosines(encoder, a: list[str], b: list[str]) -> np.ndarray:
    x, y = encoder.transform(a), encoder.transform(b)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return x.astype(np.float64) @ y.astype(np.float64).T


def flow_run_artifacts_and_logs(run_id) -> tuple[dict, list[str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async def read() -> tuple[dict, list[str]]:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
            )
            return {a.key: a for a in found}, [log.message for log in logs]

    return asyncio.run(read())


def test_reference_corpus_and_store_give_every_match(prefect_harness, tmp_path, sentence_encoder):
    corpus = demo_rows(0, 30)
    corpus_csv = tmp_path / "test.csv"
    corpus.to_csv(corpus_csv, index=False)
    reference = demo_rows(30, 60)
    copies = [3, 7, 11]  # rows of the corpus copied into the reference under other ids
    for row in copies:
        reference.loc[len(reference)] = [f"ref-{row}", corpus.loc[row, "text"]]
    reference_csv = tmp_path / "train.csv"
    reference.to_csv(reference_csv, index=False)

    # what a brute-force comparison of the same encoder's vectors finds
    sims = cosines(sentence_encoder, corpus["text"].tolist(), reference["text"].tolist())
    rows, refs = np.nonzero(sims >= 0.9)
    expected = {
        (corpus["package"][i], reference["package"][j]) for i, j in zip(rows, refs, strict=True)
    }
    assert {(corpus["package"][r], f"ref-{r}") for r in copies} <= expected

    state = run_flow(tmp_path, corpus_csv, reference=str(reference_csv), return_state=True)
    result = state.result()
    written = pd.read_csv(result.reference_pairs_csv, keep_default_na=False, dtype=str)
    assert list(written.columns) == ["id", "reference_id", "score", "text", "reference_text"]
    assert set(zip(written["id"], written["reference_id"], strict=True)) == expected
    assert len(written) == len(expected)  # each pair once
    scores = written["score"].astype(float)
    assert scores.is_monotonic_decreasing and (scores >= 0.9).all()
    by_pair = written.set_index(["id", "reference_id"])
    for row in copies:
        match = by_pair.loc[(corpus["package"][row], f"ref-{row}")]
        assert match["text"] == match["reference_text"] == corpus["text"][row]
        assert float(match["score"]) > 0.999
    assert result.reference_pairs_csv == str(tmp_path / "run" / "report" / "reference_pairs.csv")
    assert result.reference_rows_matched == len({i for i, _ in expected})
    page = Path(result.report_html).read_text()
    assert 'id="reference"' in page and "Against the reference" in page and "ref-7" in page
    assert "rows matching the reference" in page
    # the reference's embeddings went through the same encoder, into a store beside --output
    reference_store = tmp_path / "run" / "emb.reference.h5"
    with EmbeddingStore.open(reference_store) as st:
        assert st.ids == reference["package"].tolist()
        assert st.fingerprint == sentence_encoder.fingerprint()
    artifacts, _ = flow_run_artifacts_and_logs(state.state_details.flow_run_id)
    outputs = artifacts["embed-corpus-outputs"].data
    assert f"{result.reference_rows_matched} of 30 rows match the reference" in outputs
    assert "reference_pairs.csv" in outputs
    assert "rows matching the reference" in artifacts["embed-corpus-summary"].data

    # that store as the reference: the same pairs, no reference texts (a store holds none)
    again = run_flow(tmp_path, corpus_csv, name="again", reference=str(reference_store))
    from_store = pd.read_csv(again.reference_pairs_csv, keep_default_na=False, dtype=str)
    assert from_store[["id", "reference_id", "score"]].equals(
        written[["id", "reference_id", "score"]]
    )
    assert (from_store["reference_text"] == "").all()


def test_a_reference_store_of_another_encoder_is_refused_before_encoding(
    prefect_harness, tmp_path, sentence_encoder
):
    corpus_csv = tmp_path / "test.csv"
    demo_rows(0, 10).to_csv(corpus_csv, index=False)
    static = EncoderSpec(kind="static").build_local().fingerprint()
    wrong = [
        ("static.h5", static, 256, [static, sentence_encoder.fingerprint()]),
        ("narrow.h5", sentence_encoder.fingerprint(), 8, ["8 dimensions", "384"]),
    ]
    for name, fingerprint, dim, named in wrong:
        store = tmp_path / name
        with EmbeddingStore.create(store, n=2, dim=dim, fingerprint=fingerprint) as writer:
            writer.write(0, ["a", "b"], np.ones((2, dim), dtype=np.float32))
        cache_root = tmp_path / f"cache-{name}"
        with pytest.raises(ValueError) as err:
            run_flow(tmp_path, corpus_csv, reference=str(store), cache_dir=str(cache_root))
        message = str(err.value)
        assert str(store) in message
        for text in named:
            assert text in message
        assert not list(cache_root.rglob("cache.db"))  # nothing encoded
        assert not (tmp_path / "run" / "emb.h5").exists()


def test_incremental_rerun_equals_a_full_run(prefect_harness, tmp_path):
    v1 = demo_rows(0, 60)
    v1.loc[len(v1)] = ["copy-of-0", v1.loc[0, "text"]]
    v1_csv = tmp_path / "v1.csv"
    v1.to_csv(v1_csv, index=False)
    # v2: "copy-of-0" deleted, row 5 edited into a near-copy of row 6, six rows added
    v2 = v1[v1["package"] != "copy-of-0"].reset_index(drop=True)
    v2.loc[5, "text"] = v2.loc[6, "text"] + " Now also in English."
    added = demo_rows(60, 65)
    added.loc[len(added)] = ["copy-of-2", v2.loc[2, "text"]]
    v2 = pd.concat([v2, added], ignore_index=True)
    v2_csv = tmp_path / "v2.csv"
    v2.to_csv(v2_csv, index=False)
    output = tmp_path / "nightly" / "emb.h5"

    first = run_flow(tmp_path, v1_csv, name="nightly", incremental=True)
    assert first.incremental.startswith("full (no state")
    assert state_path(output).exists()
    state = run_flow(tmp_path, v2_csv, name="nightly", incremental=True, return_state=True)
    second = state.result()
    assert second.incremental.startswith("incremental: 7 new or edited rows (1 edited), 1 deleted")
    full = run_flow(tmp_path, v2_csv, name="full")
    assert full.incremental is None and full.reference_pairs_csv is None
    for name in ("pairs.csv", "removed.csv"):
        inc = (tmp_path / "nightly" / "report" / name).read_text()
        assert inc == (tmp_path / "full" / "report" / name).read_text(), name
    assert (second.pairs, second.clusters, second.removed) == (
        full.pairs,
        full.clusters,
        full.removed,
    )
    pairs = pd.read_csv(full.pairs_csv, keep_default_na=False, dtype=str)
    assert {v2["package"][5], v2["package"][6]} in [
        {a, b} for a, b in zip(pairs.id_a, pairs.id_b, strict=True)
    ]
    with EmbeddingStore.open(output) as inc, EmbeddingStore.open(full.store_path) as ref:
        np.testing.assert_array_equal(inc.kept, ref.kept)
    assert "dedupe run" in Path(second.report_html).read_text()

    # a corrupt state: a full run, and the run log says why
    state_path(output).write_bytes(b"not a state file")
    state = run_flow(tmp_path, v2_csv, name="nightly", incremental=True, return_state=True)
    third = state.result()
    assert (
        third.incremental.startswith("full (dedupe state") and "cannot be read" in third.incremental
    )
    assert (third.pairs, third.removed) == (full.pairs, full.removed)
    deadline = time.time() + 30
    while True:  # run logs reach the API in batches
        _, logs = flow_run_artifacts_and_logs(state.state_details.flow_run_id)
        said = [m for m in logs if "not used" in m and "running a full dedupe" in m]
        if said:
            break
        assert time.time() < deadline, logs
        time.sleep(0.5)
    time.sleep(2)  # a second copy would arrive in the same batch or the next
    _, logs = flow_run_artifacts_and_logs(state.state_details.flow_run_id)
    assert len([m for m in logs if "not used" in m and "running a full dedupe" in m]) == 1, logs


def test_outputs_never_overwrite_the_reference(tmp_path):
    corpus_csv = tmp_path / "test.csv"
    demo_rows(0, 5).to_csv(corpus_csv, index=False)
    reference = tmp_path / "report" / "reference_pairs.csv"
    reference.parent.mkdir()
    demo_rows(5, 10).to_csv(reference, index=False)
    base = {"input_path": str(corpus_csv), "output": str(tmp_path / "emb.h5")}
    with pytest.raises(
        ValidationError, match="reference_pairs.csv in --report-dir would overwrite"
    ):
        EmbedParams(**base, reference=str(reference), report_dir=str(tmp_path / "report"))
    store = tmp_path / "emb.h5"
    store.touch()
    with pytest.raises(ValidationError, match="--output would overwrite the input --reference"):
        EmbedParams(**base, reference=str(store))
    with pytest.raises(ValidationError, match="not found: .*missing.csv"):
        EmbedParams(**base, reference=str(tmp_path / "missing.csv"))
    with pytest.raises(ValidationError, match="is a folder of images but the input is a text"):
        EmbedParams(**base, reference=str(tmp_path / "report"))
    params = EmbedParams(**base, reference=str(tmp_path / "report" / "reference_pairs.csv"))
    assert params.output_paths()["the reference's store beside --output"] == str(
        tmp_path / "emb.reference.h5"
    )
    assert params.output_paths()["the dedupe state beside --output"] is None
    incremental = EmbedParams(**base, incremental=True)
    assert incremental.output_paths()["the dedupe state beside --output"] == str(
        tmp_path / "emb.dedupe-state.npz"
    )
