"""``tests/newest_python.py`` (a ./run-tests step) picks the newest CPython there is, and says
so in one line when there is none newer, or when the one named does not run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests import newest_python


def fake_python(directory: Path, name: str, reports: str) -> Path:
    """An executable ``name`` that answers ``-c ...`` by printing ``reports``."""
    path = directory / name
    path.write_text(f"#!/bin/sh\necho {reports}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH and PYENV_ROOT that hold only what a test puts there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.delenv("VFIDO_NEWEST_PYTHON", raising=False)
    return tmp_path


def test_the_newest_that_runs_and_is_what_its_name_says(bare: Path) -> None:
    fake_python(bare / "bin", "python3.19", "3 11")  # a name that lies is passed over
    fake_python(bare / "bin", "python3.17", "3 17")
    for patch in ("1", "10", "2t"):  # pyenv: newest patch release; free-threaded not picked
        build = bare / "pyenv" / "versions" / f"3.18.{patch}" / "bin"
        build.mkdir(parents=True)
        fake_python(build, "python3.18", "3 18")
    found = newest_python.newest((3, 11))
    assert found == (str(bare / "pyenv/versions/3.18.10/bin/python3.18"), (3, 18))
    assert newest_python.newest((3, 18)) is None  # only newer than the running one


def test_none_newer_is_one_line_and_success(bare: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_python(bare / "bin", "python3.11", "3 11")
    assert newest_python.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "nothing more to run" in out


def test_a_named_interpreter_that_does_not_run_fails_in_one_line(
    bare: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VFIDO_NEWEST_PYTHON", str(bare / "no-such-python"))
    assert newest_python.main(["--which"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not run" in err


def test_a_named_interpreter_is_used(
    bare: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VFIDO_NEWEST_PYTHON", sys.executable)
    assert newest_python.main(["--which"]) == 0
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert capsys.readouterr().out == f"newest Python: Python {mine} ({sys.executable})\n"


def test_requirements_are_the_declared_ones() -> None:
    assert any(r.startswith("fido2") and "<3" in r for r in newest_python.requirements())
