"""Minimal CTAPHID hosts for the benchmarks (no python-fido2 on the measured path).

* :class:`SyncHost` drives a :class:`~vfido.transports.ctaphid.CtapHidCore` and the handler on the
  calling thread: CTAPHID framing and the authenticator, no threads at all.
* :class:`RunnerHost` feeds a real :class:`~vfido.transports.runner.HidRunner` (worker and ticker
  threads) and waits for the response reports: framing plus the thread handoffs.
* :class:`UdpHost` speaks raw CTAPHID-over-UDP to a key in another process.

All three expose ``cbor(payload) -> bytes`` (status byte + CBOR) and ``ping(data) -> bytes``.
Requests are built with python-fido2's CBOR encoder once, outside the timed loop.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from fido2 import cbor as fcbor
from fido2.webauthn import AuthenticatorData

from vfido.transports.ctaphid import (
    BROADCAST_CID,
    TYPE_INIT,
    Command,
    CtapHidCore,
    Request,
    encode_message,
)
from vfido.transports.handler import CtapHandler
from vfido.transports.runner import HidRunner, HidTransaction

RP_ID = "bench.example"


def make_credential_request(
    client_data_hash: bytes,
    *,
    rp_id: str = RP_ID,
    user_id: bytes = b"bench-user",
    alg: int = -7,
    rk: bool = False,
) -> bytes:
    """authenticatorMakeCredential command byte + CBOR parameters."""
    params: dict[int, Any] = {
        1: client_data_hash,
        2: {"id": rp_id, "name": "Bench"},
        3: {"id": user_id, "name": "bench"},
        4: [{"type": "public-key", "alg": alg}],
    }
    if rk:
        params[7] = {"rk": True}
    return b"\x01" + fcbor.encode(params)


def get_assertion_request(
    client_data_hash: bytes,
    credential_id: bytes | None = None,
    *,
    rp_id: str = RP_ID,
    uv: bool = False,
) -> bytes:
    """authenticatorGetAssertion command byte + CBOR parameters (no allowList if no id;
    ``uv``: the uv option, for a key with built-in user verification)."""
    params: dict[int, Any] = {1: rp_id, 2: client_data_hash}
    if credential_id is not None:
        params[3] = [{"type": "public-key", "id": credential_id}]
    if uv:
        params[5] = {"uv": True}
    return b"\x02" + fcbor.encode(params)


def user_verified(get_assertion_response: bytes) -> bool:
    """Whether a successful getAssertion response's authenticatorData has the UV flag."""
    body: Any = fcbor.decode(get_assertion_response[1:])
    return bool(AuthenticatorData(bytes(body[2])).is_user_verified())


def credential_id_of(make_credential_response: bytes) -> bytes:
    """The credential ID in a successful makeCredential response."""
    if not make_credential_response or make_credential_response[0] != 0:
        raise RuntimeError(f"makeCredential failed: {make_credential_response[:1].hex()}")
    body: Any = fcbor.decode(make_credential_response[1:])
    data = AuthenticatorData(bytes(body[2])).credential_data
    if data is None:
        raise RuntimeError("no attested credential data")
    return bytes(data.credential_id)


def check_ok(response: bytes) -> bytes:
    if not response or response[0] != 0:
        raise RuntimeError(f"CTAP error 0x{response[:1].hex()}")
    return response


class _Reassembler:
    """Collects device reports of one response on one channel (skips keepalives)."""

    def __init__(self, channel: int) -> None:
        self.channel = channel
        self.command = 0
        self.length = -1
        self.data = bytearray()
        self.keepalives: list[float] = []

    def add(self, report: bytes) -> bool:
        """True once the message is complete."""
        if int.from_bytes(report[:4], "big") != self.channel:
            return False
        kind = report[4]
        if kind & TYPE_INIT:
            if kind == TYPE_INIT | Command.KEEPALIVE:
                self.keepalives.append(time.perf_counter())
                return False
            self.command = kind & ~TYPE_INIT
            self.length = int.from_bytes(report[5:7], "big")
            self.data = bytearray(report[7:])
        elif self.length >= 0:
            self.data += report[5:]
        return self.length >= 0 and len(self.data) >= self.length

    def result(self) -> bytes:
        if self.command == Command.ERROR:
            raise RuntimeError(f"CTAPHID error 0x{self.data[0]:02x}")
        return bytes(self.data[: self.length])


def _init_payload() -> bytes:
    return os.urandom(8)


class _Host:
    """What the hosts share: ``cbor`` and ``ping`` are each one CTAPHID round trip."""

    def _roundtrip(self, command: int, payload: bytes) -> bytes:
        raise NotImplementedError

    def cbor(self, payload: bytes) -> bytes:
        return self._roundtrip(Command.CBOR, payload)

    def ping(self, data: bytes) -> bytes:
        return self._roundtrip(Command.PING, data)

    def close(self) -> None:
        pass


class SyncHost(_Host):
    """CtapHidCore + handler on one thread: the cost of framing plus the authenticator."""

    def __init__(self, handler: CtapHandler) -> None:
        self.handler = handler
        self.core = CtapHidCore()
        nonce = _init_payload()
        out = self.core.feed(
            encode_message(BROADCAST_CID, Command.INIT, nonce)[0], time.monotonic()
        )
        report = out[0]
        assert isinstance(report, bytes)
        self.channel = int.from_bytes(report[15:19], "big")
        self._last_request: tuple[tuple[int, bytes] | None, list[bytes]] = (None, [])

    def _request_reports(self, command: int, payload: bytes) -> list[bytes]:
        """The host's reports for a request, split once per distinct request (like the CBOR
        payloads, host-side work stays out of the timed loop; the device's reassembly of
        them and the split of its response are timed)."""
        key = (command, payload)
        if self._last_request[0] != key:
            self._last_request = (key, encode_message(self.channel, command, payload))
        return self._last_request[1]

    def _roundtrip(self, command: int, payload: bytes) -> bytes:
        now = time.monotonic()
        rx = _Reassembler(self.channel)
        for report in self._request_reports(command, payload):
            for item in self.core.feed(report, now):
                if isinstance(item, Request):
                    transaction = HidTransaction(item.channel, item.transaction)
                    if item.command == Command.CBOR:
                        answer = self.handler.handle_cbor(item.payload, transaction)
                    else:
                        answer = self.handler.handle_msg(item.payload, transaction)
                    for out in self.core.respond(item.transaction, answer):
                        rx.add(out)
                elif isinstance(item, bytes):
                    rx.add(item)
        return rx.result()


class RunnerHost(_Host):
    """A real HidRunner (worker + ticker threads); the caller waits like a HID host does."""

    def __init__(self, handler: CtapHandler, *, keepalive_interval: float | None = None) -> None:
        self._cond = threading.Condition()
        self._rx: _Reassembler | None = None
        self._done = False
        kwargs: dict[str, Any] = {}
        if keepalive_interval is not None:
            kwargs["keepalive_interval"] = keepalive_interval
        self.runner = HidRunner(handler, self._on_report, **kwargs)
        self.channel = BROADCAST_CID
        nonce = _init_payload()
        reply = self._roundtrip(Command.INIT, nonce)
        self.channel = int.from_bytes(reply[8:12], "big")
        self.last_keepalives: list[float] = []

    def _on_report(self, report: bytes) -> None:
        with self._cond:
            rx = self._rx
            if rx is not None and rx.add(report):
                self._done = True
                self._cond.notify()

    def _roundtrip(self, command: int, payload: bytes, timeout: float = 60.0) -> bytes:
        rx = _Reassembler(self.channel)
        with self._cond:
            self._rx, self._done = rx, False
        for report in encode_message(self.channel, command, payload):
            self.runner.feed(report)
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise TimeoutError("no response")
            self._rx = None
        self.last_keepalives = rx.keepalives
        return rx.result()

    def close(self) -> None:
        self.runner.close()


class UdpHost(_Host):
    """Raw CTAPHID over UDP (one report per datagram) to a key at ``127.0.0.1:port``."""

    def __init__(self, port: int, peer_port: int, *, timeout: float = 30.0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", peer_port))
        self._sock.settimeout(timeout)
        self._key = ("127.0.0.1", port)
        self.channel = BROADCAST_CID
        reply = self._roundtrip(Command.INIT, _init_payload())
        self.channel = int.from_bytes(reply[8:12], "big")
        self.last_keepalives: list[float] = []

    def _roundtrip(self, command: int, payload: bytes) -> bytes:
        rx = _Reassembler(self.channel)
        for report in encode_message(self.channel, command, payload):
            self._sock.sendto(report, self._key)
        while True:
            if rx.add(self._sock.recv(2048)):
                break
        self.last_keepalives = rx.keepalives
        return rx.result()

    def close(self) -> None:
        self._sock.close()


Host = SyncHost | RunnerHost | UdpHost
HostFactory = Callable[[CtapHandler], Host]
