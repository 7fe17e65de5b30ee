"""Every exception class in ``embetter_core.errors`` survives a pickle round trip with its
message and attributes: Prefect pickles a failed task's exception (results, Dask workers)."""

from __future__ import annotations

import inspect
import pickle

import pytest

from embetter_core import errors

CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, BaseException) and cls.__module__ == errors.__name__
]

# A value for each constructor parameter any class in errors.py takes; a new class with a new
# parameter fails below until it is given one here.
SAMPLES = {
    "message": "row 3 of corpus.csv: bad",
    "path": "/data/images/cat.png",
    "size": (12_000, 9_000),
    "folder": "/data/cache/model-abc",
    "missing": ("text",),
    "columns": ("id", "body"),
}


def test_every_class_is_found():
    assert len(CLASSES) >= 15 and errors.UnreadableImageError in CLASSES


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_pickle_keeps_message_and_attributes(cls):
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    if params in (["args", "kwargs"], ["args"]):  # the built-in constructor
        params = ["message"]
    unknown = [p for p in params if p not in SAMPLES]
    assert not unknown, f"give {cls.__name__}'s parameters {unknown} a sample value"
    exc = cls(*(SAMPLES[p] for p in params))
    for protocol in (pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL):
        back = pickle.loads(pickle.dumps(exc, protocol=protocol))
        assert type(back) is cls
        assert str(back) == str(exc) == SAMPLES["message"]
        assert vars(back) == vars(exc)
        for name in params[1:]:
            assert getattr(back, name) == SAMPLES[name]
