"""Fixtures shared by the example's tests.

vfido's fixtures (vfido_key, vfido_hid_key) come from its pytest plugin, which pytest loads by
itself once vfido is pip-installed; the line below also makes the example run from a vfido
checkout that is not installed (``python3 -m pytest examples/flask_rp`` from the checkout).

The browser tests (Chromium over DevTools, Selenium, Playwright) share ``live_server`` (the RP
on a free port of localhost) and, for Selenium and Playwright, ``traced_hid_key``: ``vfido run
--transport uhid --trace FILE`` as a subprocess, so each test can read from the key's own trace
which protocol served each ceremony. A browser has a built-in authenticator too (Chromium's
WebDriver/DevTools one) and, when getInfo does not suit it, falls back to U2F: a test that only
checks the page's results would pass in both cases, so each ceremony is matched to the CTAP2
makeCredential / getAssertion response that produced it
(``TracedKey.assert_served_over_ctap2``, browser_helpers.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_helpers import TracedKey
from flask import Flask
from webauthn_app import create_app
from werkzeug.serving import make_server

from vfido.api import VirtualKey
from vfido.testing.pytest_plugin import REQUIRE_UHID_ENV, uhid_unavailable

pytest_plugins = ["vfido.pytest_plugin"]


@pytest.fixture
def app() -> Flask:
    return create_app(rp_id="localhost")


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The RP on a free port of 127.0.0.1, as http://localhost:PORT (a secure context)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def traced_hid_key(tmp_path: Path) -> Iterator[TracedKey]:
    """``vfido run --transport uhid --uv --trace FILE`` (built-in UV, as every toolkit key:
    Chromium then verifies through the key instead of asking for a PIN). Skipped with the
    reason where ``/dev/uhid`` cannot be used (``VFIDO_REQUIRE_UHID=1``: fail instead)."""
    reason = uhid_unavailable()
    if reason is not None:
        if os.environ.get(REQUIRE_UHID_ENV, "") not in ("", "0"):
            pytest.fail(f"{REQUIRE_UHID_ENV} is set but {reason}", pytrace=False)
        pytest.skip(reason)
    trace = tmp_path / "key-trace.jsonl"
    # An emulated machine takes 20-40 s to start the key (Python imports).
    service = VirtualKey.service(
        transport="uhid", extra_args=["--trace", str(trace)], ready_timeout=240
    )
    with service:
        yield TracedKey(service, trace)
