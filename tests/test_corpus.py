"""read_corpus / Corpus on real files of every supported format, and every error path."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from embetter_core.corpus import Corpus, SkippedRow, read_corpus, read_table
from embetter_core.errors import CorpusError, MissingColumnError

SAMPLE = Path(__file__).resolve().parent.parent / "embetter_core" / "data" / "debian-sample.csv.gz"


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def write_gz(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    return path


# -- formats ----------------------------------------------------------------------------


def test_csv_with_id_column_keeps_na_and_null_strings(tmp_path):
    path = write(
        tmp_path / "c.csv", 'key,text,other\nk1,hello,1\nk2,NA,2\nk3,null,3\n7,"a, b\nc",4\n'
    )
    corpus = read_corpus(path, id_column="key")
    assert corpus.ids == ["k1", "k2", "k3", "7"]
    assert corpus.items == ["hello", "NA", "null", "a, b\nc"]
    assert corpus.kind == "text"
    assert corpus.source == str(path)
    assert corpus.skipped == []


def test_csv_gz_with_row_number_ids_and_other_text_column(tmp_path):
    path = write_gz(tmp_path / "c.csv.gz", "body,n\nfirst,1\nsecond,2\nthird,3\n")
    corpus = read_corpus(path, text_column="body")
    assert corpus.ids == ["0", "1", "2"]
    assert corpus.items == ["first", "second", "third"]


def test_csv_numeric_looking_texts_and_ids_stay_as_written(tmp_path):
    path = write(tmp_path / "n.csv", "id,text\n001,1.50\n2.0,7\n")
    corpus = read_corpus(path, id_column="id")
    assert corpus.ids == ["001", "2.0"]
    assert corpus.items == ["1.50", "7"]


def test_parquet_with_integer_ids(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": [10, 11, 12], "text": ["a", "b", "c"]}), path)
    corpus = read_corpus(path, id_column="id")
    assert corpus.ids == ["10", "11", "12"]
    assert corpus.items == ["a", "b", "c"]


@pytest.mark.parametrize("name", ["c.jsonl", "c.ndjson"])
def test_jsonl_and_ndjson(tmp_path, name):
    lines = [{"id": "x", "text": "one"}, {"id": 5, "text": "two", "extra": [1]}]
    path = write(tmp_path / name, "\n".join(json.dumps(r) for r in lines) + "\n\n")
    corpus = read_corpus(path, id_column="id")
    assert corpus.ids == ["x", "5"]
    assert corpus.items == ["one", "two"]


@pytest.mark.parametrize("name", ["c.jsonl.gz", "c.ndjson.gz"])
def test_jsonl_gz(tmp_path, name):
    path = write_gz(tmp_path / name, '{"text": "uno"}\n{"text": "dos"}\n')
    corpus = read_corpus(path)
    assert (corpus.ids, corpus.items) == (["0", "1"], ["uno", "dos"])


@pytest.mark.parametrize("compress", [False, True])
def test_txt_one_text_per_line(tmp_path, compress):
    body = "first line\r\nsecond\u2028same line\nthird\n"
    path = (write_gz if compress else write)(tmp_path / ("t.txt.gz" if compress else "t.txt"), body)
    corpus = read_corpus(path)
    assert corpus.ids == ["0", "1", "2"]
    assert corpus.items == ["first line", "second\u2028same line", "third"]


def test_bundled_debian_sample():
    corpus = read_corpus(SAMPLE, id_column="id")
    frame = pd.read_csv(SAMPLE, keep_default_na=False, dtype=str)
    assert len(corpus) == len(frame) == 2000
    assert corpus.ids == frame["id"].tolist()
    assert corpus.items == frame["text"].tolist()


# -- errors -----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus not found: .*nope.csv"):
        read_corpus(tmp_path / "nope.csv")


@pytest.mark.parametrize("name", ["c.xlsx", "c.parquet.gz", "noext"])
def test_unknown_extension(tmp_path, name):
    path = write(tmp_path / name, "text\na\n")
    with pytest.raises(CorpusError, match=f"{name}.*unknown corpus format.*\\.csv.*\\.jsonl"):
        read_corpus(path)


@pytest.mark.parametrize("name", ["e.csv", "e.jsonl", "e.txt", "e.parquet"])
def test_zero_byte_file(tmp_path, name):
    path = write(tmp_path / name, "")
    with pytest.raises(CorpusError, match=f"{name}: the file is empty"):
        read_corpus(path)


@pytest.mark.parametrize(
    ("name", "body"), [("h.csv", "id,text\n"), ("b.jsonl", "\n\n"), ("b.txt", "\n")]
)
def test_no_rows(tmp_path, name, body):
    path = write(tmp_path / name, body)
    with pytest.raises(CorpusError, match=f"{name}.*(empty|invalid)"):
        read_corpus(path)


def test_missing_column_lists_existing_columns(tmp_path):
    path = write(tmp_path / "c.csv", "id,body\n1,a\n")
    with pytest.raises(
        CorpusError, match="column 'text' not found; the file has columns: 'id', 'body'"
    ):
        read_corpus(path)
    with pytest.raises(CorpusError, match="column 'key' not found"):
        read_corpus(path, text_column="body", id_column="key")


def test_missing_column_parquet_and_jsonl(tmp_path):
    pq.write_table(pa.table({"a": ["x"]}), tmp_path / "p.parquet")
    with pytest.raises(CorpusError, match="p.parquet: column 'text' not found.*'a'"):
        read_corpus(tmp_path / "p.parquet")
    write(tmp_path / "j.jsonl", '{"a": 1}\n{"b": 2}\n')
    with pytest.raises(CorpusError, match="j.jsonl: column 'text' not found.*'a', 'b'"):
        read_corpus(tmp_path / "j.jsonl")


def test_corrupt_files_are_named(tmp_path):
    ragged = write(tmp_path / "r.csv", "id,text\n1,a\n2,b,extra\n")
    with pytest.raises(CorpusError, match="r.csv: cannot read it as CSV.*line 3"):
        read_corpus(ragged)
    shifted = write(tmp_path / "s.csv", "id,text\n1,a,x\n2,b,y\n")  # every row too long
    with pytest.raises(CorpusError, match="s.csv: cannot read it as CSV.*header"):
        read_corpus(shifted, id_column="id")
    fake_gz = write(tmp_path / "f.csv.gz", "id,text\n1,a\n")
    with pytest.raises(CorpusError, match="f.csv.gz: cannot read it as CSV"):
        read_corpus(fake_gz)
    fake_pq = write(tmp_path / "f.parquet", "not parquet at all")
    with pytest.raises(CorpusError, match="f.parquet: cannot read it as PARQUET"):
        read_corpus(fake_pq)
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(CorpusError, match="b.txt: cannot read it as text"):
        read_corpus(binary)


def test_corrupt_jsonl_names_the_line(tmp_path):
    path = write(tmp_path / "c.jsonl", '{"text": "a"}\n{"text": "b"\n')
    with pytest.raises(CorpusError, match="c.jsonl: line 2 is not valid JSON"):
        read_corpus(path)
    path = write(tmp_path / "l.jsonl", '{"text": "a"}\n["b"]\n')
    with pytest.raises(CorpusError, match="l.jsonl: line 2 is a JSON list; expected an object"):
        read_corpus(path)


def test_invalid_rows_are_named(tmp_path):
    path = write(tmp_path / "c.csv", "id,text\na,ok\nb,\na,again\nc,   \n,no id\n")
    with pytest.raises(ValueError) as info:
        read_corpus(path, id_column="id")
    message = str(info.value)
    assert "c.csv: 4 invalid row(s) of 5" in message
    assert "row 1 (id 'b'): empty text" in message
    assert "row 2 (id 'a'): duplicate id (first at row 0)" in message
    assert "row 3 (id 'c'): empty text" in message
    assert "row 4 (id None): missing id" in message
    assert "skip_invalid=True" in message


def test_nan_and_non_string_texts(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["a", None, "c"], "n": [1, 2, 3]}), path)
    with pytest.raises(ValueError, match="row 1 \\(id '1'\\): missing text"):
        read_corpus(path)
    write(tmp_path / "j.jsonl", '{"text": 3}\n{"text": "ok"}\n{"other": 1}\n')
    with pytest.raises(ValueError) as info:
        read_corpus(tmp_path / "j.jsonl")
    assert "row 0 (id '0'): text is int, expected a string" in str(info.value)
    assert "row 2 (id '2'): missing text" in str(info.value)
    corpus = Corpus.from_texts(["a", float("nan"), "b"], skip_invalid=True)
    assert corpus.skipped == [SkippedRow(1, "1", "missing text (NaN)")]


def test_many_invalid_rows_list_first_few_and_count(tmp_path):
    path = write(tmp_path / "t.txt", "ok\n" + "\n" * 12 + "last\n")
    with pytest.raises(ValueError) as info:
        read_corpus(path)
    message = str(info.value)
    assert "12 invalid row(s) of 14" in message
    assert "row 1 (id '1'): empty text" in message and "row 5 (id '5')" in message
    assert "row 6 (id '6')" not in message
    assert "... and 7 more" in message


def test_skip_invalid_drops_and_lists_rows(tmp_path):
    path = write(tmp_path / "c.csv", "id,text\na,ok\nb,\na,again\nd,fine\n")
    corpus = read_corpus(path, id_column="id", skip_invalid=True)
    assert corpus.ids == ["a", "d"]
    assert corpus.items == ["ok", "fine"]
    assert corpus.skipped == [
        SkippedRow(1, "b", "empty text"),
        SkippedRow(2, "a", "duplicate id (first at row 0)"),
    ]


def test_skip_invalid_with_nothing_left_raises(tmp_path):
    path = write(tmp_path / "c.csv", "id,text\n1,\n2,  \n")
    with pytest.raises(CorpusError, match="no valid rows: all 2 rows are invalid"):
        read_corpus(path, skip_invalid=True)


# -- read_table: the same readers for other table files (pair files) ---------------------


def test_read_table_gives_raw_columns_of_every_table_format(tmp_path):
    body = 'a,b,n\n"x, y",NA,1.50\nz,,2\n'
    expected = {"a": ["x, y", "z"], "b": ["NA", ""], "n": ["1.50", "2"]}
    assert read_table(write(tmp_path / "t.csv", body), ["a", "b", "n"]) == expected
    assert read_table(write_gz(tmp_path / "t.csv.gz", body), ["n", "a"]) == {
        "n": ["1.50", "2"],
        "a": ["x, y", "z"],
    }
    pq.write_table(pa.table({"a": ["x", None], "n": [1, 2]}), tmp_path / "t.parquet")
    assert read_table(tmp_path / "t.parquet", ["a", "n"]) == {"a": ["x", None], "n": [1, 2]}
    lines = '{"a": "x", "n": 1}\n\n{"n": true}\n'
    for name in ("t.jsonl", "t.ndjson"):
        assert read_table(write(tmp_path / name, lines), ["a", "n"]) == {
            "a": ["x", None],
            "n": [1, True],
        }
    assert read_table(write_gz(tmp_path / "t.jsonl.gz", lines), ["n"]) == {"n": [1, True]}


def test_read_table_errors_name_the_file(tmp_path):
    path = write(tmp_path / "t.csv", "a,b\n1,2\n")
    with pytest.raises(MissingColumnError, match="t.csv: column 'c' not found.*'a', 'b'") as info:
        read_table(path, ["a", "c"])
    assert info.value.missing == ("c",) and info.value.columns == ("a", "b")
    assert isinstance(info.value, CorpusError) and isinstance(info.value, ValueError)
    copy = pickle.loads(pickle.dumps(info.value))  # survives a trip between processes
    assert (copy.missing, copy.columns, str(copy)) == (("c",), ("a", "b"), str(info.value))
    with pytest.raises(FileNotFoundError, match="file not found: .*nope.csv"):
        read_table(tmp_path / "nope.csv", ["a"])
    with pytest.raises(CorpusError, match="t.txt: a .txt file has no columns"):
        read_table(write(tmp_path / "t.txt", "a\n"), ["a"])
    with pytest.raises(CorpusError, match="is a folder"):
        read_table(tmp_path, ["a"])
    with pytest.raises(CorpusError, match="t.xlsx: unknown table format 't.xlsx'") as info:
        read_table(write(tmp_path / "t.xlsx", "a\n"), ["a"])
    assert ".txt" not in str(info.value) and "folder" not in str(info.value)
    with pytest.raises(CorpusError, match="e.csv: the file is empty"):
        read_table(write(tmp_path / "e.csv", ""), ["a"])
    with pytest.raises(CorpusError, match="r.csv: cannot read it as CSV.*line 3"):
        read_table(write(tmp_path / "r.csv", "a,b\n1,2\n3,4,5\n"), ["a"])


def test_id_column_on_txt_and_folder_is_refused(tmp_path):
    path = write(tmp_path / "t.txt", "a\n")
    with pytest.raises(CorpusError, match="t.txt: a .txt corpus has no columns"):
        read_corpus(path, id_column="id")
    with pytest.raises(CorpusError, match="an image folder has no columns"):
        read_corpus(tmp_path, id_column="id")


# -- image folders ----------------------------------------------------------------------


def make_image(path: Path, color: tuple[int, int, int], fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path, format=fmt)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    root = tmp_path / "imgs"
    make_image(root / "b.png", (255, 0, 0))
    make_image(root / "a" / "z.JPG", (0, 255, 0), "JPEG")
    make_image(root / "a" / "deeper" / "c.webp", (0, 0, 255))
    make_image(root / "m.gif", (9, 9, 9))
    make_image(root / ".hidden" / "x.png", (1, 1, 1))
    make_image(root / ".dot.png", (1, 1, 1))
    write(root / "notes.txt", "not an image")
    return root


def test_image_folder_is_recursive_sorted_with_relative_ids(image_folder):
    corpus = read_corpus(image_folder)
    assert corpus.kind == "image"
    assert corpus.ids == ["a/deeper/c.webp", "a/z.JPG", "b.png", "m.gif"]
    assert corpus.items == [str((image_folder / i).absolute()) for i in corpus.ids]
    assert all(Path(item).is_absolute() and Path(item).is_file() for item in corpus.items)


def test_corrupt_image_is_named_or_skipped(image_folder):
    bad = image_folder / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (image_folder / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError) as info:
        read_corpus(image_folder)
    message = str(info.value)
    assert "2 invalid row(s) of 6" in message
    assert "(id 'a/broken.png'): unreadable image" in message
    assert "(id 'empty.jpg'): unreadable image" in message
    corpus = read_corpus(image_folder, skip_invalid=True)
    assert corpus.ids == ["a/deeper/c.webp", "a/z.JPG", "b.png", "m.gif"]
    assert [s.id for s in corpus.skipped] == ["a/broken.png", "empty.jpg"]
    assert [s.row for s in corpus.skipped] == [0, 4]


def test_folder_without_images(tmp_path):
    write(tmp_path / "readme.md", "hi")
    with pytest.raises(CorpusError, match="no image files .*\\.png.* \\(1 other files\\)"):
        read_corpus(tmp_path)


def test_image_corpus_hash_follows_file_bytes(image_folder):
    before = read_corpus(image_folder).corpus_hash()
    assert read_corpus(image_folder).corpus_hash() == before
    make_image(image_folder / "b.png", (254, 0, 0))  # same name, same size class, new bytes
    assert read_corpus(image_folder).corpus_hash() != before


# -- the Corpus object ------------------------------------------------------------------


def test_chunks_are_ranges_covering_every_row():
    corpus = Corpus.from_texts([f"t{i}" for i in range(2501)])
    chunks = corpus.chunks(1000)
    assert chunks == [range(0, 1000), range(1000, 2000), range(2000, 2501)]
    assert np.concatenate([np.arange(r.start, r.stop) for r in chunks]).tolist() == list(
        range(2501)
    )
    assert corpus.chunks(5000) == [range(0, 2501)]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
            corpus.chunks(bad)


def test_encode_chunks_sort_by_length_within_windows():
    rng = np.random.default_rng(0)
    texts = ["x" * int(k) for k in rng.integers(1, 500, size=2501)]
    corpus = Corpus.from_texts(texts)
    chunks = corpus.encode_chunks(100, window=8)
    assert [c.size for c in chunks] == [100] * 25 + [1]
    assert np.sort(np.concatenate(chunks)).tolist() == list(range(2501))
    for chunk in chunks:
        assert (np.diff(chunk) > 0).all()  # increasing row numbers, for the store
    for w, first in enumerate(range(0, 26, 8)):
        window = chunks[first : first + 8]
        rows = np.concatenate(window)
        assert rows.min() >= w * 800 and rows.max() < (w + 1) * 800  # stays in its window
        lengths = [np.array([len(texts[i]) for i in c]) for c in window]
        for longer, shorter in zip(lengths, lengths[1:], strict=False):
            assert longer.min() >= shorter.max()  # longest first, chunk after chunk
    assert [c.tolist() for c in corpus.encode_chunks(1000, window=1)] == [
        list(r) for r in corpus.chunks(1000)
    ]
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="window must be a positive integer"):
            corpus.encode_chunks(100, window=bad)


def test_encode_chunks_of_images_stay_consecutive():
    corpus = Corpus(["a", "b", "c"], ["/x/long-name.png", "/x/a.png", "/x/bb.png"], kind="image")
    assert [c.tolist() for c in corpus.encode_chunks(2)] == [[0, 1], [2]]


def test_corpus_hash_covers_ids_items_and_order():
    base = Corpus(["a", "b"], ["x", "y"]).corpus_hash()
    assert len(base) == 64 and int(base, 16) >= 0
    assert Corpus(["a", "b"], ["x", "y"]).corpus_hash() == base
    assert Corpus(["b", "a"], ["y", "x"]).corpus_hash() != base
    assert Corpus(["a", "b"], ["x", "z"]).corpus_hash() != base
    assert Corpus(["ab"], ["xy"]).corpus_hash() != Corpus(["a", "b"], ["x", "y"]).corpus_hash()
    assert Corpus(["a"], ["bx"]).corpus_hash() != Corpus(["ab"], ["x"]).corpus_hash()


def test_corpus_checks_its_fields():
    with pytest.raises(ValueError, match="2 ids but 1 items"):
        Corpus(["a", "b"], ["x"])
    with pytest.raises(ValueError, match="kind must be 'text' or 'image'"):
        Corpus(["a"], ["x"], kind="audio")


def test_texts_by_id_and_from_texts_with_ids():
    corpus = Corpus.from_texts(["x", "y"], ids=[1, 2])
    assert corpus.texts_by_id() == {"1": "x", "2": "y"}
    with pytest.raises(ValueError, match="row 1 \\(id '1'\\): duplicate id"):
        Corpus.from_texts(["x", "y"], ids=["1", 1])


# -- issue 12: what the encoder could not read is refused at ingest -----------------------------
def test_images_cut_short_or_too_large_are_invalid_rows(tmp_path):
    """verify() passed these; the encoder then failed mid-run, even with --skip-invalid."""
    from tests.test_bad_input import truncated_jpeg, write_photo, write_png

    folder = tmp_path / "imgs"
    write_photo(folder / "a.png")
    write_png(folder / "b_short.png", 64, 64, finish=False)
    truncated_jpeg(folder / "c_cut.jpg")
    write_png(folder / "d_huge.png", 12_000, 12_000)
    write_png(folder / "e_large.png", 6000, 6000)  # decoded reduced, not refused
    with pytest.raises(CorpusError) as info:
        read_corpus(folder)
    message = str(info.value)
    assert "3 invalid row(s) of 5" in message and "--skip-invalid" in message
    assert "row 1 (id 'b_short.png'): unreadable image: OSError: image file is truncated" in message
    assert "row 2 (id 'c_cut.jpg'): unreadable image: OSError: image file is truncated" in message
    assert (
        "row 3 (id 'd_huge.png'): image too large (12000 x 12000 = 144,000,000 pixels; "
        "the limit is 50,000,000 pixels)" in message
    )
    corpus = read_corpus(folder, skip_invalid=True)
    assert corpus.ids == ["a.png", "e_large.png"]
    assert [(s.row, s.id) for s in corpus.skipped] == [
        (1, "b_short.png"),
        (2, "c_cut.jpg"),
        (3, "d_huge.png"),
    ]
    assert read_corpus(folder, check_images=False).ids == sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("text", ["\x00", "\u200b", "\ufeff", "\u200b \u2060\u00ad\x00\n\t"])
def test_texts_of_only_invisible_characters_are_empty(tmp_path, text):
    """They encode to the vector of "" and came out as duplicates of each other at 1.0."""
    with pytest.raises(CorpusError, match=r"row 1 \(id '1'\): empty text \(only invisible"):
        Corpus.from_texts(["ok", text])
    path = write(
        tmp_path / "c.jsonl", f"{json.dumps({'text': 'ok'})}\n{json.dumps({'text': text})}\n"
    )
    corpus = read_corpus(path, skip_invalid=True)
    assert corpus.ids == ["0"] and corpus.skipped[0].row == 1
    assert corpus.skipped[0].reason.startswith("empty text (only invisible characters")


def test_visible_texts_with_invisible_characters_stay(tmp_path):
    texts = [
        "a\u200b",
        "\u200bb",
        "\u00e9",
        "line one\nline two",
        "\ttab",
        "emoji \U0001f600",
        " x ",
    ]
    corpus = Corpus.from_texts(["", *texts, " \n"], skip_invalid=True)
    assert corpus.items == texts  # "" and blank stay "empty text", as before
    assert [s.reason for s in corpus.skipped] == ["empty text", "empty text"]
    path = write(tmp_path / "c.csv", "text\n\u200b\u200b\nfine\n")
    with pytest.raises(CorpusError, match=r"row 0 \(id '0'\): empty text \(only invisible"):
        read_corpus(path)


def test_lone_surrogates_are_named_at_ingest(tmp_path):
    """JSON allows "\\ud800"; the cache then failed with UnicodeEncodeError naming no row."""
    body = (
        '{"k": "a", "text": "fine"}\n'
        '{"k": "b", "text": "broken \\ud800 text"}\n'
        '{"k": "\\udc80", "text": "ok"}\n'
        '{"k": "d", "text": "pair \\ud83d\\ude00 is fine"}\n'
    )
    path = write(tmp_path / "c.jsonl", body)
    with pytest.raises(CorpusError) as info:
        read_corpus(path, id_column="k")
    message = str(info.value)
    assert "2 invalid row(s) of 4" in message
    assert (
        "row 1 (id 'b'): text cannot be written as UTF-8: lone surrogate '\\ud800' at character 7"
        in message
    )
    assert "row 2 (id '\\udc80'): id cannot be written as UTF-8: lone surrogate" in message
    corpus = read_corpus(path, id_column="k", skip_invalid=True)
    assert corpus.ids == ["a", "d"] and corpus.items[1] == "pair \U0001f600 is fine"
    assert [s.row for s in corpus.skipped] == [1, 2]
    with pytest.raises(CorpusError, match="row 0 .*lone surrogate"):
        Corpus.from_texts(["\udfff"])
