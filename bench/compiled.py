"""A copy of this checkout with a request's path compiled by mypyc: what a compiled core
would give (issue #16; a measurement, not what users run: vfido installs as pure Python).

    .venv/bin/python bench/compiled.py DIR        # about a minute of gcc on this VM
    .venv/bin/python bench/entry.py --only ephemeral,persistent --tree DIR
    .venv/bin/python DIR/bench/cold.py             # in-process, warm and after a pause
    # in the guest, DIR inside the checkout (e.g. .bench-base, git-ignored):
    VFIDO_VM_CHECKS=bench_chromium,bench_keys:floor_sized+vfido_untraced+vfido_base,\
bench_base:.bench-base .venv/bin/python -m pytest tests/vm/test_bench_vm.py -m vm -s -k chromium

DIR is made from the committed tree (``git archive HEAD``: uncommitted edits are not in
it), with the core packages moved into ``vfido/`` (mypyc follows no symlinks) and
:data:`COMPILED` built in place as C extensions, which Python imports before the ``.py``
beside them. It needs gcc and the interpreter's headers, and mypy's ``mypyc`` (the test
extras install it). A module left out either is off the path of makeCredential and
getAssertion or is something mypyc cannot build: a subclass of ``bytes`` (``ctaphid.Report``)
or of a built-in exception (``udp``, ``uhid``), an enum member read through its class
(``sign_extension``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The modules of a request's path that mypyc builds (makeCredential, getAssertion, getInfo:
#: the transport's runner, the dispatch, the spec steps, the keystore, the presence broker).
COMPILED = (
    *(
        f"vfido/authenticator/{name}.py"
        for name in (
            "attestation",
            "authdata",
            "behaviours",
            "cbor",
            "config_command",
            "cose",
            "credential_source",
            "device",
            "dispatch",
            "extensions",
            "get_assertion",
            "get_info",
            "make_credential",
            "pin_token",
            "requests",
            "responses",
            "shared_steps",
            "state",
        )
    ),
    "vfido/keystore/entropy.py",
    "vfido/keystore/sqlite_store.py",
    "vfido/presence/broker.py",
    "vfido/transports/handler.py",
    "vfido/transports/runner.py",
)

#: pyproject.toml's [tool.mypy], for mypyc. The copy's pyproject.toml is moved aside: the
#: setup.py mypyc generates would read it, and a setuptools older than its build floor (77)
#: refuses its license field.
MYPY_INI = (
    "[mypy]\npython_version = 3.11\nstrict = True\n[mypy-cbor2.*]\nignore_missing_imports = True\n"
)


def make_tree(target: Path) -> None:
    """The committed tree in ``target``, its core packages inside ``vfido/``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    target.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    for package in ("authenticator", "transports", "keystore"):
        link = target / "vfido" / package
        if link.is_symlink():
            link.unlink()
        shutil.move(target / package, link)
    (target / "pyproject.toml").rename(target / "pyproject.toml.not-built")
    (target / "mypy.ini").write_text(MYPY_INI)


def compile_tree(target: Path) -> None:
    """:data:`COMPILED` built in place (mypyc's output goes to ``target/build``)."""
    subprocess.run([sys.executable, "-m", "mypyc", *COMPILED], cwd=target, check=True)


def check_compiled(target: Path) -> list[str]:
    """The modules of :data:`COMPILED` that ``target``'s ``vfido`` would still import from
    their ``.py`` (none when the build worked)."""
    names = [path.removesuffix(".py").replace("/", ".") for path in COMPILED]
    probe = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    if not importlib.import_module(name).__file__.endswith('.so'): print(name)\n"
    )
    found = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        cwd=target,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return found.stdout.split()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="where the copy goes (must not exist)")
    args = parser.parse_args(argv)
    given: Path = args.directory
    if given.exists() or given.is_symlink():  # a dangling link too: never built through
        print(f"compiled.py: {given} exists; give a new directory", file=sys.stderr)
        return 2
    target = given.resolve()
    make_tree(target)
    try:
        compile_tree(target)
    except subprocess.CalledProcessError:
        print(f"compiled.py: mypyc failed (its output above); {target} is left", file=sys.stderr)
        return 1
    left = check_compiled(target)
    if left:
        print(f"compiled.py: still pure Python: {', '.join(left)}", file=sys.stderr)
        return 1
    print(f"{target}: {len(COMPILED)} modules compiled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
