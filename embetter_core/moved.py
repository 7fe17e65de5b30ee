"""Module paths from before the layout of ``embetter_core/`` followed its architecture
(``encoders/``, ``dedupe/``, ``corpus/``, ``difference/``), kept working for a while.

``import embetter_core.text`` still gives the module now at ``embetter_core.encoders.text``,
with a ``DeprecationWarning`` naming the new path, so scripts, pickles (a pickled pipeline
names its classes' modules) and saved models from earlier versions keep loading. A module
that was split (``embetter_core.keep``: the keep rule went to ``dedupe.keep``, reading a
keep column to ``corpus.columns``) is a stand-in that finds each name where it went.

>>> import sys, warnings
>>> _ = sys.modules.pop("embetter_core.text", None)  # imported before: no second warning
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     from embetter_core.text import SentenceEncoder
>>> SentenceEncoder.__module__, caught[0].category.__name__
('embetter_core.encoders.text', 'DeprecationWarning')
>>> current_name("embetter_core.keep.KeepRule")
'embetter_core.dedupe.keep.KeepRule'
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Sequence
from typing import Any

#: old module -> the modules its names are in now (the first holds most of them)
MOVED: dict[str, tuple[str, ...]] = {
    "embetter_core.base": ("embetter_core.encoders.base",),
    "embetter_core.text": ("embetter_core.encoders.text",),
    "embetter_core.static": ("embetter_core.encoders.static",),
    "embetter_core.vision": ("embetter_core.encoders.vision",),
    "embetter_core.grab": ("embetter_core.encoders.grab",),
    "embetter_core.cache": ("embetter_core.encoders.cache",),
    "embetter_core.spec": ("embetter_core.encoders.spec",),
    "embetter_core.model": ("embetter_core.difference.model",),
    "embetter_core.evaluation": ("embetter_core.difference.evaluation",),
    "embetter_core.outputs": ("embetter_core.corpus.writing",),
    "embetter_core.reference": ("embetter_core.dedupe.reference",),
    "embetter_core.rescore": ("embetter_core.dedupe.rescore",),
    "embetter_core.incremental": ("embetter_core.dedupe.incremental", "embetter_core.dedupe.state"),
    "embetter_core.keep": ("embetter_core.dedupe.keep", "embetter_core.corpus.columns"),
}


def current_name(dotted: str) -> str:
    """``module.Name`` as it is called now (unchanged when its module did not move)."""
    module, _, name = dotted.rpartition(".")
    targets = MOVED.get(module)
    if not targets:
        return dotted
    for target in targets:
        if hasattr(importlib.import_module(target), name):
            return f"{target}.{name}"
    return f"{targets[0]}.{name}"


class _SplitModule(types.ModuleType):
    """A stand-in for a module that was split: each name comes from where it went."""

    _targets: Sequence[str] = ()

    def __getattr__(self, name: str) -> Any:
        for target in self._targets:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of :data:`MOVED` and loads what they became."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        targets = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {' and '.join(targets)}; import from there (or from "
            "embetter_core); the old path will be removed in a later version",
            DeprecationWarning,
            stacklevel=2,
        )
        if len(targets) == 1:
            return importlib.import_module(targets[0])
        module = _SplitModule(spec.name)
        module._targets = targets
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the modules behind the old path are imported already."""


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
