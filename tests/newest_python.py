"""The unit tests on the newest CPython this machine has.

``pyproject.toml`` says ``requires-python = ">=3.11"``, and ``.venv`` runs the first
``python3`` on ``PATH`` (on the CI machine, 3.11). Linux desktops ship newer ones (3.12,
3.13), and a new interpreter can break what an old one allowed. This script keeps that part
of the promise honest: it finds the newest ``python3.N`` (on ``PATH``, or built by pyenv)
that is newer than the interpreter running it, makes ``.venv-newest`` with it once (the
runtime dependencies as ``pyproject.toml`` states them, so pip's newest releases, and the
floor suite's test tools), and runs there the same unit tests, with the same exclusions, as
``tests/dependency_floors.py`` (``./run-tests`` calls both)::

    python3 tests/newest_python.py            # find, set up (if needed) and run
    python3 tests/newest_python.py --which    # only say which interpreter it would use

``VFIDO_NEWEST_PYTHON`` names the interpreter instead (``none``: skip). With none newer
found, a line says so and the script exits 0: the other suites already ran on the newest
there is. One that cannot make the venv (Debian's ``python3.N`` without ``python3.N-venv``,
pip without the network) is passed over for the next newest; if none can, the script fails.
Free-threaded builds (``3.13.0t``) are not picked.
``.venv-newest`` is made again when the interpreter, the requirements or the tools change;
a new release of a dependency alone does not remake it (``rm -rf .venv-newest`` does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script, too
from tests.dependency_floors import ROOT, TEST_TOOLS, run_unit_tests, up_to_date

VENV = ROOT / ".venv-newest"
STAMP = VENV / "vfido-newest.json"
LABEL = "newest Python"
#: Minor versions looked for on PATH, newest first (python3.N).
CANDIDATE_MINORS = range(20, 11, -1)


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """``[project] dependencies`` as declared (upper bounds kept)."""
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def version_of(python: str) -> tuple[int, int] | None:
    """``(major, minor)`` of the interpreter ``python``, or None if it does not run."""
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = done.stdout.split()
    if done.returncode != 0 or len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def newer(current: tuple[int, int] = sys.version_info[:2]) -> list[tuple[str, tuple[int, int]]]:
    """The interpreters to try, with their versions, newest first: the one
    ``VFIDO_NEWEST_PYTHON`` names if set (none if it does not run), else each ``python3.N``
    newer than ``current`` that runs and is what its name says (see :func:`_candidates`)."""
    named = os.environ.get("VFIDO_NEWEST_PYTHON")
    if named:
        found = shutil.which(named) or named
        version = version_of(found)
        return [(found, version)] if version is not None else []
    result: list[tuple[str, tuple[int, int]]] = []
    for minor in CANDIDATE_MINORS:
        if (3, minor) <= current:
            break
        result += [(found, (3, minor)) for found in _candidates(minor)]
    return [(found, version) for found, version in result if version_of(found) == version]


def _candidates(minor: int) -> list[str]:
    """``python3.N`` on PATH, then pyenv's builds of 3.N, newest patch release first (a
    pyenv shim on PATH runs only the versions pyenv has made current: hence both)."""
    name = f"python3.{minor}"
    found = [path] if (path := shutil.which(name)) else []
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    builds = [p for p in root.glob(f"3.{minor}.*") if p.name.split(".")[2].isdigit()]
    builds.sort(key=lambda p: int(p.name.split(".")[2]), reverse=True)
    found += [str(p / "bin" / name) for p in builds if (p / "bin" / name).exists()]
    return found


def ensure_venv(python: str) -> Path:
    """``.venv-newest`` made with ``python``; made again only when the stamp changes."""
    venv_python = VENV / "bin" / "python"
    full_version = subprocess.run(
        [python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    wanted = {"python": full_version, "requirements": requirements(), "tools": list(TEST_TOOLS)}
    if not up_to_date(STAMP, wanted, venv_python):
        print(f"{LABEL}: making {VENV.name} with Python {full_version.split()[0]}", flush=True)
        subprocess.run([python, "-m", "venv", "--clear", str(VENV)], check=True)
        install = [
            str(venv_python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ]
        subprocess.run([*install, *requirements(), *TEST_TOOLS], check=True)
        STAMP.write_text(json.dumps(wanted))
    return venv_python


def main(argv: list[str]) -> int:
    which = argv[:1] == ["--which"]
    named = os.environ.get("VFIDO_NEWEST_PYTHON")
    if named == "none":
        print(f"{LABEL}: VFIDO_NEWEST_PYTHON=none; skipped")
        return 0
    found = newer()
    if not found:
        if named:
            print(f"{LABEL}: VFIDO_NEWEST_PYTHON={named} does not run", file=sys.stderr)
            return 1
        mine = ".".join(map(str, sys.version_info[:2]))
        print(f"{LABEL}: no python3.N newer than {mine} (PATH, pyenv); nothing more to run")
        return 0
    for python, version in found:
        print(f"{LABEL}: Python {version[0]}.{version[1]} ({python})", flush=True)
        if which:
            return 0
        try:
            venv_python = ensure_venv(python)
        except (OSError, subprocess.CalledProcessError) as exc:
            # e.g. Debian's python3.N without python3.N-venv: the next one, if any
            print(f"{LABEL}: could not make {VENV.name} with it ({exc})", file=sys.stderr)
            continue
        return run_unit_tests(venv_python, argv, LABEL)
    print(
        f"{LABEL}: no interpreter above could make {VENV.name}"
        " (VFIDO_NEWEST_PYTHON=none skips this step)",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
