"""The import rules of docs/architecture.md, checked with ast over the source files.

- vfido.transports and vfido.keystore import nothing from vfido.authenticator or the
  application (nor from each other: each stands alone).
- vfido.authenticator imports, of the rest of vfido, only the keystore's interface
  (:data:`KEYSTORE_INTERFACE`) and nothing from the application.
- Nobody imports the bare top-level names ``authenticator``, ``transports``, ``keystore``
  (the folders at the top of the checkout are the packages vfido.authenticator etc.; a bare
  import would load a second copy of every module).
- No import cycles among modules at module level (imports that run when a module is
  imported; ``if TYPE_CHECKING:`` blocks do not run). Imports deferred into functions are
  reported apart: they exist in the application today (see the xfail).

The checker takes the checkout's root, so the tests at the end run it over a package made
in tmp_path that breaks each rule: a test that cannot fail is a defect.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ("authenticator", "transports", "keystore")
BARE = frozenset(CORE)
#: What vfido.authenticator may import of the keystore: the interface (the KeyStore
#: protocol, its records and errors), the sealed credential-ID format (a pure function of
#: the identity's credential_key that the authenticator builds IDs with) and the randomness
#: source both packages draw from (vfido.keystore.entropy, added by the seedlint branch: an
#: injectable environment service, as OpenSK's env, kept in the lower package so that the
#: keystore can use it without importing upwards). Never the SQLite store, its schema, files,
#: records, crypto, KDF or the directory lock: the authenticator runs over any KeyStore
#: (tests use in-memory ones) and the application chooses the implementation.
KEYSTORE_INTERFACE = frozenset(
    {
        "vfido.keystore",
        "vfido.keystore.store",
        "vfido.keystore.credential_id",
        "vfido.keystore.entropy",
    }
)
#: Folders outside vfido whose Python files must not import the bare core names either.
OTHER_SOURCES = ("tests", "bench", "examples")


@dataclass(frozen=True)
class Import:
    importer: str  # the importing module (dotted name), or a file's path outside vfido
    target: str  # the module imported, as written and resolved (relative imports)
    line: int
    deferred: bool  # inside a function (runs when called, not on import)

    def __str__(self) -> str:
        where = "deferred " if self.deferred else ""
        return f"{self.importer}:{self.line}: {where}import {self.target}"


def source_modules(root: Path) -> dict[str, Path]:
    """Every module of the vfido package, by dotted name: vfido/ (without following its
    symlinks to the core folders) and the core folders as vfido.<name>."""
    modules: dict[str, Path] = {}
    bases = [(root / "vfido", "vfido"), *((root / name, f"vfido.{name}") for name in CORE)]
    for base, prefix in bases:
        if not base.is_dir():
            continue
        for path in sorted(_python_files(base)):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([prefix, *parts])] = path
    return modules


def _python_files(base: Path) -> Iterator[Path]:
    for path in base.iterdir():
        if path.is_symlink() or path.name.startswith("."):
            continue  # vfido/authenticator etc.: the core folders, counted as such
        if path.is_dir():
            yield from _python_files(path)
        elif path.suffix == ".py":
            yield path


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(
    body: Iterable[ast.stmt], deferred: bool = False
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, deferred
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            continue  # never runs
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _import_nodes(node.body, True)
        else:
            for field in ("body", "orelse", "finalbody"):
                yield from _import_nodes(getattr(node, field, []), deferred)
            for handler in getattr(node, "handlers", []):
                yield from _import_nodes(handler.body, deferred)
            for case in getattr(node, "cases", []):
                yield from _import_nodes(case.body, deferred)


def imports_of(name: str, path: Path, modules: Iterable[str] = ()) -> list[Import]:
    """The imports in ``path`` (module ``name``): ``from package import module`` names the
    module when it is one of ``modules``."""
    known = set(modules)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[Import] = []
    for node, deferred in _import_nodes(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        found.extend(Import(name, target, node.lineno, deferred) for target in targets)
    return found


def layer(module: str) -> str:
    """authenticator, transports, keystore, application (the rest of vfido) or outside."""
    parts = module.split(".")
    if parts[0] != "vfido":
        return "outside"
    if len(parts) > 1 and parts[1] in CORE:
        return parts[1]
    return "application"


def rule_violations(root: Path) -> list[str]:
    """Imports that break the dependency rules (the bare names included)."""
    modules = source_modules(root)
    problems: list[str] = []
    for name, path in modules.items():
        own = layer(name)
        for imp in imports_of(name, path, modules):
            target = layer(imp.target)
            if imp.target.split(".")[0] in BARE:
                problems.append(f"{imp}: bare core name (write vfido.{imp.target})")
            elif own in ("transports", "keystore") and target not in (own, "outside"):
                problems.append(f"{imp}: {own} imports nothing from vfido but itself")
            elif own == "authenticator" and target == "application":
                problems.append(f"{imp}: the authenticator imports nothing of the application")
            elif (
                own == "authenticator"
                and target == "keystore"
                and imp.target not in KEYSTORE_INTERFACE
            ):
                problems.append(f"{imp}: the authenticator uses only the keystore's interface")
            elif own == "authenticator" and target == "transports":
                problems.append(f"{imp}: the authenticator imports nothing of the transports")
    return problems


def bare_imports(root: Path) -> list[str]:
    """Imports of the bare core names in the Python files outside vfido."""
    problems: list[str] = []
    for folder in OTHER_SOURCES:
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            for imp in imports_of(str(path.relative_to(root)), path):
                if imp.target.split(".")[0] in BARE:
                    problems.append(f"{imp}: bare core name (write vfido.{imp.target})")
    return problems


def import_cycles(root: Path, *, deferred: bool = False) -> list[list[str]]:
    """The strongly connected components (of more than one module) of the import graph: at
    module level, or with the imports deferred into functions as well."""
    modules = source_modules(root)
    graph = {
        name: sorted(
            {
                imp.target
                for imp in imports_of(name, path, modules)
                if imp.target in modules and imp.target != name and (deferred or not imp.deferred)
            }
        )
        for name, path in modules.items()
    }
    return [sorted(c) for c in _components(graph) if len(c) > 1]


def _components(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            edges = graph[node]
            if i < len(edges):
                work.append((node, i + 1))
                nxt = edges[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted(sorted(c) for c in result)


# --- the rules, on this checkout ------------------------------------------------------


def test_the_packages_are_where_the_rules_say() -> None:
    modules = source_modules(ROOT)
    assert {layer(name) for name in modules} == {"application", *CORE}
    assert "vfido.authenticator.dispatch" in modules
    assert "vfido.keystore.store" in modules


def test_dependencies_point_one_way() -> None:
    assert rule_violations(ROOT) == []


def test_nobody_imports_the_bare_core_names() -> None:
    assert bare_imports(ROOT) == []


def test_no_import_cycles_at_module_level() -> None:
    assert import_cycles(ROOT) == []


def test_no_import_cycles_through_deferred_imports() -> None:
    """Not even through imports deferred into functions (they only hide a cycle)."""
    assert import_cycles(ROOT, deferred=True) == []


# --- the checker finds what breaks them -----------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def clean_tree(tmp_path: Path) -> Path:
    """A package shaped like vfido that keeps every rule."""
    _write(
        tmp_path,
        {
            "vfido/__init__.py": "",
            "vfido/app.py": "from vfido.authenticator import device\nimport vfido.transports.io\n",
            "authenticator/__init__.py": "",
            "authenticator/device.py": (
                "from typing import TYPE_CHECKING\n"
                "from vfido.keystore.store import KeyStore\n"
                "from vfido.keystore import credential_id\n"
                "if TYPE_CHECKING:\n    from vfido.app import App\n"
            ),
            "transports/__init__.py": "",
            "transports/io.py": "import socket\nfrom . import framing\n",
            "transports/framing.py": "",
            "keystore/__init__.py": "",
            "keystore/store.py": "",
            "keystore/credential_id.py": "from .store import KeyStore\n",
            "keystore/sqlite_store.py": "from vfido.keystore.store import KeyStore\n",
            "tests/test_x.py": "from vfido.keystore.store import KeyStore\n",
        },
    )
    return tmp_path


def test_a_clean_tree_passes(clean_tree: Path) -> None:
    assert rule_violations(clean_tree) == []
    assert bare_imports(clean_tree) == []
    assert import_cycles(clean_tree, deferred=True) == []


@pytest.mark.parametrize(
    ("path", "line", "expected"),
    [
        ("transports/io.py", "from vfido.authenticator import device", "transports imports"),
        ("transports/io.py", "import vfido.app", "transports imports"),
        ("transports/io.py", "from vfido.keystore import store", "transports imports"),
        ("keystore/store.py", "from vfido.authenticator.device import x", "keystore imports"),
        ("keystore/store.py", "from vfido import app", "keystore imports"),
        ("keystore/store.py", "from ..transports import io", "keystore imports"),
        ("authenticator/device.py", "from vfido.app import App", "of the application"),
        ("authenticator/device.py", "from vfido.keystore.sqlite_store import S", "interface"),
        ("authenticator/device.py", "from vfido.keystore import sqlite_store", "interface"),
        ("authenticator/device.py", "from vfido.transports import io", "of the transports"),
        ("vfido/app.py", "import authenticator.device", "bare core name"),
        ("vfido/app.py", "from keystore.store import KeyStore", "bare core name"),
    ],
)
def test_each_rule_fails_on_a_violation(
    clean_tree: Path, path: str, line: str, expected: str
) -> None:
    target = clean_tree / path
    target.write_text(target.read_text() + f"def later():\n    {line}\n")  # deferred too
    (problem,) = rule_violations(clean_tree)
    assert expected in problem and path.split("/")[-1].removesuffix(".py") in problem


def test_bare_names_outside_vfido_are_found(clean_tree: Path) -> None:
    (clean_tree / "tests/test_y.py").write_text("import transports.io\n")
    (problem,) = bare_imports(clean_tree)
    assert "tests/test_y.py:1" in problem and "transports.io" in problem


def test_a_cycle_is_found(clean_tree: Path) -> None:
    _write(clean_tree, {"transports/framing.py": "from vfido.transports import io\n"})
    assert import_cycles(clean_tree) == [["vfido.transports.framing", "vfido.transports.io"]]


def test_a_deferred_cycle_is_found_apart(clean_tree: Path) -> None:
    _write(clean_tree, {"transports/framing.py": "def f():\n    from . import io\n"})
    assert import_cycles(clean_tree) == []
    assert import_cycles(clean_tree, deferred=True) == [
        ["vfido.transports.framing", "vfido.transports.io"]
    ]
