"""Selenium, the example RP and a vfido key on UHID: an existing WebDriver test, with a real key.

Selenium drives headless Chromium through chromedriver (Debian: ``chromium-driver``; its path
is given, so Selenium Manager downloads nothing). The key is ``vfido run --transport uhid
--trace FILE`` (``traced_hid_key`` in conftest.py), a kernel HID device Chromium finds like a
USB security key: the test registers and signs in through the page, checks that the RP
verified both, and reads from the key's trace that the key, over CTAP2, served each ceremony
(not Chromium's built-in authenticator, not a fall-back to U2F). Skipped, with the reason,
where ``/dev/uhid`` cannot be used, or Selenium, Chromium or chromedriver is missing; vfido's
CI runs it in its qemu guest (``tests/vm``, check ``example_browsers_pytest``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from browser_helpers import (
    browser_environment,
    chromium_with_debugging_port,
    register_and_sign_in,
)
from flask import Flask

from vfido.testing.devtools import find_chromium

if TYPE_CHECKING:
    from browser_helpers import TracedKey


#: Seconds for each browser step, and for Chromium to start (a slow emulated machine needs
#: most of them).
STEP_TIMEOUT = 150.0
STARTUP_TIMEOUT = 600.0

#: Runs a page function and hands its JSON (or the error) back to Selenium.
CALL = """
const done = arguments[arguments.length - 1];
window[arguments[0]](arguments[1]).then(
  (result) => done({result, credential: lastCredential}),
  (error) => done({error: error.name + ": " + error.message}));
"""


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="needs Selenium (pip install selenium)"
    )
    chromium = find_chromium()
    chromedriver = os.environ.get("VFIDO_CHROMEDRIVER") or shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("needs Chromium and chromedriver (Debian: chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    # chromedriver gives a Chromium it launches 60 s to start, which a starved machine (vfido's
    # CI runs this in an emulated CPU) exceeds: the test starts Chromium itself and
    # chromedriver attaches to it (debuggerAddress). On a desktop, binary_location and the
    # flags in ChromeOptions, without debugger_address, do the same.
    with chromium_with_debugging_port(chromium, tmp_path, STARTUP_TIMEOUT) as address:
        options = webdriver.ChromeOptions()
        options.debugger_address = address
        log = tmp_path / "chromedriver.log"
        service = Service(chromedriver, log_output=str(log), env=browser_environment())
        browser = webdriver.Chrome(options=options, service=service)
        browser.set_script_timeout(STEP_TIMEOUT)
        try:
            yield browser
        finally:
            browser.quit()


def call(driver: Any, function: str, username: str) -> dict[str, Any]:
    """Runs the page's ``register`` or ``login`` for ``username``; what it answered."""
    answer: dict[str, Any] = driver.execute_async_script(CALL, function, username)
    return answer


def test_selenium_registers_and_signs_in_with_the_key(
    traced_hid_key: TracedKey, driver: Any, app: Flask, live_server: str
) -> None:
    driver.get(live_server + "/")
    # register, then sign in; the RP verified both, and the key served each over CTAP2
    created_by, signed_by = register_and_sign_in(partial(call, driver), traced_hid_key, app)
    print(f"selenium: create() <- {created_by}, get() <- {signed_by}")
