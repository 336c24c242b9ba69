"""The wheel CI builds installs into a fresh virtual environment outside the checkout, and
works there: ``vfido --help``, ``VirtualKey`` with a relying party's defaults, the pytest
plugin (by its entry point), the dashboard's files. The build itself prints no setuptools
warnings (package data declared properly, as ``./bootstrap`` needs too)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

FIRST_TEST = """
import vfido
from fido2.server import Fido2Server


def test_register_and_sign_in(vfido_key):
    assert "site-packages" in vfido.__file__, vfido.__file__  # the wheel, not a checkout
    server = Fido2Server({"id": "example.com", "name": "Example"})
    client = vfido_key.client("https://example.com")
    options, state = server.register_begin({"id": b"alice", "name": "alice"})
    auth_data = server.register_complete(state, client.make_credential(options["publicKey"]))
    credentials = [auth_data.credential_data]
    options, state = server.authenticate_begin(credentials)
    result = client.get_assertion(options["publicKey"])
    server.authenticate_complete(state, credentials, result.get_response(0))
"""

SCRIPT = """
import importlib.resources
import importlib.util
import vfido
import vfido.cli.main, vfido.dashboard.server, vfido.trace.names  # the application's packages
from vfido import authenticator, keystore, transports  # the core, inside the vfido namespace
from vfido.api import VirtualKey

for package in (vfido, authenticator, keystore, transports):
    assert "site-packages" in package.__file__, package.__file__
    assert importlib.resources.files(package.__name__).joinpath("py.typed").is_file()
for bare in ("authenticator", "keystore", "transports"):  # nothing generic in site-packages
    assert importlib.util.find_spec(bare) is None, bare
assert importlib.resources.files("vfido.ui_assets").joinpath("index.html").is_file()
from vfido.udev_install import FILES, UDEV_DIR  # `vfido install-udev` of the wheel (a newcomer)
assert "site-packages" in str(UDEV_DIR), UDEV_DIR
assert all((UDEV_DIR / name).is_file() for name, _ in FILES), list(UDEV_DIR.rglob("*"))
with VirtualKey() as key:
    assert key.client().info.options["uv"] is True
with VirtualKey(persona="ctap20") as key:
    assert key.client().info.versions == ["U2F_V2", "FIDO_2_0"]
print("ok")
"""


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    clean.update(env)
    return subprocess.run(
        argv, cwd=cwd, env=clean, capture_output=True, text=True, timeout=900, check=False
    )


def build_warnings(output: str) -> list[str]:
    """setuptools' warnings in pip's output (not pip's own notes about this machine's
    configured package locations)."""
    return [
        line
        for line in output.splitlines()
        if "Warning" in line or "would be ignored" in line or "!!" in line
    ]


def test_the_wheel_works_in_a_fresh_venv(tmp_path: Path) -> None:
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT)],
        work,
    )
    assert built.returncode == 0, built.stderr
    assert not build_warnings(built.stdout + built.stderr), built.stdout + built.stderr
    [wheel] = dist.glob("vfido-*.whl")

    assert run([sys.executable, "-m", "venv", str(venv)], work).returncode == 0
    python, vfido = venv / "bin" / "python", venv / "bin" / "vfido"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    installed = run([*pip, str(wheel), "pytest"], work)  # vfido's dependencies from its metadata
    assert installed.returncode == 0, installed.stderr

    helped = run([str(vfido), "--help"], work)
    assert helped.returncode == 0 and "usage: vfido" in helped.stdout, helped.stderr
    ran = run([str(vfido), "run", "--help"], work)
    assert ran.returncode == 0 and "--udp-port" in ran.stdout, ran.stderr
    listed = run([str(vfido), "personas"], work)  # the profiles are package data (#19)
    assert listed.returncode == 0 and "ctap21pre" in listed.stdout, listed.stderr
    udev = run([str(vfido), "install-udev", "--dry-run"], work)  # "run vfido from its checkout"
    assert udev.returncode == 0 and "70-vfido.rules" in udev.stdout, udev.stdout + udev.stderr

    (work / "check.py").write_text(SCRIPT)
    checked = run([str(python), "check.py"], work)
    assert checked.returncode == 0 and checked.stdout.strip() == "ok", checked.stderr

    (work / "test_first.py").write_text(FIRST_TEST)
    tested = run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q"], work)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout


def test_bootstrap_prints_no_setuptools_warnings() -> None:
    """``./bootstrap`` on a ready checkout: pip's quiet install, then one line."""
    result = run(["./bootstrap", "--test"], ROOT)
    assert result.returncode == 0, result.stderr
    assert not build_warnings(result.stdout + result.stderr), result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "bootstrap: ready: .venv/bin/vfido --help"


@pytest.mark.parametrize(
    ("argv", "python", "said"),
    [
        (["--bogus"], None, "bootstrap: unknown option --bogus (usage: ./bootstrap [--test])"),
        ([], "/nonexistent/python3", "bootstrap: no Python at /nonexistent/python3 (set PYTHON"),
        ([], "/bin/true", "bootstrap: /bin/true is not a Python it can run (set PYTHON"),
        ([], "OLD", "bootstrap: vfido needs Python >= 3.11 (OLD is 3.9.2)"),
    ],
)
def test_bootstrap_says_in_one_line_what_is_wrong(
    tmp_path: Path, argv: list[str], python: str | None, said: str
) -> None:
    """A wrong PYTHON gave bash's own error inside bootstrap's (`... (/nonexistent is
    ./bootstrap: line 11: ...)`), /bin/true passed the version check, and an unknown option
    was ignored (a session 15 newcomer's trial). Run from a copy: nothing is installed."""
    shutil.copy(ROOT / "bootstrap", tmp_path / "bootstrap")
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\necho 3.9.2\nexit 1\n")
    old.chmod(0o755)
    environment = {**os.environ}
    if python is not None:
        environment["PYTHON"] = str(old) if python == "OLD" else python
        said = said.replace("OLD", str(old))
    result = subprocess.run(
        ["./bootstrap", *argv], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert result.returncode in (1, 2)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(said), result.stderr
    assert not (tmp_path / ".venv").exists()
