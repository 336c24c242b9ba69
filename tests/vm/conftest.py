"""Session fixture for the real-kernel tests: boots ONE qemu guest and returns its results."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import provenance
import vmharness
from vmharness import GuestResults

from tests import ci


def unavailable(reason: str) -> None:
    """Skip on a developer machine without the prerequisites; fail in CI (tests/ci.py)."""
    ci.unavailable(f"VM prerequisites missing: {reason}", in_ci_because="CI runs the VM tests")


@pytest.fixture(scope="session")
def vm(tmp_path_factory: pytest.TempPathFactory) -> GuestResults:
    try:
        vmharness.check_prerequisites()
        vmharness.guest_python()
        image = vmharness.build_guest()
    except vmharness.PrerequisiteMissing as exc:
        unavailable(str(exc))
        raise  # unreachable: unavailable() raises
    out_env = os.environ.get("VFIDO_VM_OUT")
    out_dir = Path(out_env) if out_env else tmp_path_factory.mktemp("vfido-vm")
    run = vmharness.run_guest(
        image,
        out_dir,
        checks=os.environ.get("VFIDO_VM_CHECKS", ""),
        timeout=float(os.environ.get("VFIDO_VM_TIMEOUT", vmharness.DEFAULT_TIMEOUT)),
    )
    info = (run.results or {}).get("info", {})
    summary = {
        "wall_seconds": run.wall_seconds,
        "returncode": run.returncode,
        "boot_seconds": info.get("boot_seconds"),
        "guest_seconds": info.get("total_guest_seconds"),
        "imports": info.get("imports"),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    if run.results is None or not info.get("complete"):
        why = "timed out" if run.timed_out else f"exited {run.returncode}"
        pytest.fail(
            f"the guest {why} without complete results (out dir {out_dir}).\n"
            f"console tail:\n{run.console[-5000:]}\n"
            f"guest.log tail:\n{run.guest_log[-5000:]}",
            pytrace=False,
        )
    # The guest must have run the checkout's venv and imported every package from the
    # checkout or its .venv (issue #13): anything else fails every vm test.
    origins = info.get("imports")
    wrong = (
        provenance.problems(origins, vmharness.CHECKOUT.resolve())
        if origins
        else ["the guest recorded no import origins"]
    )
    if wrong:
        pytest.fail(
            "the guest did not run the checkout's virtual environment:\n  "
            + "\n  ".join(wrong)
            + f"\n(out dir {out_dir}; guest imports: {json.dumps(origins, indent=1)})",
            pytrace=False,
        )
    return GuestResults(run, out_dir)
