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
    assert "test_first.py" in text
    # The README says which block: the section's second, the only one with tests (it
    # said "the first", a script that pytest collects nothing from).
    assert "its second block, which starts\nwith `import pytest`" in text
    lines = toolkit.splitlines()
    start = lines.index("## From Python and pytest") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("## ")) + 1
    blocks, _ = parse(ROOT / "docs" / "toolkit.md")
    python = [b.code for b in blocks if b.lang == "python" and start <= b.line <= end]
    assert len(python) >= 2 and "def test_" not in python[0]
    assert python[1].startswith("import pytest") and "def test_register(vfido_key)" in python[1]
