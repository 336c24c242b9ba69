"""``tests/newest_python.py`` (a ./run-tests step) picks the newest CPython there is, and says
so in one line when there is none newer, or when the one named does not run."""

from __future__ import annotations

import subprocess
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
    for patch in ("1", "10", "2", "2t"):  # pyenv: newest patch first; free-threaded not picked
        build = bare / "pyenv" / "versions" / f"3.18.{patch}" / "bin"
        build.mkdir(parents=True)
        fake_python(build, "python3.18", "3 18")
    found = newest_python.newer((3, 11))
    builds = [str(bare / f"pyenv/versions/3.18.{p}/bin/python3.18") for p in ("10", "2", "1")]
    assert found == [*((b, (3, 18)) for b in builds), (str(bare / "bin/python3.17"), (3, 17))]
    assert newest_python.newer((3, 18)) == []  # only newer than the running one


def test_one_that_cannot_make_the_venv_is_passed_over(
    bare: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = fake_python(bare / "bin", "python3.19", "3 19")
    fake_python(bare / "bin", "python3.18", "3 18")
    made: list[str] = []

    def ensure_venv(python: str) -> Path:
        made.append(python)
        if python == str(broken):
            raise subprocess.CalledProcessError(1, [python, "-m", "venv"])
        return Path(python)

    monkeypatch.setattr(newest_python, "ensure_venv", ensure_venv)
    monkeypatch.setattr(newest_python, "run_unit_tests", lambda python, argv, label: 0)
    assert newest_python.main([]) == 0
    assert made == [str(broken), str(bare / "bin" / "python3.18")]
    assert "could not make" in capsys.readouterr().err
    made.clear()
    (bare / "bin" / "python3.18").unlink()
    assert newest_python.main([]) == 1  # none could: fails, saying how to skip
    assert "VFIDO_NEWEST_PYTHON=none" in capsys.readouterr().err
    monkeypatch.setenv("VFIDO_NEWEST_PYTHON", "none")
    assert newest_python.main([]) == 0 and made == [str(broken)]


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
