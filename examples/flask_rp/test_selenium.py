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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from browser_helpers import CHROMIUM_FLAGS, browser_environment
from flask import Flask

from vfido.devtools import find_chromium

if TYPE_CHECKING:
    from browser_helpers import TracedKey


#: Seconds for each browser step (a slow emulated machine needs most of it).
STEP_TIMEOUT = 150.0

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
    from selenium.common.exceptions import SessionNotCreatedException
    from selenium.webdriver.chrome.service import Service

    browser = None
    for attempt in (1, 2):
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / f'profile-{attempt}'}"):
            options.add_argument(flag)
        log = tmp_path / f"chromedriver-{attempt}.log"
        service = Service(chromedriver, log_output=str(log), env=browser_environment())
        try:
            browser = webdriver.Chrome(options=options, service=service)
            break
        except SessionNotCreatedException:
            # chromedriver waits 60 s for Chromium: on a starved machine (an emulated CPU)
            # its start-up sometimes stalls; a fresh start then works.
            if attempt == 2:
                raise
    assert browser is not None
    browser.set_script_timeout(STEP_TIMEOUT)
    try:
        yield browser
    finally:
        browser.quit()


def call(driver: Any, function: str, username: str) -> dict[str, Any]:
    answer: dict[str, Any] = driver.execute_async_script(CALL, function, username)
    assert "error" not in answer, answer
    return answer


def test_selenium_registers_and_signs_in_with_the_key(
    traced_hid_key: TracedKey, driver: Any, app: Flask, live_server: str
) -> None:
    driver.get(live_server + "/")
    registered = call(driver, "register", "alice")
    assert registered["result"]["status"] == "ok"  # the RP verified the attestation
    created_by = traced_hid_key.assert_served_over_ctap2("create", registered["credential"])

    signed_in = call(driver, "login", "alice")
    assert signed_in["result"]["status"] == "ok"  # the RP verified the assertion
    assert signed_in["result"]["username"] == "alice" and signed_in["result"]["sign_count"] >= 1
    signed_by = traced_hid_key.assert_served_over_ctap2("get", signed_in["credential"])

    [credential] = app.config["ACCOUNTS"]["alice"].credentials
    assert credential.public_key[3] == -7  # ES256, the RP's first choice
    print(f"selenium: create() <- {created_by}, get() <- {signed_by}")
