"""Run a vfido key from Python (the toolkit's documented import; the code is in
:mod:`vfido.testing`)::

    from vfido.api import VirtualKey

    with VirtualKey() as key:                       # ephemeral keystore, auto-approving user
        client = key.client("https://example.com")  # a python-fido2 Fido2Client on key.device
"""

from vfido.testing import (
    DEFAULT_ORIGIN,
    PRESENCE_MODES,
    TRANSPORTS,
    Credential,
    PendingRequest,
    ServiceKey,
    VirtualKey,
    VirtualKeyError,
    default_uv,
    open_hidraw,
)

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
