"""The deduplicated corpus (embetter_core.corpus.writing) and the keep rules read from a corpus file
(embetter_core.dedupe.keep): every input format, real MiniLM vectors, row counts, bad input."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from embetter_core.corpus import (
    check_deduplicated_path,
    column_values,
    keep_values_for,
    read_corpus,
    write_deduplicated,
)
from embetter_core.dedupe import find_duplicates
from embetter_core.errors import CorpusError, DuplicateSearchError, MissingColumnError

TEXTS = [
    "A fast embedding cache for text corpora.",
    "Prefect flows schedule nightly jobs.",
    "A fast embedding cache for text corpora.",  # exact duplicate of row 0
    "A quick embedding cache for text corpora.",  # near-duplicate of row 0
    "Bananas are yellow, and they grow in bunches.",
    "Prefect flows schedule the nightly jobs.",  # near-duplicate of row 1
    "Near-duplicate detection with cosine similarity.",
]


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "key": [f"k{i}" for i in range(len(TEXTS))],
            "text": TEXTS,
            "stars": [1.5, 2.0, 9.0, 4.0, 3.0, 1.0, 0.5],
            "note": ["a, b", 'say "hi"', "line\nbreak", "", "NA", "x", "y"],
        }
    )


def write(fmt: str, folder) -> tuple:
    df = frame()
    if fmt == "csv":
        path = folder / "in.csv"
        df.to_csv(path, index=False)
    elif fmt == "csv.gz":
        path = folder / "in.csv.gz"
        df.to_csv(path, index=False, compression="gzip")
    elif fmt == "parquet":
        path = folder / "in.parquet"
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    elif fmt == "jsonl":
        path = folder / "in.jsonl"
        lines = [json.dumps(r, ensure_ascii=False) for r in df.to_dict("records")]
        path.write_text("\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]) + "\n")  # a blank
    elif fmt == "jsonl.gz":
        path = folder / "in.jsonl.gz"
        with gzip.open(path, "wt") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in df.to_dict("records"))
    else:
        path = folder / "in.txt"
        path.write_text("\n".join(TEXTS) + "\n")
    return path, df


def read_back(path, fmt: str) -> pd.DataFrame:
    if fmt.startswith("csv"):
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if fmt == "parquet":
        return pq.read_table(path).to_pandas()
    if fmt.startswith("jsonl"):
        return pd.read_json(path, lines=True, dtype=False)
    return pd.DataFrame({"text": path.read_text().splitlines()})


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet", "jsonl", "jsonl.gz", "txt"])
def test_deduplicated_corpus_in_each_format(tmp_path, sentence_encoder, fmt) -> None:
    path, df = write(fmt, tmp_path)
    id_column = None if fmt == "txt" else "key"
    corpus = read_corpus(path, id_column=id_column)
    report = find_duplicates(
        sentence_encoder.transform(corpus.items), ids=corpus.ids, texts=corpus.items
    )
    assert len(report.removed) >= 3  # the exact copy and the two near-duplicates
    name = {"parquet": "out.parquet", "txt": "out.txt"}.get(fmt, f"out.{fmt}")
    out = write_deduplicated(path, report.removed, tmp_path / "o" / name, id_column=id_column)
    assert out.path == tmp_path / "o" / name and out.removed == len(report.removed)
    back = read_back(out.path, fmt)
    assert len(back) == out.rows == len(corpus) - len(report.removed)
    kept_rows = [r for r, i in enumerate(corpus.ids) if i not in report.removed]
    expected = df.iloc[kept_rows].reset_index(drop=True)
    if fmt == "txt":
        assert back["text"].tolist() == expected["text"].tolist()
    else:
        assert list(back.columns) == list(df.columns)  # every input column kept
        assert back["key"].tolist() == [i for i in corpus.ids if i not in report.removed]
        assert back["text"].tolist() == expected["text"].tolist()
        assert back["note"].astype(str).tolist() == expected["note"].astype(str).tolist()
        assert [float(v) for v in back["stars"]] == expected["stars"].tolist()
    if fmt.endswith(".gz"):
        assert out.path.read_bytes()[:2] == b"\x1f\x8b"
    assert sorted(p.name for p in out.path.parent.iterdir()) == [name]  # no temporary file
    # the deduplicated file is itself a corpus with no duplicate left at the threshold
    again = read_corpus(out.path, id_column=id_column)
    vectors = sentence_encoder.transform(again.items)
    assert find_duplicates(vectors, ids=again.ids).removed == {}


def test_skipped_rows_are_left_out_and_ids_must_match(tmp_path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("key,text\nk0,one\nk1,\nk2,two\nk3,three\n")
    corpus = read_corpus(path, id_column="key", skip_invalid=True)
    out = write_deduplicated(
        path, ["k3"], tmp_path / "d.csv", id_column="key",
        skipped_rows=[s.row for s in corpus.skipped],
    )  # fmt: skip
    assert (out.rows, out.removed, out.skipped) == (2, 1, 1)
    assert (tmp_path / "d.csv").read_text() == "key,text\nk0,one\nk2,two\n"
    with pytest.raises(CorpusError, match=r"1 removed id\(s\) are not rows of this corpus.*'k9'"):
        write_deduplicated(path, ["k9"], tmp_path / "e.csv", id_column="key")
    with pytest.raises(CorpusError, match="not rows of this corpus"):  # row numbers as ids
        write_deduplicated(path, ["k3"], tmp_path / "e.csv")
    assert not (tmp_path / "e.csv").exists()


def test_image_folder_gives_a_list_of_kept_paths(tmp_path) -> None:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "sub/c.png"):
        Image.new("RGB", (4, 4), "red").save(folder / name)
    corpus = read_corpus(folder)
    out = write_deduplicated(folder, ["b.png"], tmp_path / "kept.txt")
    assert out.rows == len(corpus) - 1 == 2
    assert out.path.read_text().splitlines() == [
        str((folder / "a.png").absolute()),
        str((folder / "sub" / "c.png").absolute()),
    ]


@pytest.mark.parametrize(
    ("source", "out", "message"),
    [
        ("in.csv", "out.parquet", r"keeps the input's format \(csv\): name it .csv or .csv.gz"),
        ("in.parquet", "out.parquet.gz", r"name it .parquet"),
        ("in.jsonl", "out.csv", r"\(jsonl\): name it .jsonl or .jsonl.gz"),
        ("images", "out.csv", "text file of the kept paths: name it .txt"),
        ("in.csv", "in.csv", "is the input corpus itself"),
        ("in.csv", "folder", "is a folder"),
    ],
)
def test_bad_output_paths_fail_before_work(tmp_path, source, out, message) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "folder").mkdir()
    (tmp_path / "in.csv").write_text("text\na\n")
    with pytest.raises((CorpusError, OSError), match=message):
        check_deduplicated_path(tmp_path / source, tmp_path / out)


def test_read_only_output_folder(tmp_path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OSError, match="read-only"):
            check_deduplicated_path(tmp_path / "in.csv", folder / "d.csv")
    finally:
        folder.chmod(0o700)


# ----------------------------------------------------------------------------------------
# keep rules read from the corpus
# ----------------------------------------------------------------------------------------
def test_keep_column_from_the_corpus_file(tmp_path, sentence_encoder) -> None:
    path, _ = write("csv", tmp_path)
    corpus = read_corpus(path, id_column="key")
    vectors = sentence_encoder.transform(corpus.items)
    by_stars = find_duplicates(
        vectors, ids=corpus.ids, keep="column:stars", keep_values=keep_values_for(
            "column:stars", corpus)
    )  # fmt: skip
    first = find_duplicates(vectors, ids=corpus.ids)
    # rows 0, 2 and 3 are one group: first keeps k0, the highest stars keep k2 (9.0)
    assert first.removed["k2"][0] == "k0" and "k2" not in by_stars.removed
    assert by_stars.removed["k0"][0] == "k2"
    assert keep_values_for("longest", corpus) == [len(t) for t in corpus.items]


def test_keep_column_errors_name_the_file_and_column(tmp_path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("key,text,stars,when\nk0,a,3,2024-01-01\nk1,,x,2024-02-30\nk2,c,4,2023-05-01\n")
    corpus = read_corpus(path, id_column="key", skip_invalid=True)
    assert column_values(path, "stars", [1]) == ["3", "4"]  # the skipped row's "x" is gone
    assert keep_values_for("column:when", corpus) == ["2024-01-01", "2023-05-01"]
    with pytest.raises(DuplicateSearchError, match=r"c.csv: column 'stars' is not numeric or "
                       r"dates: row 1 holds 'x'"):  # fmt: skip
        column_values(path, "stars")
    with pytest.raises(DuplicateSearchError, match="row 1 holds '2024-02-30'"):
        column_values(path, "when")
    with pytest.raises(
        MissingColumnError, match=r"keep rule 'column:score:desc' \(--keep\): .*c.csv: column "
        r"'score' not found.*'stars'"
    ):  # fmt: skip
        keep_values_for("column:score", corpus)
    txt = tmp_path / "t.txt"
    txt.write_text("a\nb\n")
    with pytest.raises(CorpusError, match="has no columns"):
        keep_values_for("column:x", read_corpus(txt))
    image_corpus = type(corpus)(["a.png"], [str(tmp_path / "a.png")], kind="image")
    with pytest.raises(DuplicateSearchError, match="an image folder .* has neither"):
        keep_values_for("longest", image_corpus)
    assert keep_values_for("last", image_corpus) is None


def test_column_of_dates_in_parquet(tmp_path) -> None:
    import datetime as dt

    path = tmp_path / "d.parquet"
    days = [dt.date(2024, 1, 3), None, dt.date(2023, 1, 1)]
    pq.write_table(pa.table({"text": ["a", "b", "c"], "day": days}), path)
    values = column_values(path, "day")
    report = find_duplicates(
        np.ones((3, 4), dtype=np.float32), keep="column:day:asc", keep_values=values
    )
    assert report.selected == [2]  # the earliest date; the row without one is never preferred
