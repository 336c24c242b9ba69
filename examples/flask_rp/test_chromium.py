"""Chromium, the example RP and a vfido key on UHID: what a user's browser does, headless.

``vfido_hid_key`` is a kernel HID device (``/dev/hidrawN``), found by Chromium like a USB
security key; the test is skipped with the reason where ``/dev/uhid`` cannot be used (most
containers and CI runners: vfido's own CI runs it in a qemu guest) or Chromium is missing.
Chromium talks to every security key it sees, so no other key should be plugged in.

Chromium is driven over its DevTools pipe by ``vfido.testing.devtools`` (standard library only); a
Selenium or Playwright test would call the same page functions, ``register(name)`` and
``login(name)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask

from vfido.api import VirtualKey
from vfido.testing.devtools import Browser, CdpError, Page, find_chromium

#: Seconds for each browser step (a slow emulated machine needs most of it).
STEP_TIMEOUT = 150.0


@contextmanager
def start_browser(chromium: str, log: Path, url: str) -> Iterator[Page]:
    """Chromium showing ``url``. On a starved machine (an emulated CPU) Chromium's start-up
    sometimes stalls for good; a second, fresh start then works."""
    for attempt, timeout in enumerate((100.0, STEP_TIMEOUT), 1):
        try:
            browser = Browser(chromium, log=log, timeout=timeout)  # its output appended to log
            try:
                page = browser.open_page(url, timeout=timeout)
            except BaseException:
                browser.close()
                raise
        except CdpError:
            if attempt == 2:
                raise
            continue
        with browser:
            yield page
        return


def test_chromium_registers_and_signs_in_with_the_key(
    vfido_hid_key: VirtualKey, app: Flask, live_server: str, tmp_path: Path
) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on PATH (set $VFIDO_CHROMIUM to its executable)")
    log_path = tmp_path / "chromium.log"
    url = live_server + "/"
    try:
        with start_browser(chromium, log_path, url) as page:
            registered = page.evaluate('register("alice")', timeout=STEP_TIMEOUT)
            signed_in = page.evaluate('login("alice")', timeout=STEP_TIMEOUT)
            me = page.evaluate('fetch("/api/me").then((r) => r.json())')
    except CdpError as exc:
        tail = log_path.read_text(errors="replace")[-3000:]
        pytest.fail(f"{exc}\nkey: {vfido_hid_key.hidraw_path}\nchromium log:\n{tail}")
    assert registered["status"] == "ok"
    assert signed_in["status"] == "ok" and signed_in["username"] == "alice"
    assert signed_in["sign_count"] >= 1
    assert me == {"username": "alice"}
    [credential] = app.config["ACCOUNTS"]["alice"].credentials
    assert credential.public_key[3] == -7  # ES256, the RP's first choice
