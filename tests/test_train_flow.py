"""The train_difference flow end to end on a small real pair file, in the Prefect test harness,
and its command line in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from embetter_core import DifferenceClassifier
from tests.test_model import debian_pairs

ROOT = Path(__file__).resolve().parent.parent


def write_pair_file(path: Path, n: int = 16, seed: int = 0) -> pd.DataFrame:
    """The pairs of :func:`tests.test_model.debian_pairs`, written as a pair file with its
    own column names."""
    pairs = debian_pairs(n, seed).rename(
        columns={"a": "first", "b": "second", "label": "same", "source": "src"}
    )
    pairs.to_csv(path, index=False)
    return pairs


@pytest.fixture
def pair_file(tmp_path) -> Path:
    path = tmp_path / "pairs.csv"
    write_pair_file(path)
    return path


def check_outputs(result: dict, model_path: Path, eval_path: Path, pairs: pd.DataFrame) -> None:
    assert model_path.exists() and eval_path.exists()
    written = json.loads(eval_path.read_text())
    assert written["n_train"] + written["n_test"] == len(pairs)
    for scorer in ("model", "cosine"):
        for key in ("f1", "roc_auc", "precision", "recall", "threshold"):
            assert isinstance(written[scorer][key], float), (scorer, key)
    assert written["model"]["threshold"] == 0.5
    assert result["model"]["f1"] == written["model"]["f1"]
    model = DifferenceClassifier.load(model_path)
    proba = model.predict_proba(pairs["first"], pairs["second"])[:, 1]
    assert proba[pairs["same"] == 1].mean() > proba[pairs["same"] == 0].mean()


def test_flow_end_to_end(prefect_harness, pair_file, tmp_path):
    from prefect.artifacts import Artifact

    from flows.train_difference import ARTIFACT_KEY, train_difference

    pairs = pd.read_csv(pair_file)
    output = tmp_path / "out" / "model.skops"
    result = train_difference(
        pairs=str(pair_file),
        text_a="first",
        text_b="second",
        label="same",
        output=str(output),
        cache_dir=str(tmp_path / "cache"),
        test_size=0.25,
        seed=0,
    )
    check_outputs(result, output, tmp_path / "out" / "eval.json", pairs)
    assert result["n_test"] == 8 and result["test_positives"] == 4
    assert not list(output.parent.glob(".*partial"))

    artifact = Artifact.get(ARTIFACT_KEY)
    assert artifact is not None
    assert "| DifferenceClassifier |" in artifact.data
    assert f"{result['n_train']} training pairs, {result['n_test']} test pairs" in artifact.data


def test_flow_grouped_split_and_eval_dir(prefect_harness, pair_file, tmp_path):
    from flows.train_difference import train_difference

    result = train_difference(
        pairs=str(pair_file),
        text_a="first",
        text_b="second",
        label="same",
        group="src",
        output=str(tmp_path / "m.skops"),
        eval_dir=str(tmp_path / "evals"),
        features=["absdiff", "product", "cosine"],
        seed=3,
    )
    written = json.loads((tmp_path / "evals" / "eval.json").read_text())
    assert written["grouped_by"] == "group" and written["test_groups"] >= 1
    assert written["features"] == ["absdiff", "product", "cosine"]
    assert DifferenceClassifier.load(tmp_path / "m.skops").features == (
        "absdiff",
        "product",
        "cosine",
    )
    assert result["n_train"] + result["n_test"] == 32


def test_flow_bad_input_names_the_column(prefect_harness, pair_file, tmp_path):
    from flows.train_difference import train_difference

    with pytest.raises(ValueError, match=r"pairs.csv' has no column\(s\) \['label'\]"):
        train_difference(
            pairs=str(pair_file), text_a="first", text_b="second", output=str(tmp_path / "m.skops")
        )
    assert not (tmp_path / "m.skops").exists()

    one_class = tmp_path / "one.csv"
    pd.read_csv(pair_file).assign(same=1).to_csv(one_class, index=False)
    with pytest.raises(ValueError, match=r"two classes .*got 1: \[1\]"):
        train_difference(
            pairs=str(one_class),
            text_a="first",
            text_b="second",
            label="same",
            output=str(tmp_path / "m.skops"),
        )
    assert not (tmp_path / "m.skops").exists()


@pytest.mark.slow
def test_cli_in_subprocess(prefect_harness, pair_file, tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT)}
    output = tmp_path / "cli" / "model.skops"
    args = [sys.executable, "-m", "flows.train_difference", str(pair_file)]
    args += ["--text-a", "first", "--text-b", "second", "--label", "same"]
    done = subprocess.run(
        [*args, "--output", str(output), "--eval-dir", str(tmp_path / "ev"), "--seed", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| cosine (tuned on train) |" in done.stdout
    check_outputs(
        {"model": json.loads((tmp_path / "ev" / "eval.json").read_text())["model"]},
        output,
        tmp_path / "ev" / "eval.json",
        pd.read_csv(pair_file),
    )

    bad = subprocess.run(
        [*args[:-2], "--label", "nope", "--output", str(tmp_path / "bad.skops")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2
    assert "has no column(s) ['nope']" in bad.stderr
    assert not (tmp_path / "bad.skops").exists()
