"""What the example's Selenium and Playwright tests share: Chromium's flags and environment,
:class:`TracedKey`, a ``vfido run`` key with its trace (see conftest.py), and
:func:`register_and_sign_in`, the ceremonies each test runs through the page."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from vfido.api import ServiceKey
from vfido.testing.devtools import BROWSER_ENVIRONMENT, HEADLESS_FLAGS

if TYPE_CHECKING:
    from flask import Flask

#: vfido's own trace reader (tests/vm/trace_protocols.py in the checkout).
TRACE_PROTOCOLS = Path(__file__).resolve().parents[2] / "tests" / "vm" / "trace_protocols.py"

#: Headless Chromium for Selenium and Playwright: vfido.testing.devtools' flags, and the network
#: service in the browser process (on a starved machine, an emulated CPU, its own process
#: gave up starting and the page was never requested).
CHROMIUM_FLAGS = (*HEADLESS_FLAGS, "--enable-features=NetworkServiceInProcess2")


def browser_environment() -> dict[str, str]:
    """The only variables the browser inherits (as vfido.testing.devtools does): a desktop session's
    D-Bus and display variables slow Chromium down where they lead nowhere."""
    return {name: os.environ[name] for name in BROWSER_ENVIRONMENT if name in os.environ}


@contextmanager
def chromium_with_debugging_port(chromium: str, tmp_path: Path, timeout: float) -> Iterator[str]:
    """Headless Chromium with ``--remote-debugging-port=0``; yields ``127.0.0.1:PORT`` (from
    the profile's DevToolsActivePort file) once it listens, for WebDriver to attach to.
    Stopped with its whole process group."""
    profile = tmp_path / "profile"
    argv = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    argv += ["--remote-debugging-port=0", "about:blank"]
    with (tmp_path / "chromium.log").open("wb") as log:
        proc = subprocess.Popen(
            argv,
            env=browser_environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().split()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Chromium did not start (see {tmp_path / 'chromium.log'})")
            time.sleep(0.2)
        yield f"127.0.0.1:{port_file.read_text().split()[0]}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _trace_protocols() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vfido_trace_protocols", TRACE_PROTOCOLS)
    assert spec is not None and spec.loader is not None, TRACE_PROTOCOLS
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class TracedKey:
    """A ``vfido run`` key over UHID and its ``--trace`` file."""

    service: ServiceKey
    trace: Path

    def served(self, kind: str, credential: dict[str, Any]) -> list[str]:
        """Which key responses served a ceremony: ``kind`` ``create`` or ``get``,
        ``credential`` the page's PublicKeyCredential JSON (rawId, response.signature)."""
        protocols = _trace_protocols()
        return list(protocols.served(protocols.read_trace(self.trace), kind, credential))

    def protocol_counts(self) -> dict[str, int]:
        protocols = _trace_protocols()
        return dict(protocols.protocol_counts(protocols.read_trace(self.trace)))

    def assert_served_over_ctap2(self, kind: str, credential: dict[str, Any]) -> str:
        """The ceremony was served by exactly one CTAP2 response of this key (not by the
        browser's built-in authenticator, not by U2F); returns it (``"CBOR makeCredential"``)."""
        served = self.served(kind, credential)
        wanted = ("CBOR makeCredential",) if kind == "create" else _trace_protocols().CTAP2_GET
        counts = self.protocol_counts()
        assert len(served) == 1 and served[0] in wanted, (kind, served, counts)
        assert not [c for c in counts if c in ("MSG REGISTER", "MSG AUTHENTICATE")], counts
        return served[0]


def register_and_sign_in(
    call: Callable[[str, str], dict[str, Any]], key: TracedKey, app: Flask
) -> tuple[str, str]:
    """Registers alice and signs her in through the page, whatever drives the browser:
    ``call(function, username)`` runs the page's ``register`` or ``login`` and returns its
    ``{"result": ..., "credential": ...}`` (or ``{"error": ...}``). Checks that the RP verified
    both ceremonies and that ``key`` served each over CTAP2; returns the key's responses that
    served create() and get() (``"CBOR makeCredential"``, ``"CBOR getAssertion"``)."""
    registered = call("register", "alice")
    assert "error" not in registered, registered
    assert registered["result"]["status"] == "ok"  # the RP verified the attestation
    created_by = key.assert_served_over_ctap2("create", registered["credential"])

    signed_in = call("login", "alice")
    assert "error" not in signed_in, signed_in
    assert signed_in["result"]["status"] == "ok"  # the RP verified the assertion
    assert signed_in["result"]["username"] == "alice" and signed_in["result"]["sign_count"] >= 1
    signed_by = key.assert_served_over_ctap2("get", signed_in["credential"])

    [credential] = app.config["ACCOUNTS"]["alice"].credentials
    assert credential.public_key[3] == -7  # ES256, the RP's first choice
    return created_by, signed_by
