"""The examples in examples/ run as their own pytest sessions, the way a user runs them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vfido.testing.pytest_plugin import uhid_unavailable

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
FLASK_RP = ROOT / "examples" / "flask_rp"


def run_example(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str
) -> pytest.RunResult:
    """``python -m pytest examples/...`` in a fresh interpreter, vfido from this checkout."""
    pytest.importorskip("flask", reason="the Flask example needs Flask (pip install flask)")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("VFIDO_REQUIRE_UHID", raising=False)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", *args, timeout=600)


def test_flask_rp_with_python_fido2(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_example(pytester, monkeypatch, str(FLASK_RP / "test_webauthn_app.py"))
    result.assert_outcomes(passed=6)


def test_flask_rp_with_chromium_skips_without_uhid(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where /dev/uhid is usable the browser test runs (tests/vm runs it in the guest);
    elsewhere it is skipped, and says why."""
    reason = uhid_unavailable()
    if reason is None:
        pytest.skip("/dev/uhid is usable: the browser example is run by the VM check instead")
    result = run_example(pytester, monkeypatch, str(FLASK_RP / "test_chromium.py"))
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*/dev/uhid*"])
