"""Test-only plumbing for CTAP1: python-fido2 talking straight to a Ctap1Handler.

:class:`DirectU2fDevice` is a ``fido2.ctap.CtapDevice`` whose CTAPHID_MSG goes
to :meth:`Ctap1Handler.process` without any CTAPHID framing, so python-fido2's
own CTAP1 code (``fido2.ctap1.Ctap1`` and the client's U2F backend) drives it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.hid import CAPABILITY, CTAPHID

from vfido.authenticator.ctap1 import Ctap1Handler
from vfido.authenticator.env import (
    PresenceRequest,
    PresenceResult,
    RequestContext,
)


class RecordingContext:
    """A RequestContext that remembers the keepalive statuses the handler chose."""

    channel = 1

    def __init__(self) -> None:
        self.keepalives: list[int] = []

    def is_cancelled(self) -> bool:
        return False

    def wait_cancelled(self, timeout: float) -> bool:
        return False

    def set_keepalive(self, status: int) -> None:
        self.keepalives.append(status)


class DirectU2fDevice(CtapDevice):
    """A U2F-only CtapDevice (no CBOR capability) calling the handler directly.

    ``handler`` is a :class:`Ctap1Handler` or any ``process(apdu, context)``-like
    callable (e.g. ``Authenticator.handle_msg``). Records every APDU and the
    status word of every answer. ``on_response`` may be set to observe answers
    (e.g. to stop a polling client).
    """

    def __init__(
        self,
        handler: Ctap1Handler | Callable[[bytes, RequestContext], bytes],
        context: RequestContext | None = None,
    ) -> None:
        self.process = handler.process if isinstance(handler, Ctap1Handler) else handler
        self.context: RequestContext = context or RecordingContext()
        self.requests: list[bytes] = []
        self.status_words: list[int] = []
        self.on_response: Callable[[int], None] | None = None
        self._lock = threading.Lock()

    @property
    def capabilities(self) -> int:
        return int(CAPABILITY.WINK)  # NMSG not set: U2F supported; no CBOR

    def call(
        self,
        cmd: int,
        data: bytes = b"",
        event: threading.Event | None = None,
        on_keepalive: Callable[[STATUS], None] | None = None,
    ) -> bytes:
        if cmd != CTAPHID.MSG:
            raise CtapError(CtapError.ERR.INVALID_COMMAND)
        response = self.process(bytes(data), self.context)
        sw = int.from_bytes(response[-2:], "big")
        with self._lock:
            self.requests.append(bytes(data))
            self.status_words.append(sw)
        if self.on_response is not None:
            self.on_response(sw)
        return response

    @classmethod
    def list_devices(cls) -> Iterator[CtapDevice]:
        return iter(())


@dataclass
class CountingPresence:
    """Wraps a real presence front end and records what it was asked."""

    inner: Any
    requests: list[PresenceRequest] = field(default_factory=list)
    results: list[PresenceResult] = field(default_factory=list)

    def request_presence(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        self.requests.append(request)
        result: PresenceResult = self.inner.request_presence(request, context, timeout)
        self.results.append(result)
        return result


class ManualClock:
    """A monotonic clock the test advances by hand (wall time still passes for waits)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def short_apdu(ins: int, p1: int = 0, data: bytes = b"", le: int | None = None) -> bytes:
    """Short-length encoding (Lc one byte; data up to 255 bytes)."""
    out = bytes([0, ins, p1, 0])
    if data:
        out += bytes([len(data)]) + data
    if le is not None:
        out += bytes([le])
    return out


def extended_apdu(ins: int, p1: int = 0, data: bytes = b"", le: int | None = None) -> bytes:
    """Extended-length encoding (0x00 then two-byte Lc / Le)."""
    out = bytes([0, ins, p1, 0])
    if data:
        out += b"\x00" + len(data).to_bytes(2, "big") + data
        if le is not None:
            out += le.to_bytes(2, "big")
    elif le is not None:
        out += b"\x00" + le.to_bytes(2, "big")
    return out


def sw_of(response: bytes) -> int:
    return int.from_bytes(response[-2:], "big")
