"""embetter_core.files: files written atomically get the mode a plain open() would give them
(pairs.csv and report.html were 0600 whatever the umask), and CSV cells safe for spreadsheets."""

from __future__ import annotations

import csv
import io
import os
import stat
from pathlib import Path

import pytest

from embetter_core.files import (
    atomic_path,
    csv_line,
    spreadsheet_safe,
    write_atomic,
    write_csv_atomic,
)


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_written_files_honour_the_umask(tmp_path, umask, mask):
    umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what the user expects: open()'s 0666 & ~umask
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o666 & ~mask
    assert stat.S_IMODE(write_atomic(tmp_path / "a.csv", "id\n").stat().st_mode) == expected
    with atomic_path(tmp_path / "sub" / "report.html") as tmp:
        tmp.write_text("<html></html>")
    assert stat.S_IMODE((tmp_path / "sub" / "report.html").stat().st_mode) == expected
    write_atomic(tmp_path / "a.csv", b"replaced")  # replacing keeps the rule
    assert stat.S_IMODE((tmp_path / "a.csv").stat().st_mode) == expected


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.csv") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ('=HYPERLINK("http://evil","click")', '\'=HYPERLINK("http://evil","click")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(1+1)", "'@SUM(1+1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("plain id", "plain id"),
        ("a=b", "a=b"),
        ("", ""),
        (0.93, 0.93),
        (-1, -1),
        (None, None),
    ],
)
def test_spreadsheet_safe(cell, safe):
    assert spreadsheet_safe(cell) == safe
    assert type(spreadsheet_safe(cell)) is type(cell)


def test_spreadsheet_safe_cells_round_trip_through_csv(tmp_path):
    rows = [["=1+1", "-x", "ok"], ["@a", "+b", "c=d"]]
    with open(tmp_path / "p.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([[spreadsheet_safe(c) for c in row] for row in rows])
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as handle:
        back = list(csv.reader(handle))
    assert back == [["'=1+1", "'-x", "ok"], ["'@a", "'+b", "c=d"]]
    assert [[c[1:] if c.startswith("'") else c for c in row] for row in back] == rows


TRICKY = [
    "plain", "", "a,b", 'say "hi"', "line\nbreak", "cr\ronly", "crlf\r\n", " pad ",
    "é 🙂 e\u0301", "=1+1", "tab\there",
]  # fmt: skip


def test_csv_lines_read_back_whole_and_match_the_csv_module(tmp_path: Path) -> None:
    rows = [[i, text, 0.5 + i, None] for i, text in enumerate(TRICKY)]
    path = write_csv_atomic(tmp_path / "t.csv", ["n", "text", "score", "none"], rows)
    with open(path, newline="", encoding="utf-8") as handle:
        back = list(csv.reader(handle))
    assert back[0] == ["n", "text", "score", "none"]
    assert back[1:] == [[str(i), text, str(0.5 + i), ""] for i, text in enumerate(TRICKY)]
    # byte for byte what the csv module writes, except that a lone \r is quoted here
    expected = io.StringIO(newline="")
    csv.writer(expected, lineterminator="\n").writerows([["n", "text", "score", "none"], *rows])
    ours = path.read_bytes().decode("utf-8")
    assert ours.replace('"cr\ronly"', "cr\ronly") == expected.getvalue()
    assert csv_line([""]) == '""\n' and csv_line(["", ""]) == ",\n"
