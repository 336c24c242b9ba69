"""Host-side tests of the VM harness (no guest boot): the guest runs the checkout's venv.

Issue #13: the guest used to run ``os.path.realpath(sys.executable)``, the base interpreter
behind the venv's symlink, which on a fresh machine has none of the project's dependencies.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import provenance
import vmharness

CHECKOUT = vmharness.CHECKOUT.resolve()


def test_guest_python_is_the_checkouts_venv_interpreter() -> None:
    env = vmharness.guest_env(CHECKOUT, "kernel_uhid")
    python = Path(env["VFIDO_PYTHON"])
    assert python == CHECKOUT / ".venv" / "bin" / "python"
    assert (CHECKOUT / ".venv" / "pyvenv.cfg").exists()
    # The unresolved path: resolving the venv's symlink is exactly the old mistake.
    assert python.resolve() != python
    assert env["VFIDO_CHECKOUT"] == str(CHECKOUT)


def test_guest_python_imports_everything_from_the_checkout_with_an_empty_environment() -> None:
    """What the guest does, on the host: init.sh runs VFIDO_PYTHON under `env -i` (no
    VIRTUAL_ENV, no PATH tricks); every package must come from the checkout or its .venv."""
    python = vmharness.guest_env(CHECKOUT)["VFIDO_PYTHON"]
    proc = subprocess.run(
        [
            "env",
            "-i",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"PYTHONPATH={CHECKOUT}",
            "PYTHONDONTWRITEBYTECODE=1",
            python,
            str(CHECKOUT / "tests" / "vm" / "provenance.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    origins = json.loads(proc.stdout)
    assert provenance.problems(origins, CHECKOUT) == []
    assert origins["prefix"] != origins["base_prefix"]


def _origins(**modules: str) -> dict[str, object]:
    venv = CHECKOUT / ".venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    found = {name: str(site / name / "__init__.py") for name in ("fido2", "cryptography", "cbor2")}
    for name in provenance.PROJECT_PACKAGES:
        found[name] = str(CHECKOUT / name / "__init__.py")
    found.update(modules)
    return {
        "executable": str(venv / "bin" / "python"),
        "prefix": str(venv),
        "base_prefix": "/usr",
        "modules": found,
    }


def test_provenance_accepts_the_checkout_and_its_venv() -> None:
    assert provenance.problems(_origins(), CHECKOUT) == []


def test_provenance_rejects_the_base_interpreter_and_foreign_packages() -> None:
    base = "/usr/lib/python3/dist-packages"
    wrong = _origins(fido2=f"{base}/fido2/__init__.py", cbor2="import failed: ModuleNotFoundError")
    wrong["executable"] = "/usr/bin/python3.11"
    wrong["prefix"] = "/usr"
    found = provenance.problems(wrong, CHECKOUT)
    assert len(found) == 4, found
    assert any(p.startswith("fido2 from /usr/lib") for p in found)
    assert any(p.startswith("cbor2 from import failed") for p in found)
    # vfido installed into the venv's site-packages is not the checkout's code under test.
    stale = _origins(vfido=str(CHECKOUT / ".venv" / "lib" / "vfido" / "__init__.py"))
    assert [p.split()[0] for p in provenance.problems(stale, CHECKOUT)] == ["vfido"]
