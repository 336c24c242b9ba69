"""tests/ci.py: what counts as CI, and that a missing prerequisite skips outside CI and fails
in it; .ci/run runs the README's test command with CI set."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ci import in_ci, unavailable

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(value, False) for value in ("", "0", "false", " No ", "FALSE")],
        *[(value, True) for value in ("true", "1", "yes", "github")],
    ],
)
def test_what_counts_as_ci(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_unset_is_not_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert not in_ci()


def test_a_missing_prerequisite_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match=r"^no widget$"):
        unavailable("no widget")


def test_a_missing_prerequisite_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"^no widget: the widget test needs it$"):
        unavailable("no widget", in_ci_because="the widget test needs it")


def test_ci_runs_the_readme_test_command_with_ci_set() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in script.splitlines() if not line.startswith("#")]
    assert 'export CI="${CI:-true}"' in commands
    assert commands[-1] == "exec ./run-tests"
    assert "./run-tests\n" in (ROOT / "README.md").read_text()


def test_install_deps_names_the_packages_where_there_is_no_apt(tmp_path: Path) -> None:
    """On a system without apt-get, install-deps.sh says so in one line naming the packages
    and fails; ./run-tests then goes on (the tests that need them skip, or fail in CI)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sed", "tr", "dirname"):  # what the script needs before it looks for apt
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    script = ROOT / "tests" / "vm" / "install-deps.sh"
    result = subprocess.run(
        ["/bin/sh", str(script)], env={"PATH": str(bin_dir)}, capture_output=True, text=True
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("install-deps.sh: not a Debian system")
    packages = (ROOT / "tests" / "vm" / "apt-packages.txt").read_text()
    assert "qemu-system-x86" in packages and "qemu-system-x86" in lines[0]
    run_tests = (ROOT / "run-tests").read_text()
    assert "tests/vm/install-deps.sh || echo" in run_tests
