"""Playwright, the example RP and a vfido key on UHID.

Playwright (PyPI ``playwright``) launches the system's Chromium (``executable_path``; no
``playwright install``, no browser download). The key is ``vfido run --transport uhid --trace
FILE`` (``traced_hid_key`` in conftest.py): the test registers and signs in through the page,
checks that the RP verified both, and reads from the key's trace that the key, over CTAP2,
served each ceremony (not Chromium's built-in authenticator, not a fall-back to U2F). Skipped,
with the reason, where ``/dev/uhid`` cannot be used, or Playwright or Chromium is missing;
vfido's CI runs it in its qemu guest (``tests/vm``, check ``example_browsers_pytest``).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from browser_helpers import CHROMIUM_FLAGS, browser_environment, register_and_sign_in
from flask import Flask

from vfido.testing.devtools import find_chromium

if TYPE_CHECKING:
    from browser_helpers import TracedKey


#: Milliseconds for each browser step (a slow emulated machine needs most of it).
STEP_TIMEOUT_MS = 150_000

#: Runs a page function; its JSON (or the error) comes back to Playwright.
CALL = """
([name, username]) => window[name](username).then(
  (result) => ({result, credential: lastCredential}),
  (error) => ({error: error.name + ": " + error.message}))
"""


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs Playwright (pip install playwright)"
    )
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("needs Chromium (Debian: chromium; or set $VFIDO_CHROMIUM)")
    # Playwright adds its own --headless and --remote-debugging-pipe.
    args = [f for f in CHROMIUM_FLAGS if not f.startswith("--headless")]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=args,
            env=browser_environment(),
            headless=True,
            timeout=STEP_TIMEOUT_MS,
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(STEP_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def call(page: Any, function: str, username: str) -> dict[str, Any]:
    """Runs the page's ``register`` or ``login`` for ``username``; what it answered."""
    answer: dict[str, Any] = page.evaluate(CALL, [function, username])
    return answer


def test_playwright_registers_and_signs_in_with_the_key(
    traced_hid_key: TracedKey, page: Any, app: Flask, live_server: str
) -> None:
    page.goto(live_server + "/")
    # register, then sign in; the RP verified both, and the key served each over CTAP2
    created_by, signed_by = register_and_sign_in(partial(call, page), traced_hid_key, app)
    print(f"playwright: create() <- {created_by}, get() <- {signed_by}")
