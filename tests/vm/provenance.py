"""Where the guest's Python and its packages come from (issue #13).

The guest must run the checkout's own virtual environment (``.venv``, made by
``./bootstrap --test``), so that it imports exactly what the host tests import. A guest that
runs some other interpreter can pass on a machine where someone once installed the
dependencies by hand and fail on every fresh one. So the guest records where it imported each
package from (``import_origins``), and the harness fails unless each one lies inside the
checkout or its ``.venv`` (``problems``).

Used on both sides: by ``guest_checks.py`` in the guest and by ``conftest.py`` on the host.
Imports nothing but the standard library at module level.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

# The project's runtime dependencies and its own top-level packages.
MODULES = (
    "fido2",
    "cryptography",
    "cbor2",
    "vfido",
    "vfido.authenticator",
    "vfido.transports",
    "vfido.keystore",
)
PROJECT_PACKAGES = ("vfido", "vfido.authenticator", "vfido.transports", "vfido.keystore")


def venv_python(checkout: Path) -> Path:
    """The checkout's venv interpreter, by its unresolved path.

    Resolving ``.venv/bin/python`` (a symlink) gives the base interpreter, which outside the
    venv has none of the project's dependencies.
    """
    return checkout / ".venv" / "bin" / "python"


def import_origins() -> dict[str, Any]:
    """This interpreter and the file each of ``MODULES`` was imported from."""
    modules: dict[str, str] = {}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            modules[name] = f"import failed: {type(exc).__name__}: {exc}"
        else:
            modules[name] = str(getattr(module, "__file__", None) or "(no __file__)")
    return {
        "executable": sys.executable,
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "modules": modules,
    }


def _inside(path: str, root: Path) -> bool:
    return path.startswith("/") and Path(path).is_relative_to(root)


def problems(origins: dict[str, Any], checkout: Path) -> list[str]:
    """Why ``origins`` (from ``import_origins`` in the guest) is not the checkout's venv."""
    venv = checkout / ".venv"
    found: list[str] = []
    executable = str(origins.get("executable", ""))
    if executable != str(venv_python(checkout)):
        found.append(f"the guest ran {executable or '(unknown)'}, not {venv_python(checkout)}")
    if origins.get("prefix") != str(venv):
        found.append(f"sys.prefix is {origins.get('prefix')}, not the checkout's venv {venv}")
    modules = origins.get("modules") or {}
    for name in MODULES:
        where = str(modules.get(name, "(not recorded)"))
        # The project's packages come from the checkout itself (the editable install), the
        # dependencies from the venv's site-packages.
        root = checkout if name in PROJECT_PACKAGES else venv
        if not _inside(where, root) or (name in PROJECT_PACKAGES and _inside(where, venv)):
            found.append(f"{name} from {where}, not from {root}")
    return found


if __name__ == "__main__":  # `python provenance.py`: print this interpreter's origins
    import json

    print(json.dumps(import_origins(), indent=1))
