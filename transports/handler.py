"""The small interface between a transport and whatever answers its requests.

A transport (in-process, UDP, UHID) assembles CTAPHID messages and calls a
:class:`CtapHandler` from a worker thread. The handler receives a
:class:`Transaction` through which it learns about a CTAPHID_CANCEL and tells
the transport which keepalive status to send while it works.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol


class KeepaliveStatus(IntEnum):
    """CTAPHID_KEEPALIVE status byte (CTAP 2.1 section 11.2.9.2.1)."""

    PROCESSING = 0x01
    UPNEEDED = 0x02


class Transaction(Protocol):
    """One CTAPHID MSG or CBOR request being processed.

    Implemented by the transport's runner; the handler only reads it.
    """

    @property
    def channel(self) -> int:
        """The CTAPHID channel id the request came in on."""
        ...

    def is_cancelled(self) -> bool:
        """True once CTAPHID_CANCEL arrived on this channel (or the channel is gone)."""
        ...

    def wait_cancelled(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True if the transaction was cancelled."""
        ...

    def set_keepalive(self, status: int) -> None:
        """Choose the keepalive status (a :class:`KeepaliveStatus`) sent while the request
        is outstanding."""
        ...


#: Names in :meth:`ProtocolReporter.supported_protocols`.
CTAP2 = "ctap2"  # CTAPHID_CBOR
U2F = "u2f"  # CTAPHID_MSG (CTAP1/U2F APDUs)
BOTH_PROTOCOLS = frozenset({CTAP2, U2F})


class ProtocolReporter(Protocol):
    """Optional for a :class:`CtapHandler`: which protocols it answers right now.

    A device whose protocols change at run time (vfido's ``versions`` behaviour makes a
    key U2F-only or CTAP2-only) reports them here; the transport advertises them the
    way its own protocol does (CTAPHID: the CBOR and NMSG capability flags of every
    CTAPHID_INIT response) and refuses the other commands (ERR_INVALID_CMD) on channels
    INITed since; a host that was told otherwise earlier is answered by the handler
    itself. A handler without this method answers both.
    """

    def supported_protocols(self) -> frozenset[str]:
        """A subset of {CTAP2, U2F}. Called on the transport's I/O thread at every
        CTAPHID_INIT (with the transport's lock held): it must be cheap, must not block,
        and must be safe to call while a request is being handled on another thread."""
        ...


class CtapHandler(Protocol):
    """What a transport needs from the device behind it."""

    def handle_cbor(self, request: bytes, transaction: Transaction) -> bytes:
        """Answer a CTAPHID_CBOR payload (command byte + CBOR) with status byte + CBOR."""
        ...

    def handle_msg(self, apdu: bytes, transaction: Transaction) -> bytes:
        """Answer a CTAPHID_MSG payload (a CTAP1/U2F APDU) with response data + SW1 SW2."""
        ...

    def wink(self) -> None:
        """CTAPHID_WINK: show the user which key this is."""
        ...

    def power_cycle(self) -> None:
        """The device was unplugged and plugged in again (UDP power-cycle datagram)."""
        ...


class WrappedHandler:
    """A :class:`CtapHandler` in front of another (``inner``) that passes every call through:
    subclasses override what they watch (the application's trace recorder and relying-party
    lint look at requests without changing them)."""

    def __init__(self, inner: CtapHandler) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def handle_cbor(self, request: bytes, transaction: Transaction) -> bytes:
        return self.inner.handle_cbor(request, transaction)

    def handle_msg(self, apdu: bytes, transaction: Transaction) -> bytes:
        return self.inner.handle_msg(apdu, transaction)

    def wink(self) -> None:
        self.inner.wink()

    def supported_protocols(self) -> frozenset[str]:
        """The inner handler's (:class:`ProtocolReporter`), else both."""
        reporter = getattr(self.inner, "supported_protocols", None)
        return frozenset(reporter()) if callable(reporter) else BOTH_PROTOCOLS

    def power_cycle(self) -> None:
        self.inner.power_cycle()
