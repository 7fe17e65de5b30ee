"""The README's Python examples run as written (docstring examples run via --doctest-modules).

A block whose first line is ``# not run: <reason>`` needs something this machine lacks
(a Modal token, a Dask cluster) and is only compiled.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_starts_with_the_two_commands():
    head = README.read_text().splitlines()[:6]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code, tmp_path, monkeypatch):
    compiled = compile(code, str(README), "exec")
    if code.startswith("# not run:"):
        return
    monkeypatch.chdir(tmp_path)
    exec(compiled, {"__name__": "readme"})


def test_readme_has_examples():
    assert len([b for b in BLOCKS if not b.startswith("# not run:")]) >= 2


def test_readme_command_lines_use_real_options():
    import argparse

    from flows.embed_corpus import build_parser
    from flows.params import add_options
    from flows.train_difference import TrainParams

    train = argparse.ArgumentParser()
    add_options(train, TrainParams)
    known = {
        "flows.embed_corpus": {o for a in build_parser()._actions for o in a.option_strings},
        "flows.train_difference": {o for a in train._actions for o in a.option_strings},
    }
    seen = 0
    for line in README.read_text().splitlines():
        for module, options in known.items():
            if f"python -m {module}" in line:
                command = line.split("#")[0]
                used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", command))
                assert used <= options, f"{sorted(used - options)} in README line: {line}"
                seen += len(used)
    assert seen >= 10
