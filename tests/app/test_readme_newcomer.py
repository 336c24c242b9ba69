"""The newcomer's path through README.md, read from the top (issue #17): before the README
first runs pytest, it has installed it. ``./bootstrap`` alone installs no pytest, so a
newcomer who followed the quick start and then ran the first test of docs/toolkit.md got
``No module named pytest`` (seen on a fresh clone, 2026-12-04).

The commands themselves run elsewhere: docs/toolkit.md's first test in tests/app/test_docs.py (as a
pytest file, in a venv made by ``./bootstrap --test``), the bootstrap in tests/app/test_wheel.py
and tests/app/test_first_test.py (fresh virtual environments).
"""

from __future__ import annotations

import re

from tests.app.test_docs import ROOT, parse

README = ROOT / "README.md"


def shell_lines() -> list[tuple[int, str]]:
    blocks, _ = parse(README)
    return [
        (block.line, line.strip())
        for block in blocks
        if block.lang in ("sh", "bash", "shell")
        for line in block.code.splitlines()
    ]


def test_readme_installs_pytest_before_it_runs_the_first_test() -> None:
    lines = shell_lines()
    runs = [n for n, line in lines if re.search(r"\bpython -m pytest\b|\bbin/pytest\b", line)]
    assert runs, "README.md never shows how to run the first test"
    installs = [n for n, line in lines if re.match(r"\./bootstrap --test\b", line)]
    assert installs and min(installs) <= min(runs), (installs, runs)


def test_readme_first_test_names_the_toolkit_block() -> None:
    text = README.read_text()
    toolkit = (ROOT / "docs" / "toolkit.md").read_text()
    assert "docs/toolkit.md#from-python-and-pytest" in text
    assert "## From Python and pytest" in toolkit and "def test_register(vfido_key)" in toolkit
    assert "test_first.py" in text
