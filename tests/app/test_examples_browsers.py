"""The example's Selenium and Playwright tests (examples/flask_rp) as a user runs them: where
/dev/uhid is missing they are skipped and say why (tests/vm runs them in its guest, check
``example_browsers_pytest``); they collect, so their imports and fixtures are sound."""

from __future__ import annotations

import pytest

from tests.app.test_examples import FLASK_RP, run_example
from vfido.testing.pytest_plugin import uhid_unavailable

pytest_plugins = ["pytester"]


@pytest.mark.parametrize("name", ["test_selenium.py", "test_playwright.py"])
def test_browser_example_skips_without_uhid(
    name: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = uhid_unavailable()
    if reason is None:
        pytest.skip("/dev/uhid is usable: the browser examples are run by the VM check instead")
    result = run_example(pytester, monkeypatch, str(FLASK_RP / name))
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*/dev/uhid*"])
