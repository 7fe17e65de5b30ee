"""A flow's parameters, declared once: a pydantic model.

Each field's type, default, constraints and ``Field(description=...)`` give the flow its
signature (what Prefect validates, stores in a deployment and shows in the UI, descriptions
included) and the command line its options. A new parameter is one field plus its use::

    @flow_with_params(EmbedParams, name="embed-corpus")
    def embed_corpus(params: EmbedParams) -> EmbedResult: ...

    embed_corpus(input_path="corpus.csv", chunk_size=500)  # one argument per field

>>> from typing import Annotated
>>> from pydantic import BaseModel, Field
>>> class Params(BaseModel):
...     corpus: Annotated[str, Cli(positional=True)] = Field(description="the corpus file")
...     chunk_size: int = Field(1000, ge=1, description="rows per chunk")
>>> @flow_parameters(Params)
... def run(params: Params) -> int:
...     '''Count to the chunk size.'''
...     return params.chunk_size
>>> import inspect
>>> list(inspect.signature(run).parameters)
['corpus', 'chunk_size']
>>> run("a.csv", chunk_size=8)
8
>>> parser = argparse.ArgumentParser()
>>> add_options(parser, Params)
>>> options_given(parser.parse_args(["a.csv"]), Params)  # the model keeps the defaults
{'corpus': 'a.csv'}
>>> "rows per chunk (default: 1000)" in parser.format_help()
True
"""

from __future__ import annotations

import argparse
import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from prefect import Flow, flow
from prefect.utilities.hashing import file_hash
from pydantic import BaseModel
from pydantic.fields import FieldInfo

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")


@dataclass(frozen=True)
class Cli:
    """How a field shows on the command line, where ``--field-name`` does not fit; put it in
    the field's ``Annotated[...]`` (pydantic and Prefect ignore it).

    Attributes:
        flag: the option's name (``"--model"``), or a positional argument's display name.
        positional: an argument rather than an option (optional when the field has a default).
        required: the option must be given on the command line although the flow has a default.
        hidden: not on the command line (the CLI sets the field another way).
    """

    flag: str | None = None
    positional: bool = False
    required: bool = False
    hidden: bool = False


def cli_of(field: FieldInfo) -> Cli:
    """The field's :class:`Cli`, or the default one."""
    return next((m for m in field.metadata if isinstance(m, Cli)), Cli())


def option_name(model: type[BaseModel], name: str) -> str:
    """How the command line names field ``name`` of ``model``: ``--field-name``, its
    :class:`Cli` flag, or a positional argument's name (errors name the option this way).

    >>> class P(BaseModel):
    ...     chunk_size: int = 1
    >>> option_name(P, "chunk_size")
    '--chunk-size'
    """
    cli = cli_of(model.model_fields[name])
    if cli.positional:
        return cli.flag or name
    return cli.flag or "--" + name.replace("_", "-")


def flow_signature(model: type[BaseModel]) -> inspect.Signature:
    """One parameter per field of ``model``, in field order, with its type, constraints and
    default: the signature Prefect builds its parameter schema and validation from."""
    parameters = []
    for name, field in model.model_fields.items():
        metadata = [m for m in field.metadata if not isinstance(m, Cli)]
        annotation = Annotated[(field.annotation, *metadata)] if metadata else field.annotation
        default = (
            inspect.Parameter.empty
            if field.is_required()
            else field.get_default(call_default_factory=True)
        )
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=default,
                annotation=annotation,
            )
        )
    return inspect.Signature(parameters)


def args_section(model: type[BaseModel]) -> str:
    """A Google-style ``Args:`` section of the fields' descriptions; Prefect reads parameter
    descriptions for its UI from the flow's docstring."""
    lines = ["Args:"]
    for name, field in model.model_fields.items():
        text = (field.description or "").replace("\n", "\n        ")
        lines.append(f"    {name}: {text}")
    return "\n".join(lines)


def flow_parameters(model: type[M]) -> Callable[[Callable[[M], R]], Callable[..., R]]:
    """Decorator: ``fn(params: model)`` becomes a function of the model's fields.

    Put it under ``@flow`` (or use :func:`flow_with_params`): Prefect then sees one
    parameter per field (schema, validation, deployments, UI descriptions), and ``fn`` gets
    them as one validated model.
    """

    def decorate(fn: Callable[[M], R]) -> Callable[..., R]:
        signature = flow_signature(model)

        @functools.wraps(fn)
        def with_fields(*args: Any, **kwargs: Any) -> R:
            return fn(model(**signature.bind(*args, **kwargs).arguments))

        with_fields.__signature__ = signature  # type: ignore[attr-defined]
        with_fields.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        with_fields.__doc__ = f"{inspect.cleandoc(fn.__doc__ or '')}\n\n{args_section(model)}"
        return with_fields

    return decorate


def flow_with_params(
    model: type[M], **flow_options: Any
) -> Callable[[Callable[[M], R]], Flow[..., R]]:
    """``@flow(**flow_options)`` over :func:`flow_parameters`: a Prefect flow of the fields of
    ``model`` whose body gets one validated ``model``. Its version is the hash of the body's
    source file, as Prefect versions a plain flow (not of this module's)."""

    def decorate(fn: Callable[[M], R]) -> Flow[..., R]:
        source = inspect.getsourcefile(fn)
        options = {"version": file_hash(source), **flow_options} if source else flow_options
        return flow(**options)(flow_parameters(model)(fn))

    return decorate


def _argument_type(annotation: Any) -> tuple[Any, list[Any] | None, bool]:
    """``(type, choices, many)`` for argparse: ``X | None`` is ``X``, a ``Literal`` gives
    choices, ``list[X]`` takes one or more values."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            annotation = args[0]
    many = typing.get_origin(annotation) is list
    if many:
        (annotation,) = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        choices = list(typing.get_args(annotation))
        return type(choices[0]), choices, many
    return annotation, None, many


def _help(field: FieldInfo, required: bool) -> str:
    """The description, with the default when there is one worth naming."""
    text = field.description or ""
    default = None if required else field.get_default(call_default_factory=True)
    if default is not None and default is not False and "default:" not in text:
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        text = f"{text} (default: {shown})"
    return text.replace("%", "%%")


def add_options(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """Add an option per field of ``model`` to ``parser``: ``--field-name`` (or the field's
    :class:`Cli`), typed, with the field's choices and its description as help.

    Options not given are left out of the parsed namespace (``argparse.SUPPRESS``), so the
    model's defaults apply: read the values with :func:`options_given`.
    """
    for name, field in model.model_fields.items():
        cli = cli_of(field)
        if cli.hidden:
            continue
        kind, choices, many = _argument_type(field.annotation)
        required = field.is_required() or cli.required
        options: dict[str, Any] = {"help": _help(field, required), "default": argparse.SUPPRESS}
        if kind is bool:
            options["action"] = (
                "store_true" if not field.default else argparse.BooleanOptionalAction
            )
        else:
            options.update(type=kind, choices=choices)
            if many:
                options["nargs"] = "+"
        if cli.positional:
            if not field.is_required():
                options["nargs"] = "?"
            parser.add_argument(name, metavar=cli.flag or name, **options)
        else:
            flag = option_name(model, name)
            if kind is not bool and choices is None:
                options["metavar"] = flag.lstrip("-").replace("-", "_").upper()
            parser.add_argument(flag, dest=name, required=cli.required, **options)


def options_given(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The fields of ``model`` given on the command line, by field name."""
    return {name: value for name, value in vars(args).items() if name in model.model_fields}
