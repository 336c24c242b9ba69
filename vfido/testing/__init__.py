"""The toolkit for relying-party tests: keys run from Python, the pytest plugin, a DevTools
client for Chromium, fault injection and the WebDriver intermediary.

* :mod:`~vfido.testing.virtual_key`: :class:`VirtualKey`, the key ``vfido run`` serves, built
  inside the calling process (in-process CTAPHID, UHID or a Unix socket).
* :mod:`~vfido.testing.service_key`: :class:`ServiceKey`, ``vfido run`` as a subprocess.
* :mod:`~vfido.testing.common`: what both return (:class:`Credential`,
  :class:`PendingRequest`) and raise (:class:`VirtualKeyError`).
* :mod:`~vfido.testing.pytest_plugin`: the fixtures ``vfido_key``, ``vfido_hid_key``,
  ``vfido_key_factory``, ``vfido_lint_key`` (installed as the ``vfido.pytest_plugin`` entry
  point).
* :mod:`~vfido.testing.devtools`: headless Chromium over its DevTools pipe (stdlib only).
* :mod:`~vfido.testing.faults`: keystore faults for crash and storage tests.
* :mod:`~vfido.testing.webdriver`: ``vfido webdriver``, W3C virtual authenticators backed by
  real keys.

``vfido.api`` re-exports the keys' public names (the toolkit's documented import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vfido.testing.common import (
        DEFAULT_ORIGIN,
        PRESENCE_MODES,
        TRANSPORTS,
        Credential,
        PendingRequest,
        VirtualKeyError,
        open_hidraw,
    )
    from vfido.testing.service_key import ServiceKey
    from vfido.testing.virtual_key import VirtualKey, default_uv

#: Where each name lives. Loaded on first use: ``vfido run`` imports
#: :mod:`vfido.testing.faults`, which must not pull in python-fido2's client with the keys.
_MODULE_OF = {
    "DEFAULT_ORIGIN": "common",
    "PRESENCE_MODES": "common",
    "TRANSPORTS": "common",
    "Credential": "common",
    "PendingRequest": "common",
    "VirtualKeyError": "common",
    "open_hidraw": "common",
    "ServiceKey": "service_key",
    "VirtualKey": "virtual_key",
    "default_uv": "virtual_key",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"vfido.testing.{module}"), name)


__all__ = [
    "DEFAULT_ORIGIN",
    "PRESENCE_MODES",
    "TRANSPORTS",
    "Credential",
    "PendingRequest",
    "ServiceKey",
    "VirtualKey",
    "VirtualKeyError",
    "default_uv",
    "open_hidraw",
]
