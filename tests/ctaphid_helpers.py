"""Test handlers and a tiny host-side CTAPHID decoder shared by the transport tests."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from vfido.transports.ctaphid import (
    BROADCAST_CID,
    CONT_DATA_SIZE,
    INIT_DATA_SIZE,
    MAX_LOCK_SECONDS,
    REPORT_SIZE,
    TYPE_INIT,
    Command,
    CtapHidCore,
    Output,
)
from vfido.transports.handler import KeepaliveStatus, Transaction

CTAP2_OK = 0x00
CTAP2_ERR_KEEPALIVE_CANCEL = 0x2D


class EchoHandler:
    """CBOR: status 0x00 + the request; MSG: the APDU + SW 9000. Records winks/power cycles."""

    def __init__(self) -> None:
        self.winks = 0
        self.power_cycles = threading.Event()
        self.power_cycle_count = 0

    def handle_cbor(self, request: bytes, transaction: Transaction) -> bytes:
        return bytes([CTAP2_OK]) + request

    def handle_msg(self, apdu: bytes, transaction: Transaction) -> bytes:
        return apdu + b"\x90\x00"

    def wink(self) -> None:
        self.winks += 1

    def power_cycle(self) -> None:
        self.power_cycle_count += 1
        self.power_cycles.set()


class WaitForCancelHandler(EchoHandler):
    """CBOR requests ask for the user (UPNEEDED) and wait until cancelled (or ``release``)."""

    def __init__(self, limit: float = 30.0) -> None:
        super().__init__()
        self.limit = limit
        self.started = threading.Event()
        self.release = threading.Event()
        self.saw_cancel = threading.Event()

    def handle_cbor(self, request: bytes, transaction: Transaction) -> bytes:
        transaction.set_keepalive(KeepaliveStatus.UPNEEDED)
        self.started.set()
        waited = 0.0
        while waited < self.limit and not self.release.is_set():
            if transaction.wait_cancelled(0.05):
                self.saw_cancel.set()
                return bytes([CTAP2_ERR_KEEPALIVE_CANCEL])
            waited += 0.05
        return bytes([CTAP2_OK]) + request


class FailingHandler(EchoHandler):
    """Raises from every request, to check the runner survives."""

    def handle_cbor(self, request: bytes, transaction: Transaction) -> bytes:
        raise RuntimeError("boom")

    def handle_msg(self, apdu: bytes, transaction: Transaction) -> bytes:
        raise RuntimeError("boom")


@dataclass
class Message:
    channel: int
    command: int
    payload: bytes = field(repr=False)


def request_reports(channel: int, command: int, payload: bytes) -> list[bytes]:
    """Host-side framing of one request (independent of transports.ctaphid.encode_message)."""
    reports = []
    head = struct.pack(">IBH", channel, TYPE_INIT | command, len(payload))
    reports.append((head + payload[:INIT_DATA_SIZE]).ljust(REPORT_SIZE, b"\0"))
    rest = payload[INIT_DATA_SIZE:]
    seq = 0
    while rest:
        chunk, rest = rest[:CONT_DATA_SIZE], rest[CONT_DATA_SIZE:]
        reports.append((struct.pack(">IB", channel, seq) + chunk).ljust(REPORT_SIZE, b"\0"))
        seq += 1
    return reports


def decode_messages(reports: Iterable[bytes]) -> list[Message]:
    """Reassemble device reports into messages, checking the framing strictly."""
    messages: list[Message] = []
    partial: dict[int, tuple[int, int, bytearray, int]] = {}
    for report in reports:
        assert len(report) == REPORT_SIZE, f"report of {len(report)} bytes"
        channel, kind = struct.unpack_from(">IB", report)
        if kind & TYPE_INIT:
            assert channel not in partial, "init packet while a response was incomplete"
            (length,) = struct.unpack_from(">H", report, 5)
            data = bytearray(report[7:])
            if length <= len(data):
                messages.append(Message(channel, kind & 0x7F, bytes(data[:length])))
            else:
                partial[channel] = (kind & 0x7F, length, data, 0)
        else:
            assert channel in partial, "continuation packet without init packet"
            command, length, data, seq = partial[channel]
            assert kind == seq, "wrong sequence number"
            data += report[5:]
            if length <= len(data):
                del partial[channel]
                messages.append(Message(channel, command, bytes(data[:length])))
            else:
                partial[channel] = (command, length, data, seq + 1)
    assert not partial, "incomplete response"
    return messages


def reports_of(outputs: Iterable[object]) -> list[bytes]:
    return [o for o in outputs if isinstance(o, bytes)]


def core_init(core: CtapHidCore, now: float = 0.0, nonce: bytes = b"\x01" * 8) -> int:
    """Allocate a channel on a sans-IO core; returns the new channel id."""
    (message,) = decode_messages(
        reports_of(core.feed(request_reports(BROADCAST_CID, Command.INIT, nonce)[0], now))
    )
    assert message.channel == BROADCAST_CID
    assert message.command == Command.INIT
    assert message.payload[:8] == nonce
    channel: int = struct.unpack_from(">I", message.payload, 8)[0]
    return channel


def core_call(
    core: CtapHidCore, channel: int, command: int, payload: bytes, now: float = 0.0
) -> list[Output]:
    """Feed a whole request; return every output (reports and events)."""
    out: list[Output] = []
    for report in request_reports(channel, command, payload):
        out += core.feed(report, now)
    return out


def assert_core_recovers(core: CtapHidCore, now: float) -> None:
    """Whatever ``core`` went through before ``now``: once its running transaction (if any) is
    answered and every timeout has passed (the longest is the channel lock), a new channel
    gets its PING answered."""
    active = core.active_transaction()
    if active is not None:
        decode_messages(core.respond(active, b"\x00"))
    now += MAX_LOCK_SECONDS + 1
    core.tick(now)
    channel = core_init(core, now)
    (pong,) = decode_messages(reports_of(core_call(core, channel, Command.PING, b"ok", now)))
    assert pong.payload == b"ok"
