"""The layout shows the architecture: read from the source with ``ast``, the import graph of
``embetter_core``, ``tasks`` and ``flows`` has no cycle and no import from a lower layer up
to a higher one (imports inside functions and under ``TYPE_CHECKING`` count), no module is
over 700 lines, and no underscore name is imported from outside the package it lives in.

``python tests/test_layout.py`` prints the graph's findings without running pytest.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("embetter_core", "tasks", "flows")
#: Lowest first. A module may import from its own layer and the ones below it, never above;
#: the first prefix that matches a module names its layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("embetter_core.errors", "embetter_core.files", "embetter_core.moved"),
    ("embetter_core.encoders",),
    ("embetter_core.offload",),
    ("embetter_core.store",),
    ("embetter_core.dedupe",),
    ("embetter_core.corpus",),
    ("embetter_core.difference",),
    ("embetter_core.report", "embetter_core.review"),
    ("embetter_core",),  # the package's public face: __init__ and the old-path aliases
    ("tasks",),
    ("flows",),
)
MAX_LINES = 700
#: Where other code may live that imports the library (checked for private imports only).
#: ``tests/`` is not a client: its unit tests are white-box and may call a package's private
#: helpers, as scikit-learn's ``sklearn/neighbors/tests`` call ``sklearn.neighbors._base``.
CLIENTS = ("benchmarks",)


@dataclass(frozen=True)
class Import:
    """One import statement's target, as found in ``module`` at ``line``."""

    module: str  # the importing module
    target: str  # the imported module
    names: tuple[str, ...]  # names taken from it (``from target import names``)
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(roots: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` under ``roots``."""
    files: dict[str, Path] = {}
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            if "data" not in path.relative_to(ROOT).parts[1:-1]:
                files[module_name(path)] = path
    return files


def package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports(module: str, path: Path, known: set[str]) -> list[Import]:
    """Every import in the file, anywhere in it (functions and ``TYPE_CHECKING`` included),
    resolved to a module: ``from a.b import c`` targets ``a.b.c`` when that is a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = package_of(module, path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from its package, up level - 1
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    found.append(Import(module, sub, (), node.lineno))
                else:
                    found.append(Import(module, base, (alias.name,), node.lineno))
    return found


def layer(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def graph() -> tuple[dict[str, Path], list[Import]]:
    files = source_files()
    known = set(files)
    edges = [
        imp
        for module, path in files.items()
        for imp in imports(module, path, known)
        if imp.target in known and imp.target != module
    ]
    return files, edges


def cycles(edges: list[Import]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    succ: dict[str, set[str]] = {}
    for e in edges:
        succ.setdefault(e.module, set()).add(e.target)
        succ.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(succ):
        if v not in index:
            visit(v)
    return out


def upward(edges: list[Import]) -> list[str]:
    """Imports from a lower layer to a higher one."""
    bad = []
    for e in edges:
        a, b = layer(e.module), layer(e.target)
        if a is not None and b is not None and b > a:
            bad.append(f"{e.module}:{e.line} imports {e.target} (layer {a} -> {b})")
    return bad


def private_imports() -> list[str]:
    """Underscore names (and underscore modules) imported from outside their package."""
    lib = source_files()
    files = {**lib, **source_files(CLIENTS)}
    known = set(files)
    bad = []
    for module, path in files.items():
        mine = package_of(module, path)
        for imp in imports(module, path, known):
            if imp.target.split(".")[0] not in PACKAGES or imp.target not in lib:
                continue
            owner = package_of(imp.target, lib[imp.target])
            leaf = imp.target.rpartition(".")[2]
            private = [n for n in imp.names if n.startswith("_") and not n.startswith("__")]
            if leaf.startswith("_") and leaf != "__init__":
                private.append(f"module {leaf}")
                owner = imp.target.rpartition(".")[0]
            if private and mine != owner:
                bad.append(f"{module}:{imp.line} imports {', '.join(private)} from {imp.target}")
    return bad


def long_modules() -> list[str]:
    return [
        f"{module}: {n} lines"
        for module, path in source_files(("embetter_core",)).items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    ]


def test_no_import_cycle() -> None:
    _, edges = graph()
    assert cycles(edges) == []


def test_no_import_from_a_lower_layer_up() -> None:
    files, edges = graph()
    assert upward(edges) == []
    unplaced = sorted(m for m in files if layer(m) is None)
    assert unplaced == [], "every module belongs to a layer of LAYERS"


def test_no_private_name_imported_from_outside_its_package() -> None:
    assert private_imports() == []


def test_no_module_over_the_line_limit() -> None:
    assert long_modules() == []


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The checks find what they look for: a cycle, an upward import, a private name."""
    edges = [Import("a", "b", (), 1), Import("b", "c", (), 1), Import("c", "a", (), 1)]
    assert cycles(edges) == [["a", "b", "c"]]
    assert upward([Import("embetter_core.errors", "embetter_core.dedupe.find", (), 3)]) == [
        "embetter_core.errors:3 imports embetter_core.dedupe.find (layer 0 -> 4)"
    ]
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from embetter_core.x import _y, z\n")
    found = imports("pkg.mod", path, set())
    assert found == [Import("pkg.mod", "embetter_core.x", ("_y",), 2)] + [
        Import("pkg.mod", "embetter_core.x", ("z",), 2)
    ]


if __name__ == "__main__":
    files, edges = graph()
    for title, rows in [
        ("cycles", [" -> ".join(c) for c in cycles(edges)]),
        ("upward imports", upward(edges)),
        ("private imports", private_imports()),
        ("long modules", long_modules()),
        ("modules without a layer", sorted(m for m in files if layer(m) is None)),
    ]:
        print(f"## {title}: {len(rows)}")
        for row in rows:
            print("  ", row)
