"""The unit tests on the lowest declared version of every runtime dependency.

``pyproject.toml`` promises that vfido runs on ``cryptography>=44``, ``cbor2>=5.6``... This
script keeps the promise honest: it installs exactly those floors (and the test tools, at
whatever version resolves with them) into ``.venv-floor`` once, reuses it while the floors
and the interpreter stay the same, checks the installed versions, and runs the unit tests
there from the checkout (``./run-tests`` calls it)::

    python3 tests/dependency_floors.py            # set up (if needed) and run
    python3 tests/dependency_floors.py --pins     # only print the pins

Left out, each for a stated reason (nothing is skipped silently): ``-m vm`` (the qemu guest
runs the project's .venv), ``-m slow`` and ``tests/reliability`` (end-to-end and crash
tests, the same code paths as the unit tests, minutes each), and the modules in
:data:`NEEDS_TEST_EXTRAS`. mypy runs in ``.venv`` only: it needs cryptography >= 47 (ML-DSA
types), a test-time requirement, not a runtime one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-floor"
STAMP = VENV / "vfido-floors.json"
#: Test tools the unit tests import (not runtime dependencies: any version that installs
#: next to the floors will do).
TEST_TOOLS = ("pytest", "pytest-timeout", "hypothesis", "webauthn")
#: Test modules left out, with why.
NEEDS_TEST_EXTRAS = {
    "tests/app/test_examples.py": "runs examples/ (Flask, a test-only extra)",
    "tests/app/test_docs.py": "runs the docs' blocks in the project's .venv (./bootstrap --test)",
}


class FloorError(Exception):
    pass


def floors(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """``{name: lowest version}`` of ``[project] dependencies`` (each needs a ``>=``)."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    result: dict[str, str] = {}
    for requirement in dependencies:
        match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)", requirement)
        if match is None:
            raise FloorError(f"cannot read the requirement {requirement!r}")
        name, specifiers = match.groups()
        lowest = [s.strip()[2:].strip() for s in specifiers.split(",") if s.strip()[:2] == ">="]
        if len(lowest) != 1:
            raise FloorError(f"{requirement!r}: declare one floor (>=) for every dependency")
        result[name.lower()] = lowest[0]
    return result


def pins(lowest: dict[str, str]) -> list[str]:
    return [f"{name}=={version}" for name, version in sorted(lowest.items())]


def _same_version(installed: str, floor: str) -> bool:
    """``44.0.0`` is the release ``==44`` installs (PEP 440 pads with zeros)."""

    def parts(version: str) -> list[str]:
        items = version.split(".")
        while len(items) > 1 and items[-1] == "0":
            items.pop()
        return items

    return parts(installed) == parts(floor)


def up_to_date(stamp: Path, wanted: object, python: Path) -> bool:
    """A venv is reused when its ``python`` exists and its ``stamp`` (JSON written after
    it was made) says it was made for ``wanted``."""
    try:
        current = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return bool(current == wanted and python.exists())


def _python() -> str:
    return os.environ.get("PYTHON", "python3")


def ensure_venv(lowest: dict[str, str]) -> Path:
    """``.venv-floor`` with exactly the floors; made (again) only when they change."""
    python = VENV / "bin" / "python"
    version = subprocess.run(
        [_python(), "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    wanted = {"floors": lowest, "tools": list(TEST_TOOLS), "python": version}
    if not up_to_date(STAMP, wanted, python):
        print(f"dependency floors: making {VENV.name} ({' '.join(pins(lowest))})", flush=True)
        subprocess.run([_python(), "-m", "venv", "--clear", str(VENV)], check=True)
        constraints = VENV / "constraints.txt"
        constraints.write_text("\n".join(pins(lowest)) + "\n")
        install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        install += ["--only-binary=cryptography", "-c", str(constraints)]
        subprocess.run([*install, *pins(lowest), *TEST_TOOLS], check=True)
        STAMP.write_text(json.dumps(wanted))
    check = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, json, sys; "
            "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))",
            *lowest,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = json.loads(check.stdout)
    wrong = [
        f"{name} {installed[name]} (floor {floor})"
        for name, floor in lowest.items()
        if not _same_version(installed[name], floor)
    ]
    if wrong:
        raise FloorError(f"{VENV.name} does not hold the floors: {', '.join(wrong)}")
    return python


def main(argv: list[str]) -> int:
    try:
        lowest = floors()
        if argv == ["--pins"]:
            print(" ".join(pins(lowest)))
            return 0
        python = ensure_venv(lowest)
    except FloorError as exc:
        print(f"dependency floors: {exc}", file=sys.stderr)
        return 1
    return run_unit_tests(python, argv, "dependency floors")


def run_unit_tests(python: Path, argv: list[str], label: str) -> int:
    """The unit tests, from the checkout, on ``python`` (a venv without the project: the
    checkout comes first on sys.path); what is left out and why is printed first. Shared
    with ``tests/newest_python.py``."""
    for module, why in NEEDS_TEST_EXTRAS.items():
        print(f"{label}: leaving out {module}: {why}")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    command += ["-m", "not vm and not slow", "--ignore=tests/reliability"]
    command += [f"--ignore={module}" for module in NEEDS_TEST_EXTRAS]
    return subprocess.run(command + argv, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
