"""What the example's Selenium and Playwright tests share: Chromium's flags and environment,
and :class:`TracedKey`, a ``vfido run`` key with its trace (see conftest.py)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from vfido.api import ServiceKey
from vfido.devtools import BROWSER_ENVIRONMENT, HEADLESS_FLAGS

#: vfido's own trace reader (tests/vm/trace_protocols.py in the checkout).
TRACE_PROTOCOLS = Path(__file__).resolve().parents[2] / "tests" / "vm" / "trace_protocols.py"

#: Headless Chromium for Selenium and Playwright: vfido.devtools' flags, and the network
#: service in the browser process (on a starved machine, an emulated CPU, its own process
#: gave up starting and the page was never requested).
CHROMIUM_FLAGS = (*HEADLESS_FLAGS, "--enable-features=NetworkServiceInProcess2")


def browser_environment() -> dict[str, str]:
    """The only variables the browser inherits (as vfido.devtools does): a desktop session's
    D-Bus and display variables slow Chromium down where they lead nowhere."""
    return {name: os.environ[name] for name in BROWSER_ENVIRONMENT if name in os.environ}


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
