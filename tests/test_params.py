"""Each flow's parameters come from one pydantic model: the flow's signature, Prefect's
parameter schema and validation, and the command-line options (no flow run, no server)."""

from __future__ import annotations

import argparse
import inspect

import pytest
from prefect import flow
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema
from pydantic import BaseModel, Field

from flows.embed_corpus import EmbedParams, build_parser, embed_corpus
from flows.params import add_options, cli_of, flow_parameters, options_given
from flows.train_difference import TrainParams, parse_args, train_difference


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_options(parser, TrainParams)
    return parser


def check_one_declaration(flow_fn, model: type[BaseModel], parser: argparse.ArgumentParser):
    """Every field is a flow parameter (same default), in Prefect's schema (with its
    description and constraints) and a command-line option (its description as help)."""
    signature = inspect.signature(flow_fn)
    schema = parameter_schema(flow_fn).model_dump_for_openapi()
    actions = {a.dest: a for a in parser._actions}
    assert list(signature.parameters) == list(model.model_fields)
    for name, field in model.model_fields.items():
        param = signature.parameters[name]
        if field.is_required():
            assert param.default is inspect.Parameter.empty
            assert name in schema["required"]
        else:
            assert param.default == field.get_default(call_default_factory=True)
            assert schema["properties"][name]["default"] == param.default
        assert field.description, f"{name} has no description"
        assert schema["properties"][name]["description"] == field.description
        if cli_of(field).hidden:
            assert name not in actions
        else:
            assert actions[name].help.replace("%%", "%").startswith(field.description)


def test_flow_parameters_and_cli_options_come_from_one_model():
    check_one_declaration(embed_corpus, EmbedParams, build_parser())
    check_one_declaration(train_difference, TrainParams, train_parser())


def test_help_shows_every_description_and_default():
    text = " ".join(build_parser().format_help().split())
    for name, field in EmbedParams.model_fields.items():
        if not cli_of(field).hidden:
            assert " ".join(field.description.split()) in text, name
    assert "items per forward pass (default: 32)" in text
    assert "--skip-invalid drop empty" in text  # a bool is a flag
    assert "--encoder {sentence,clip,static}" in text  # a Literal gives choices


def test_a_new_field_is_a_flow_parameter_and_an_option():
    class Extended(EmbedParams):
        top_k: int = Field(7, ge=1, description="pairs to show per cluster")

    @flow(name="extended", validate_parameters=True)
    @flow_parameters(Extended)
    def extended(params: Extended) -> Extended:
        """A flow on the extended parameters."""
        return params

    schema = parameter_schema(extended).model_dump_for_openapi()["properties"]["top_k"]
    assert schema["default"] == 7 and schema["minimum"] == 1
    assert schema["description"] == "pairs to show per cluster"
    with pytest.raises(ParameterTypeError, match="top_k"):
        extended.validate_parameters({"top_k": 0})

    parser = argparse.ArgumentParser()
    add_options(parser, Extended)
    assert "pairs to show per cluster (default: 7)" in " ".join(parser.format_help().split())
    given = options_given(parser.parse_args(["--top-k", "3", "--chunk-size", "8"]), Extended)
    assert given == {"top_k": 3, "chunk_size": 8}
    params = extended.fn(**given)  # the flow body, without a run
    assert (params.top_k, params.chunk_size, params.output) == (3, 8, "out/embeddings.h5")


def test_cli_gives_only_the_flags_given_so_the_model_keeps_the_defaults(tmp_path):
    parser = build_parser()
    assert options_given(parser.parse_args([]), EmbedParams) == {}
    args = parser.parse_args(
        ["data.csv", "--skip-invalid", "--chunk-size", "8", "--threshold", "0.9"]
        + ["--encoder", "clip", "--model", "ViT-B-32", "--max-in-flight", "3"]
    )
    assert options_given(args, EmbedParams) == {
        "input_path": "data.csv",
        "skip_invalid": True,
        "chunk_size": 8,
        "threshold": 0.9,
        "encoder": "clip",
        "model": "ViT-B-32",
        "max_in_flight": 3,
    }
    assert (args.runner, args.dask_workers, args.no_progress) == ("thread", 2, False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--dedupe-method", "fast"])  # not a choice


def test_train_cli_keeps_its_flags_and_required_options():
    args = parse_args(
        ["pairs.csv", "--text-a", "a", "--text-b", "b", "--label", "y", "--output", "m.skops"]
        + ["--model", "all-MiniLM-L6-v2", "--features", "absdiff", "cosine", "--seed", "3"]
    )
    assert options_given(args, TrainParams) == {
        "pairs": "pairs.csv",
        "text_a": "a",
        "text_b": "b",
        "label": "y",
        "output": "m.skops",
        "model_name": "all-MiniLM-L6-v2",
        "features": ["absdiff", "cosine"],
        "seed": 3,
    }
    with pytest.raises(SystemExit):
        parse_args(["pairs.csv", "--text-b", "b", "--label", "y", "--output", "m.skops"])
    with pytest.raises(SystemExit):
        parse_args(["pairs.csv", "--text-a", "a", "--text-b", "b", "--label", "y"]
                   + ["--output", "m.skops", "--features", "nope"])  # fmt: skip


def test_prefect_validates_the_generated_signature():
    validated = embed_corpus.validate_parameters({"chunk_size": "8"})
    assert validated["chunk_size"] == 8 and validated["output"] == "out/embeddings.h5"
    with pytest.raises(ParameterTypeError, match="chunk_size"):
        embed_corpus.validate_parameters({"chunk_size": 0})
    with pytest.raises(ParameterTypeError, match="encoder"):
        embed_corpus.validate_parameters({"encoder": "word2vec"})
    with pytest.raises(ParameterTypeError, match="features"):
        train_difference.validate_parameters({"pairs": "p.csv", "features": ["nope"]})
    assert parameter_schema(train_difference).required == ["pairs"]


def test_flows_are_versioned_by_their_own_source_file():
    from prefect.utilities.hashing import file_hash

    import flows.embed_corpus
    import flows.train_difference

    assert embed_corpus.version == file_hash(flows.embed_corpus.__file__)
    assert train_difference.version == file_hash(flows.train_difference.__file__)


def test_the_model_validates_what_the_signature_cannot(tmp_path):
    assert EmbedParams().input_path.endswith("debian-sample.csv.gz")  # the demo corpus
    assert EmbedParams().id_column == "package"
    assert EmbedParams(input_path=None, id_column="source").id_column == "source"
    with pytest.raises(ValueError, match=r"\.h5 file"):
        EmbedParams(output="out/x.csv")
    with pytest.raises(ValueError, match="not found"):
        EmbedParams(input_path=str(tmp_path / "missing.csv"))
    with pytest.raises(ValueError, match="min_probability needs a difference_model"):
        EmbedParams(min_probability=0.5)
    spec = EmbedParams(encoder="clip", batch_size=8).encoder_spec()
    assert (spec.kind, spec.batch_size, spec.model_name) == ("clip", 8, "ViT-B-32")
    train = TrainParams(pairs="p.csv", output=str(tmp_path / "m.skops"), batch_size=4)
    assert train.eval_folder() == str(tmp_path)
    assert (train.encoder_spec().model_name, train.encoder_spec().batch_size) == (
        "all-MiniLM-L6-v2",
        4,
    )


def test_chunk_size_defaults_to_the_encoders():
    from embetter_core import SentenceEncoder, StaticEncoder

    assert EmbedParams().chunk_size == SentenceEncoder.chunk_size
    assert EmbedParams(encoder="static").chunk_size == StaticEncoder.chunk_size
    assert StaticEncoder.chunk_size > SentenceEncoder.chunk_size
    assert EmbedParams(encoder="static", chunk_size=7).chunk_size == 7
