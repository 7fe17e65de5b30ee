"""The parameters of the embed-corpus flow, declared once: :class:`EmbedParams` makes the
flow's signature (the Prefect UI's form, a deployment's parameters) and the command-line
options, and checks them together before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from embetter_core.corpus import corpus_kind
from embetter_core.dedupe import DEFAULT_THRESHOLD, REFERENCE_PAIRS_CSV, KeepRule, state_path
from embetter_core.dedupe.budget import parse_budget
from embetter_core.encoders import ENCODERS, EncoderSpec, encoder_class
from embetter_core.files import check_outputs_apart
from flows.params import Cli

DEMO_CORPUS = (
    Path(__file__).resolve().parent.parent / "embetter_core" / "data" / "debian-sample.csv.gz"
)


class EmbedParams(BaseModel):
    """The flow's parameters, validated together (paths, ranges, choices).

    Each field is a parameter of :func:`embed_corpus` and an option of the command line
    (``--field-name``); its description is the option's help and the Prefect UI's.

    >>> EmbedParams(chunk_size=500).id_column  # no input: the demo corpus, named by package
    'package'
    """

    input_path: Annotated[str | None, Cli(positional=True, flag="input")] = Field(
        None,
        description="corpus file (.csv[.gz], .parquet, .jsonl[.gz], .txt) or a folder of "
        "images; default: the bundled demo corpus (2,000 Debian package descriptions)",
    )
    text_column: str = Field("text", description="column holding the text")
    id_column: str | None = Field(
        None, description="column holding unique ids (default: row numbers)"
    )
    encoder: Literal[tuple(ENCODERS)] = Field(  # type: ignore[valid-type]  # registered kinds
        "sentence", description="sentence-transformers for text, or open_clip for images"
    )
    model: str | None = Field(
        None,
        description="model name or local path "
        "(default: all-MiniLM-L6-v2 for sentence, ViT-B-32 for clip)",
    )
    pretrained: str | None = Field(
        None,
        description="clip only: open_clip pretrained tag or local checkpoint (default: openai)",
    )
    output: str = Field("out/embeddings.h5", description="the .h5 store to write")
    cache_dir: str = Field(
        "out/cache", description="embedding cache root; one sub-folder per model"
    )
    chunk_size: int | None = Field(
        None,
        ge=1,
        description="rows per chunk/task (default: the encoder's, 1000; 10000 for static)",
    )
    batch_size: int = Field(32, ge=1, description="items per forward pass")
    threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="cosine similarity for a near-duplicate pair (default: the deciding "
        "encoder's recommended threshold, measured on the Debian labels; the report says "
        "which threshold ran and where it came from)",
    )
    review_floor: float | None = Field(
        None,
        gt=0,
        le=1,
        description="search down to this similarity so review.html's slider reaches below "
        "--threshold (e.g. --threshold 0.85 --review-floor 0.75); pairs.csv, removed.csv and "
        "report.html stay at --threshold; more candidate pairs to search and hold",
    )
    rescore: Literal[tuple(ENCODERS)] | None = Field(  # type: ignore[valid-type]
        None,
        description="two-stage dedupe, e.g. --encoder static --rescore sentence: the first "
        "encoder's vectors (the ones the store keeps) find candidate pairs at its candidate "
        "threshold, then only the rows in them are encoded with this encoder kind (its own "
        "cache folder) and decided at --threshold or its recommended one",
    )
    dedupe_method: Literal["auto", "exact", "ann", "partitioned"] = Field(
        "auto",
        description="exact blocked search, approximate (ann), ann out of core cell by cell "
        "(partitioned: the store read in blocks, the cells run on the Dask cluster with "
        "the dask runner), or auto by corpus size and memory budget",
    )
    memory_budget: str | None = Field(
        None,
        description="partitioned (and auto) dedupe: memory the search may hold per process, "
        "e.g. 2GiB or 512MB (default: a quarter of the machine's memory); auto runs "
        "partitioned when the vectors do not fit it",
    )
    dedupe_work_dir: str | None = Field(
        None,
        description="partitioned dedupe: folder for the partition files (default: beside "
        "the output store); on a cluster a path every worker can open",
    )
    report_dir: str = Field(
        "out/report", description="folder for pairs.csv, removed.csv and report.html"
    )
    keep: str = Field(
        "first",
        description="which row of near-duplicates is kept: first or last (input order), "
        "longest or shortest (text), or column:NAME[:desc|asc] (highest/lowest value of a "
        "numeric or date column); ties go to the first",
    )
    write_deduplicated: str | None = Field(
        None,
        description="also write the corpus without the removed rows to this path, in the "
        "input's format (for an image folder: a .txt of the kept paths)",
    )
    reference: str | None = Field(
        None,
        description="also list the rows that near-duplicate a row of this reference: a corpus "
        "file (read with the same text and id columns, embedded with the same encoder "
        "through the cache, its store written beside --output) or the .h5 store of an earlier "
        "run with the same encoder; writes reference_pairs.csv in --report-dir",
    )
    incremental: bool = Field(
        False,
        description="reuse the last run's dedupe (a .dedupe-state.npz file beside --output): "
        "only new and edited rows are searched; same result as a full run",
    )
    skip_invalid: bool = Field(
        False,
        description="drop empty/duplicate/unreadable rows and list them in the report "
        "instead of failing",
    )
    spreadsheet_safe: bool = Field(
        False,
        description="in pairs.csv, removed.csv and reference_pairs.csv, prefix an id or text "
        "starting with =, +, -, @, tab or carriage return with ' so a spreadsheet shows it as "
        "text instead of running it as a formula; without it values are written as they are",
    )
    difference_model: str | None = Field(
        None,
        description="a DifferenceClassifier saved by flows.train_difference (.skops): adds "
        "each pair's probability to the report",
    )
    min_probability: float | None = Field(
        None,
        ge=0,
        le=1,
        description="with a difference model: keep only pairs whose probability is at least this",
    )
    backend: Literal["local", "modal"] = Field(
        "local", description="encode here, or on Modal GPUs (needs `modal setup`)"
    )
    gpu: str = Field("any", description="Modal GPU type with the modal backend, e.g. A10G")
    max_in_flight: int = Field(
        1,
        ge=1,
        description="chunks encoded at once (default: 1; on the command line with "
        "--runner dask, 2 per Dask worker)",
    )
    progress_bar: Annotated[bool, Cli(hidden=True)] = Field(
        False,
        description="show a progress bar on stderr (the command line does on a terminal, "
        "unless --no-progress)",
    )

    @model_validator(mode="before")
    @classmethod
    def _demo_corpus(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("input_path") is None:
            data = {**data, "input_path": str(DEMO_CORPUS)}
            if data.get("id_column") is None:
                data["id_column"] = "package"  # name the demo rows by their Debian package
        return data

    @field_validator("output")
    @classmethod
    def _h5_suffix(cls, value: str) -> str:
        if not value.endswith((".h5", ".hdf5")):
            raise ValueError(f"output must be an .h5 file, got {value!r}")
        return value

    @model_validator(mode="after")
    def _encoder_chunk_size(self) -> EmbedParams:
        if self.chunk_size is None:  # seconds of encoding per task, whatever the encoder
            self.chunk_size = encoder_class(self.encoder).chunk_size
        return self

    @field_validator("keep")
    @classmethod
    def _keep_rule(cls, value: str) -> str:
        return str(KeepRule.parse(value))  # a bad rule fails here, before any work

    @field_validator("memory_budget")
    @classmethod
    def _budget(cls, value: str | None) -> str | None:
        if value is not None:
            parse_budget(value)  # a bad size fails here, before any work
        return value

    @field_validator("input_path", "difference_model", "reference")
    @classmethod
    def _exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).exists():
            raise ValueError(f"not found: {value}")
        return value

    @field_validator("cache_dir")
    @classmethod
    def _cache_is_a_folder(cls, value: str) -> str:
        if Path(value).exists() and not Path(value).is_dir():
            raise ValueError(f"{value} is a file; expected a folder for the embedding cache")
        return value

    @model_validator(mode="after")
    def _encoder_reads_the_corpus(self) -> EmbedParams:
        assert self.input_path is not None  # the demo corpus when none is given
        kind = corpus_kind(self.input_path)
        if kind not in encoder_class(self.encoder).modalities:
            what = "a folder of images" if kind == "image" else "a text corpus"
            readers = [k for k in ENCODERS if kind in encoder_class(k).modalities]
            raise ValueError(
                f"{self.input_path} is {what}, which the {self.encoder!r} encoder cannot read: "
                f"use encoder={readers[0]!r} (--encoder {readers[0]})"
            )
        return self

    @model_validator(mode="after")
    def _reference_like_the_corpus(self) -> EmbedParams:
        assert self.input_path is not None
        if self.reference is None or is_store(self.reference):
            return self
        kind, ref_kind = corpus_kind(self.input_path), corpus_kind(self.reference)
        if kind != ref_kind:
            what = {"image": "a folder of images", "text": "a text corpus"}
            raise ValueError(
                f"reference {self.reference} is {what[ref_kind]} but the input is "
                f"{what[kind]}: give a reference of the same kind, or the .h5 store of an "
                "earlier run"
            )
        return self

    @model_validator(mode="after")
    def _outputs_apart(self) -> EmbedParams:
        check_outputs_apart(self.input_paths(), self.output_paths())
        return self

    @model_validator(mode="after")
    def _review_floor_below_threshold(self) -> EmbedParams:
        if self.review_floor is None:
            return self
        if self.incremental or self.rescore:
            which = "--incremental" if self.incremental else "--rescore"
            raise ValueError(
                f"review_floor cannot be combined with {which} (it searches at its own "
                "threshold): drop one of them"
            )
        threshold, _ = self.threshold_choice()
        if self.review_floor > threshold:
            raise ValueError(
                f"review_floor {self.review_floor:g} is above the threshold {threshold:g}: "
                "the review page reaches below the threshold, so give a lower floor"
            )
        return self

    @model_validator(mode="after")
    def _probability_needs_model(self) -> EmbedParams:
        if self.min_probability is not None and not self.difference_model:
            raise ValueError("min_probability needs a difference_model to score the pairs")
        return self

    @model_validator(mode="after")
    def _rescore_combinations(self) -> EmbedParams:
        if self.rescore is None:
            return self
        assert self.input_path is not None
        fix = "drop --rescore, or"
        if corpus_kind(self.input_path) == "image":
            raise ValueError(
                f"--rescore re-encodes texts, but {self.input_path} is a folder of images: "
                "drop --rescore"
            )
        if self.rescore == self.encoder:
            raise ValueError(
                f"--rescore {self.rescore} is the --encoder itself: {fix} rescore a fast "
                "first stage with a better encoder (--encoder static --rescore sentence)"
            )
        if encoder_class(self.encoder).candidate_threshold is None:
            firsts = [k for k in ENCODERS if encoder_class(k).candidate_threshold is not None]
            raise ValueError(
                f"--rescore needs a fast first-stage --encoder with a candidate threshold "
                f"({', '.join(firsts)}); --encoder {self.encoder} has none: {fix} use "
                f"--encoder {firsts[0]}"
            )
        others = {
            "backend": (
                self.backend == "modal",
                "--backend modal (both stages run on this machine; a static first stage "
                "encodes thousands of texts/s on a CPU)",
            ),
            "incremental": (
                getattr(self, "incremental", False),
                "--incremental (it reuses the last run's one-encoder pairs)",
            ),
            "reference": (
                getattr(self, "reference", None) is not None,
                "--reference (it is matched on the stored first-stage vectors)",
            ),
        }
        for given, what in others.values():
            if given:
                raise ValueError(f"--rescore does not combine with {what}: drop one of them")
        return self

    def input_paths(self) -> dict[str, str | None]:
        """The files the run reads, named as a user knows them."""
        return {
            "corpus": self.input_path,
            "--difference-model": self.difference_model,
            "--reference": self.reference,
        }

    def output_paths(self) -> dict[str, str | None]:
        """Every file the run writes, named as a user knows them: one refused before any work
        if it would overwrite an input or another output. A new output is one line here."""
        report = Path(self.report_dir)
        return {
            "--output": self.output,
            "pairs.csv in --report-dir": str(report / "pairs.csv"),
            "removed.csv in --report-dir": str(report / "removed.csv"),
            "report.html in --report-dir": str(report / "report.html"),
            "--write-deduplicated": self.write_deduplicated,
            "reference_pairs.csv in --report-dir": str(report / REFERENCE_PAIRS_CSV)
            if self.reference
            else None,
            "the reference's store beside --output": self.reference_store(),
            "the dedupe state beside --output": str(state_path(self.output))
            if self.incremental
            else None,
        }

    def reference_store(self) -> str | None:
        """Where a reference corpus file's embeddings go: beside ``--output``
        (``data.h5`` -> ``data.reference.h5``); None without a reference or for a store."""
        if self.reference is None or is_store(self.reference):
            return None
        return str(Path(self.output).with_suffix(".reference.h5"))

    def encoder_spec(self) -> EncoderSpec:
        """The encoder these parameters describe."""
        return EncoderSpec(
            kind=self.encoder,
            model=self.model,
            pretrained=self.pretrained,
            batch_size=self.batch_size,
            backend=self.backend,
            gpu=self.gpu,
        )

    def rescore_spec(self) -> EncoderSpec | None:
        """The second-stage encoder of a two-stage dedupe (``--rescore``, its default model),
        else ``None``."""
        if self.rescore is None:
            return None
        return EncoderSpec(kind=self.rescore, batch_size=self.batch_size)

    def threshold_choice(self) -> tuple[float, str]:
        """The threshold that decides the pairs, and where it comes from: ``--threshold``
        when given, else the deciding encoder's (``--rescore``'s, or ``--encoder``'s)
        ``recommended_threshold``, else ``DEFAULT_THRESHOLD``.

        >>> EmbedParams(threshold=0.9).threshold_choice()
        (0.9, 'given (--threshold)')
        >>> EmbedParams().threshold_choice()  # doctest: +ELLIPSIS
        (0.82, 'recommended for the sentence encoder (best removal F1 on the Debian ...)')
        """
        if self.threshold is not None:
            return self.threshold, "given (--threshold)"
        kind, model = (self.rescore, None) if self.rescore else (self.encoder, self.model)
        cls = encoder_class(kind)
        if cls.recommended_threshold is None:
            return DEFAULT_THRESHOLD, f"default, not measured for the {kind} encoder"
        source = (
            f"recommended for the {kind} encoder (best removal F1 on the Debian same-source labels)"
        )
        if model is not None and model != cls._init_default("name"):
            source += f"; measured with its default model, not {model}"
        return cls.recommended_threshold, source


def is_store(path: str) -> bool:
    """Whether ``path`` names an ``.h5`` store (else a corpus file or an image folder).

    >>> is_store("out/train.h5"), is_store("train.csv")
    (True, False)
    """
    return path.lower().endswith((".h5", ".hdf5"))
