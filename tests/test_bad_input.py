"""Bad input, one row each: what an adversarial pass tried (issue 12) and what must happen.

Each :class:`Case` builds its input under a temporary folder and does what the user did, in
Python or on a command line (:func:`cli`); the test checks the error's type and that its
message names what to fix (``says``). A case with ``error=None`` must succeed: its ``run``
asserts the safe outcome itself. ``then`` checks afterwards that nothing was lost. Add a
row for each new finding; cases that need a Prefect server belong in the slow tests below
the table, everything else fails before a flow starts.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest

from embetter_core.corpus import read_corpus
from embetter_core.errors import OutputClashError
from embetter_core.files import check_outputs_apart
from tests.conftest import TINY_CLIP


@dataclass(frozen=True)
class Case:
    """One bad input and the answer it must get."""

    name: str
    run: Callable[[Path], Any]  # builds the input under the folder and uses it
    error: type[BaseException] | None  # None: run must succeed (it asserts the outcome)
    says: tuple[str, ...] = ()  # fragments the error message must contain
    then: Callable[[Path], None] | None = None  # afterwards: nothing lost


class CliError(Exception):
    """A command line exited with a non-zero status; the message is what it printed."""

    def __init__(self, status: int, output: str) -> None:
        super().__init__(f"exit status {status}: {output}")
        self.status = status
        self.output = output


def cli(module: str, argv: Sequence[str]) -> str:
    """Run ``python -m MODULE ARGV`` in this process (its ``main``); raise :class:`CliError`
    on a non-zero status; return what it printed."""
    import importlib

    main = importlib.import_module(module).main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    if status:
        raise CliError(status, err.getvalue() + out.getvalue())
    return out.getvalue()


def csv_corpus(folder: Path, name: str = "corpus.csv", texts: Sequence[str] = ()) -> Path:
    path = folder / name
    texts = list(texts) or ["a cat sat on the mat", "stock prices fell", "a dog ran home"]
    pd.DataFrame({"text": texts}).to_csv(path, index=False)
    return path


def image_folder(folder: Path) -> Path:
    from PIL import Image

    images = folder / "images"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(images / f"{i}.png")
    return images


def hard_link(target: Path, link: Path) -> Path:
    link.hardlink_to(target)
    return link


def unchanged(name: str) -> Callable[[Path], None]:
    """``then``: the corpus ``name`` still holds what :func:`csv_corpus` wrote."""

    def check(folder: Path) -> None:
        assert pd.read_csv(folder / name)["text"].tolist()[0] == "a cat sat on the mat"

    return check


def embed(folder: Path, *args: Any, report: str = "report") -> str:
    """``python -m flows.embed_corpus`` with its outputs under ``folder`` unless given."""
    argv = list(map(str, args))
    for flag, default in [
        ("--output", folder / "out" / "e.h5"),
        ("--cache-dir", folder / "cache"),
        ("--report-dir", folder / report),
    ]:
        if flag not in argv:
            argv += [flag, str(default)]
    return cli("flows.embed_corpus", [*argv, "--no-progress"])


def nothing_written(folder: Path) -> None:
    """``then``: the run stopped before any work: no store, no report, an empty cache (the
    checks create the output folders)."""
    assert not (folder / "out" / "e.h5").exists()
    for made in ("report", "cache"):
        assert not [p for p in (folder / made).rglob("*") if p.is_file()], made


def pair_file(folder: Path) -> Path:
    path = folder / "pairs.csv"
    rows = [("a cat sat", "a cat sat down", 1), ("dogs run", "prices fell", 0)] * 4
    pd.DataFrame(rows, columns=["text_a", "text_b", "label"]).to_csv(path, index=False)
    return path


def train(folder: Path, *args: Any) -> str:
    """``python -m flows.train_difference`` on :func:`pair_file` with the given options."""
    argv = [pair_file(folder), "--text-a", "text_a", "--text-b", "text_b", "--label", "label"]
    if "--output" not in args:
        argv += ["--output", folder / "m.skops"]
    return cli("flows.train_difference", [*argv, *args])


def markdown_of_hostile_ids(folder: Path) -> None:
    from embetter_core.dedupe import find_duplicates
    from embetter_core.report import markdown_summary

    ids = ["<img src=x onerror=alert(1)>", "[click](http://evil)`code`*b*"]
    text = markdown_summary(find_duplicates(np.ones((2, 4)), ids=ids), extra={"corpus": ids[0]})
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "\\[click\\](http://evil)\\`code\\`\\*b\\*" in text
    assert "](http" not in text.replace("\\](http", "")


FORMULAS = ['=HYPERLINK("http://evil","click")', "+cmd|' /C calc'!A0", "@SUM(1)", "-2+3"]


def formula_cells(folder: Path, spreadsheet_safe: bool) -> None:
    """pairs.csv and removed.csv of ids and texts that a spreadsheet would run as formulas:
    with ``spreadsheet_safe`` each cell starts with ``'``, without it each is as it was."""
    import csv

    from embetter_core.dedupe import find_duplicates
    from embetter_core.report import write_pairs_csv, write_removed_csv

    report = find_duplicates(np.ones((4, 2)), ids=FORMULAS, threshold=0.9)
    texts = dict(zip(FORMULAS, FORMULAS[::-1], strict=True))
    prefix = "'" if spreadsheet_safe else ""
    pairs = write_pairs_csv(report, texts, folder / "p.csv", spreadsheet_safe=spreadsheet_safe)
    rows = list(csv.DictReader(pairs.open(encoding="utf-8")))
    assert len(rows) == 6
    cells = {row[col] for row in rows for col in ("id_a", "id_b", "text_a", "text_b")}
    assert cells == {prefix + f for f in FORMULAS}  # '=HYPERLINK(...) with the option
    for row in rows:
        for id_col, text_col in (("id_a", "text_a"), ("id_b", "text_b")):
            assert row[id_col].startswith(prefix) and row[id_col][len(prefix) :] in FORMULAS
            assert row[text_col] == prefix + texts[row[id_col][len(prefix) :]]
        assert float(row["score"]) == pytest.approx(1.0)
    removed = write_removed_csv(report, folder / "r.csv", texts, spreadsheet_safe=spreadsheet_safe)
    rows = list(csv.DictReader(removed.open(encoding="utf-8")))
    assert [(r["id"], r["kept_id"]) for r in rows] == [
        (prefix + f, prefix + FORMULAS[0]) for f in FORMULAS[1:]
    ]


def spreadsheet_option(corpus: Path) -> None:
    """``--spreadsheet-safe`` is an option of the command line, off unless given."""
    from flows.embed_corpus import EmbedParams, build_parser
    from flows.params import options_given

    for argv, expected in [([str(corpus)], False), ([str(corpus), "--spreadsheet-safe"], True)]:
        given = options_given(build_parser().parse_args(argv), EmbedParams)
        assert EmbedParams(**given).spreadsheet_safe is expected


# -- library builders (helper-9; test_corpus / test_vision / test_model / test_cache use them) --
def write_png(
    path: Path, width: int, height: int, *, rows: int | None = None, finish: bool = True
) -> Path:
    """A 1-bit grey PNG written chunk by chunk, so a 12000 x 12000 image costs ~20 KB on disk
    and no decoding here. ``rows`` < ``height`` leaves rows out; ``finish=False`` cuts the
    compressed stream short inside a chunk whose checksum is right, which ``verify()`` passes
    and a full decode refuses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = zlib.compressobj(9)
    line = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    data = b"".join(stream.compress(line) for _ in range(height if rows is None else rows))
    if finish:
        data += stream.flush()
    else:
        data += stream.flush(zlib.Z_SYNC_FLUSH)
        data = data[: len(data) // 2]

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def write_photo(path: Path, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """A small image with texture (a gradient and a dot pattern), saved by its suffix."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    for x in range(seed % 7, w, 7):
        for y in range(0, h, 5):
            image.putpixel((x, y), (255, 30 * (seed % 8), 0))
    image.save(path)
    return path


def truncated_jpeg(path: Path) -> Path:
    """A JPEG cut at two thirds: ``verify()`` passes it, decoding fails."""
    from PIL import Image

    buf = io.BytesIO()
    Image.open(write_photo(path.with_suffix(".src.png"), (320, 240))).save(buf, "JPEG")
    path.with_suffix(".src.png").unlink()
    data = buf.getvalue()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def skops_payload(
    path: Path, replace: dict[str, dict[str, Any]], drop: tuple[str, ...] = ()
) -> Path:
    """A file shaped like ``DifferenceClassifier.save``'s, with schema nodes replaced by hand
    (as an attacker would write them) and keys dropped."""
    import skops.io
    from sklearn.linear_model import LogisticRegression

    from embetter_core.difference.model import FORMAT, FORMAT_VERSION
    from embetter_core.encoders import EncoderSpec

    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "fingerprint": '{"encoder": "SentenceEncoder"}',
        "encoder": EncoderSpec().model_dump(),
        "features": ["absdiff"],
        "n_features_in": 1,
        "clf_head_": LogisticRegression().fit([[0.0], [1.0]], [0, 1]),
    }
    for key in (*replace, *drop):
        payload.pop(key, None)
    payload.update(dict.fromkeys(replace, "placeholder"))
    skops.io.dump(payload, str(path))
    with zipfile.ZipFile(path) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    schema = json.loads(files["schema.json"])
    schema["content"].update(replace)
    files["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def runstring_node(code: str) -> dict[str, Any]:
    """A skops schema node that, if trusted, calls ``numpy.testing``'s ``runstring(code, {})``
    while loading: ``exec`` of any code, from a module that merely starts with ``numpy.``."""

    def node(cls: str, loader: str, content: Any, **extra: Any) -> dict[str, Any]:
        return {"__class__": cls, "__module__": "builtins", "__loader__": loader,
                "content": content, **extra}  # fmt: skip

    text = node("str", "JsonNode", json.dumps(code), is_json=True)
    empty = node("dict", "DictNode", {}, key_types=node("list", "ListNode", []))
    return {
        "__class__": "runstring",
        "__module__": "numpy.testing._private.utils",
        "__loader__": "ConstructorFromReduceNode",
        "content": node("tuple", "TupleNode", [text, empty]),
    }


def crafted_model(folder: Path, key: str = "clf_head_") -> Path:
    """A model file whose ``key`` node runs code (writing ``folder / "PWNED"``) if trusted."""
    code = f"open({str(folder / 'PWNED')!r}, 'w').write('code ran while loading')"
    return skops_payload(folder / "evil.skops", {key: runstring_node(code)})


def nothing_ran(folder: Path) -> None:
    assert not (folder / "PWNED").exists(), "the crafted model ran code while loading"


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def image_folder_with(folder: Path, name: str, build: Callable[[Path], Path]) -> Path:
    """A folder of one good image and ``build(folder / name)``."""
    images = folder / "imgs"
    write_photo(images / "good.png")
    build(images / name)
    return images


def real_cache_cut_in_half(folder: Path) -> Path:
    """A real diskcache database holding vectors, then cut to half its size."""
    import diskcache

    with diskcache.Cache(str(folder)) as cache:
        for i in range(2000):
            cache.set(f"text {i}", np.full(384, i, dtype=np.float32))
    data = (folder / "cache.db").read_bytes()
    (folder / "cache.db").write_bytes(data[: len(data) // 2])
    return folder


def not_a_database(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cache.db").write_bytes(b"this is not a database" * 100)
    return folder


def cached_call(folder: Path) -> Any:
    from embetter_core import SentenceEncoder, cached

    return cached(folder, SentenceEncoder()).transform(["a text"])


def corpus_of(folder: Path, name: str, body: str, **options: Any) -> Any:
    from embetter_core.corpus import read_corpus

    return read_corpus(write_text(folder / name, body), **options)


def one_row_jsonl(text: str) -> str:
    return json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": text}) + "\n"


def _load(path: Path) -> Any:
    from embetter_core.difference import DifferenceClassifier

    return DifferenceClassifier.load(path)


def _load_image(path: Path) -> Any:
    from embetter_core.encoders.vision import load_image

    return load_image(path)


def _read_images(folder: Path) -> Any:
    from embetter_core.corpus import read_corpus

    return read_corpus(folder)


def _check_texts(texts: list[str]) -> Any:
    from embetter_core.encoders import check_texts

    return check_texts(texts)


def _clip_check(items: list[Any], text_items: bool = False) -> list[Any]:
    """``ClipEncoder.validate_input`` of ``items``, each a ``TextItem`` if ``text_items``
    (no model loads)."""
    from embetter_core.encoders import ClipEncoder

    items = ClipEncoder.text_items(items) if text_items else items
    checked = ClipEncoder(TINY_CLIP).validate_input(items)
    assert checked == items
    return checked


def pairs_with(folder: Path, text: str) -> Any:
    """``read_pairs`` of a pair file whose second row's ``y`` is ``text``."""
    from embetter_core.difference import read_pairs

    path = write_text(folder / "p.csv", f"x,y,same\nred car,a red car,1\nblue sky,{text},0\n")
    return read_pairs(path, "x", "y", "same")


# -- the library table (helper-9): the library refuses these before any work ---------------
def _library_cases() -> list[Case]:
    from embetter_core.errors import CacheCorruptError, CorpusError, ImageTooLargeError

    invisible = [
        ("nul", "\x00"),
        ("zero-width-space", "\u200b"),
        ("byte-order-mark", "\ufeff"),
        ("mixed-invisible", "\u200b \u2060\u00ad\x00\n"),
    ]
    return [
        # item 1: a crafted .skops names a function outside what save writes
        Case(
            "model-schema-names-numpy-runstring",
            lambda d: _load(crafted_model(d)),
            ValueError,
            ("refusing to load", "numpy.testing._private.utils.runstring"),
            then=nothing_ran,
        ),
        Case(
            "model-runstring-under-another-key",
            lambda d: _load(crafted_model(d, key="features")),
            ValueError,
            ("numpy.testing._private.utils.runstring",),
            then=nothing_ran,
        ),
        Case(
            "model-without-fingerprint",
            lambda d: _load(skops_payload(d / "m.skops", {}, drop=("fingerprint",))),
            ValueError,
            ("lacks ['fingerprint']", "not written by DifferenceClassifier.save"),
        ),
        Case(
            "model-without-head",
            lambda d: _load(skops_payload(d / "m.skops", {}, drop=("clf_head_",))),
            ValueError,
            ("lacks ['clf_head_']",),
        ),
        # item 5: huge images are refused before they are decoded
        Case(
            "image-12000x12000-png",
            lambda d: _load_image(write_png(d / "huge.png", 12_000, 12_000)),
            ImageTooLargeError,
            ("huge.png", "12000 x 12000 = 144,000,000 pixels", "limit is 50,000,000 pixels"),
        ),
        Case(
            "image-beyond-pil-bomb-limit",
            lambda d: _load_image(write_png(d / "bomb.png", 20_000, 20_000)),
            ImageTooLargeError,
            ("bomb.png", "embetter_core.encoders.vision.MAX_IMAGE_PIXELS"),
        ),
        Case(
            "image-folder-holding-a-huge-png",
            lambda d: _read_images(
                image_folder_with(d, "huge.png", lambda p: write_png(p, 12_000, 12_000))
            ),
            CorpusError,
            ("(id 'huge.png'): image too large (12000 x 12000 = 144,000,000 pixels",),
        ),
        # item 6: data cut short passes verify() but not a decode
        Case(
            "image-folder-png-data-cut-short",
            lambda d: _read_images(
                image_folder_with(d, "short.png", lambda p: write_png(p, 64, 64, finish=False))
            ),
            CorpusError,
            ("(id 'short.png'): unreadable image: OSError: image file is truncated",),
        ),
        Case(
            "image-folder-jpeg-cut-short",
            lambda d: _read_images(image_folder_with(d, "cut.jpg", truncated_jpeg)),
            CorpusError,
            ("(id 'cut.jpg'): unreadable image: OSError: image file is truncated",),
        ),
        Case(
            "jsonl-text-lone-surrogate",
            lambda d: corpus_of(d, "c.jsonl", '{"text": "ok"}\n{"text": "bad \\ud800 text"}\n'),
            CorpusError,
            ("row 1 (id '1'): text cannot be written as UTF-8: lone surrogate",),
        ),
        Case(
            "jsonl-id-lone-surrogate",
            lambda d: corpus_of(
                d,
                "c.jsonl",
                '{"k": "a", "text": "x"}\n{"k": "\\udc80", "text": "y"}\n',
                id_column="k",
            ),
            CorpusError,
            ("row 1 (id '\\udc80'): id cannot be written as UTF-8",),
        ),
        Case(
            "encoder-text-lone-surrogate",
            lambda d: _check_texts(["fine", "bad \ud800"]),
            ValueError,
            ("text input at position 1 cannot be written as UTF-8",),
        ),
        Case(
            "clip-text-lone-surrogate",
            lambda d: _clip_check(["fine", "bad \ud800"]),
            ValueError,
            ("text input at position 1 cannot be written as UTF-8: lone surrogate '\\ud800'",),
        ),
        Case(
            "clip-text-item-lone-surrogate",
            lambda d: _clip_check(["fine", "caf\u00e9", "\udc80.png"], text_items=True),
            ValueError,
            ("text input at position 2 cannot be written as UTF-8",),
        ),
        Case("clip-accepts-valid-texts", lambda d: _clip_check(["fine", "caf\u00e9 \u2603"]), None),
        Case(
            "clip-accepts-valid-text-items",
            lambda d: _clip_check(["fine", "caf\u00e9.png"], text_items=True),
            None,
        ),
        # item 8: texts that show nothing are empty texts
        *(
            Case(
                f"jsonl-text-only-{name}",
                lambda d, text=text: corpus_of(d, "c.jsonl", one_row_jsonl(text)),
                CorpusError,
                ("row 1 (id '1'): empty text (only invisible characters",),
            )
            for name, text in invisible
        ),
        Case(
            "txt-line-of-zero-width-spaces",
            lambda d: corpus_of(d, "c.txt", "fine\n\u200b\u200b\u200b\nok\n"),
            CorpusError,
            ("row 1 (id '1'): empty text (only invisible characters",),
        ),
        Case(
            "pair-file-empty-text",
            lambda d: pairs_with(d, ""),
            ValueError,
            ("row 2 has no value in 'y'",),
        ),
        Case(
            "pair-file-text-only-zero-width-space",
            lambda d: pairs_with(d, "\u200b"),
            ValueError,
            ("row 2 has no value in 'y'",),
        ),
        # item 7: a damaged cache database names its folder and the fix; never retried
        Case(
            "cache-db-not-sqlite",
            lambda d: cached_call(not_a_database(d / "mycache")),
            CacheCorruptError,
            ("mycache' is damaged", "file is not a database", "Delete the folder"),
        ),
        Case(
            "cache-db-cut-in-half",
            lambda d: cached_call(real_cache_cut_in_half(d / "halfcache")),
            CacheCorruptError,
            ("halfcache' is damaged", "database disk image is malformed", "--cache-dir"),
        ),
    ]


LIBRARY_CASES: list[Case] = _library_cases()


# -- the table ------------------------------------------------------------------------------
FLOW_CASES: list[Case] = [
    Case(
        "report-dir-overwrites-the-corpus",
        lambda d: embed(d, csv_corpus(d, "pairs.csv"), "--report-dir", d),
        CliError,
        ("pairs.csv", "--report-dir", "input"),
        then=unchanged("pairs.csv"),
    ),
    Case(
        "report-dir-overwrites-the-corpus-through-a-symlink",
        lambda d: (
            (d / "link").symlink_to(d, target_is_directory=True),
            embed(d, csv_corpus(d, "report.html"), "--report-dir", d / "link"),
        ),
        CliError,
        ("report.html", "--report-dir", "input"),
        then=unchanged("report.html"),
    ),
    Case(
        "image-folder-with-a-text-encoder",
        lambda d: embed(d, image_folder(d)),
        CliError,
        ("folder of images", "--encoder clip"),
    ),
    Case(
        "cache-dir-is-a-file",
        lambda d: embed(d, csv_corpus(d), "--cache-dir", csv_corpus(d, "c.csv")),
        CliError,
        ("--cache-dir", "is a file"),
    ),
    Case(
        "max-in-flight-zero",
        lambda d: embed(d, csv_corpus(d), "--max-in-flight", "0"),
        CliError,
        ("--max-in-flight",),
    ),
    Case(
        "train-output-is-a-folder",
        lambda d: train(d, "--output", d),
        CliError,
        ("--output", "is a folder"),
    ),
    Case(
        "train-cache-dir-is-a-file",
        lambda d: train(d, "--cache-dir", pair_file(d)),
        CliError,
        ("--cache-dir", "is a file"),
    ),
    Case(
        "embed-model-not-available-offline",
        lambda d: embed(d, csv_corpus(d), "--model", "no-such-org/no-such-model"),
        CliError,
        ("no-such-org/no-such-model", "not available offline"),
        nothing_written,
    ),
    Case(
        "train-model-not-available-offline",
        lambda d: train(d, "--model", "no-such-org/no-such-model"),
        CliError,
        ("no-such-org/no-such-model", "not available offline"),
    ),
    Case(
        "output-is-a-hard-link-to-the-corpus",
        lambda d: check_outputs_apart(
            {"corpus": csv_corpus(d)}, {"--output": hard_link(d / "corpus.csv", d / "e.h5")}
        ),
        OutputClashError,
        ("--output", "input corpus"),
    ),
    Case(
        "output-image-inside-the-image-folder",
        lambda d: check_outputs_apart(
            {"corpus": image_folder(d)}, {"--write-deduplicated": d / "images" / "sub/x.png"}
        ),
        OutputClashError,
        ("--write-deduplicated", "into the folder of the input"),
    ),
    Case(
        "two-outputs-are-one-file",
        lambda d: check_outputs_apart({}, {"pairs.csv": d / "p.csv", "--other": d / "./p.csv"}),
        OutputClashError,
        ("--other and pairs.csv are the same file",),
    ),
    Case(
        "invalid-rows-name-the-cli-flag",
        lambda d: read_corpus(csv_corpus(d, texts=["fine", "", "also fine"])),
        ValueError,
        ("row 1", "--skip-invalid"),
    ),
    Case("markdown-artifact-escapes-ids", markdown_of_hostile_ids, None),
    Case("csv-formula-cells-prefixed-when-asked", lambda d: formula_cells(d, True), None),
    Case("csv-formula-cells-as-they-are-by-default", lambda d: formula_cells(d, False), None),
    Case("cli-spreadsheet-safe-option", lambda d: spreadsheet_option(csv_corpus(d)), None),
]


CASES: list[Case] = [*LIBRARY_CASES, *FLOW_CASES]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # A case that got past its check would start a flow: make it fail fast, without a server
    # (Prefect reads its settings once: an environment variable set now would not count).
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        if case.error is None:
            case.run(tmp_path)
        else:
            with pytest.raises(case.error) as caught:
                case.run(tmp_path)
            message = str(caught.value)
            for fragment in case.says:
                assert fragment in message, f"{fragment!r} not in: {message}"
            if isinstance(caught.value, CliError):
                assert "Traceback" not in message and len(message.splitlines()) <= 3, message
    if case.then is not None:
        case.then(tmp_path)


# -- cases that need a model or a Prefect server --------------------------------------------
def text_rows_that_look_like_images(folder: Path) -> list[str]:
    """A text corpus's rows: an existing image's path, a missing ``.png``, a plain text."""
    return [str(image_folder(folder) / "0.png"), "holiday-photo.png", "a photo of a cat"]


def encode_texts(tiny_clip, texts: list[str]) -> np.ndarray:
    """The in-memory tiny model's text vectors."""
    import torch

    with torch.inference_mode():
        tokens = tiny_clip["tokenizer"](texts)
        return tiny_clip["model"].encode_text(tokens, normalize=True).numpy()


def test_clip_encodes_a_text_corpus_as_texts(tiny_clip, tmp_path):
    from embetter_core import ClipEncoder, cached

    enc = ClipEncoder(TINY_CLIP, pretrained=str(tiny_clip["checkpoint"]), device="cpu")
    texts = text_rows_that_look_like_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="holiday-photo.png"):
        enc.transform(texts)  # plain strings: a name ending in .png is a file
    expected = encode_texts(tiny_clip, texts)
    np.testing.assert_allclose(enc.transform(ClipEncoder.text_items(texts)), expected, atol=1e-5)
    cache = cached(tmp_path / "cache", enc)
    np.testing.assert_allclose(cache.transform(enc.text_items(texts)), expected, atol=1e-5)
    plain = cache.transform(texts[2:])  # a plain text shares the marked text's cache entry
    assert cache.last_stats_["hits"] == 1
    np.testing.assert_allclose(plain, expected[2:], atol=1e-5)


@pytest.mark.slow
def test_clip_flow_on_a_text_corpus_embeds_texts(prefect_harness, tiny_clip, tmp_path):
    from flows.embed_corpus import embed_corpus

    texts = text_rows_that_look_like_images(tmp_path)
    result = embed_corpus(
        input_path=str(csv_corpus(tmp_path, texts=texts)),
        encoder="clip",
        model=TINY_CLIP,
        pretrained=str(tiny_clip["checkpoint"]),
        output=str(tmp_path / "e.h5"),
        cache_dir=str(tmp_path / "cache"),
        report_dir=str(tmp_path / "report"),
    )
    with h5py.File(result.store_path) as f:
        np.testing.assert_allclose(f["embeddings"][:], encode_texts(tiny_clip, texts), atol=1e-5)


@pytest.mark.slow
def test_flow_spreadsheet_safe_reaches_pairs_csv(prefect_harness, tmp_path):
    import csv

    from flows.embed_corpus import embed_corpus

    texts = ['=HYPERLINK("http://evil","click here")', '=HYPERLINK("http://evil","click here!")']
    result = embed_corpus(
        input_path=str(csv_corpus(tmp_path, texts=[*texts, "stock prices fell sharply"])),
        output=str(tmp_path / "e.h5"),
        cache_dir=str(tmp_path / "cache"),
        report_dir=str(tmp_path / "report"),
        spreadsheet_safe=True,
    )
    rows = list(csv.DictReader(Path(result.pairs_csv).read_text(encoding="utf-8").splitlines()))
    assert [(r["text_a"], r["text_b"]) for r in rows] == [("'" + texts[0], "'" + texts[1])]
