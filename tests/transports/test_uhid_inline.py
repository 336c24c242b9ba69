"""UhidTransport's I/O threads on the host: a SOCK_SEQPACKET socket pair plays /dev/uhid (one
event per read and write, as the kernel's character device), this test plays the kernel and
the host (python-fido2 is not involved: the events are built here)."""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from tests.ctaphid_helpers import (
    CTAP2_ERR_KEEPALIVE_CANCEL,
    EchoHandler,
    WaitForCancelHandler,
    request_reports,
)
from vfido.transports import uhid
from vfido.transports.ctaphid import BROADCAST_CID, TYPE_INIT, Command

WAIT = 10.0


class FakeKernel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(WAIT)

    def event(self) -> tuple[int, bytes]:
        data = self.sock.recv(uhid.UHID_EVENT_SIZE)
        (kind,) = struct.unpack_from("<I", data)
        return kind, data[4:]

    def write_report(self, report: bytes) -> None:
        body = (b"\0" + report).ljust(uhid.UHID_DATA_MAX, b"\0") + struct.pack("<HB", 65, 1)
        self.sock.send(struct.pack("<I", uhid.UhidEventType.OUTPUT) + body)

    def read_report(self) -> bytes:
        while True:
            kind, body = self.event()
            if kind == uhid.UhidEventType.INPUT2:
                (size,) = struct.unpack_from("<H", body)
                return body[2 : 2 + size]

    def response(self, channel: int) -> bytes:
        """The next message on ``channel`` that is not a keepalive (command byte first)."""
        while True:
            head = self.read_report()
            if head[:4] != channel.to_bytes(4, "big") or head[4] == TYPE_INIT | Command.KEEPALIVE:
                continue
            length = (head[5] << 8) | head[6]
            data = head[7:]
            while len(data) < length:
                data += self.read_report()[5:]
            return bytes([head[4]]) + data[:length]


@pytest.fixture
def fake_uhid(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKernel]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    real_open = os.open

    def fake_open(path: str, flags: int, *args: int) -> int:
        if path == "/fake/uhid":
            return os.dup(theirs.fileno())
        return real_open(path, flags, *args)

    monkeypatch.setattr(uhid.os, "open", fake_open)
    kernel = FakeKernel(ours)
    yield kernel
    ours.close()
    theirs.close()


def _io_threads(serial: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(f"uhid-{serial}"))


def _channel(kernel: FakeKernel) -> int:
    (init,) = request_reports(BROADCAST_CID, Command.INIT, b"12345678")
    kernel.write_report(init)
    answer = kernel.response(BROADCAST_CID)
    return int.from_bytes(answer[9:13], "big")


def test_requests_answered_on_the_reading_thread_and_cancel_still_seen(
    fake_uhid: FakeKernel,
) -> None:
    """Requests are answered by the thread that reads the events (no worker hand-off, one
    I/O thread); a handler that waits for the user hands the reading to a helper, which
    sees the host's CTAPHID_CANCEL; helpers do not pile up; stop() ends them all."""
    handler = WaitForCancelHandler()
    transport = uhid.UhidTransport(handler, serial="inline-1", path="/fake/uhid")
    transport.start()
    try:
        kind, _ = fake_uhid.event()
        assert kind == uhid.UhidEventType.CREATE2
        channel = _channel(fake_uhid)
        for _ in range(10):
            (ping,) = request_reports(channel, Command.PING, b"ping")
            fake_uhid.write_report(ping)
            assert fake_uhid.response(channel) == bytes([TYPE_INIT | Command.PING]) + b"ping"
        assert _io_threads("inline-1") == 1
        for _ in range(2):
            (cbor,) = request_reports(channel, Command.CBOR, b"\x02")
            fake_uhid.write_report(cbor)
            assert handler.started.wait(WAIT)
            handler.started.clear()
            (cancel,) = request_reports(channel, Command.CANCEL, b"")
            fake_uhid.write_report(cancel)
            assert fake_uhid.response(channel) == bytes(
                [TYPE_INIT | Command.CBOR, CTAP2_ERR_KEEPALIVE_CANCEL]
            )
            assert handler.saw_cancel.is_set()
            handler.saw_cancel.clear()
        (ping,) = request_reports(channel, Command.PING, b"after")
        fake_uhid.write_report(ping)
        assert fake_uhid.response(channel) == bytes([TYPE_INIT | Command.PING]) + b"after"
        # The thread start() made parks until stop() once it has handed over; the helpers
        # that answered a waited request end: one reader, whatever the number of waits.
        idle = threading.Event()
        for _ in range(int(WAIT / 0.01)):
            if _io_threads("inline-1") == 2:
                break
            idle.wait(0.01)
        assert _io_threads("inline-1") == 2
    finally:
        transport.stop()
    assert _io_threads("inline-1") == 0


class ThreadRecordingHandler(EchoHandler):
    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def handle_cbor(self, request: bytes, transaction: object) -> bytes:  # type: ignore[override]
        self.threads.append(threading.current_thread().name)
        return b"\x00" + request


def test_a_request_that_does_not_wait_is_answered_by_the_reading_thread(
    fake_uhid: FakeKernel,
) -> None:
    handler = ThreadRecordingHandler()
    transport = uhid.UhidTransport(handler, serial="inline-2", path="/fake/uhid")
    transport.start()
    try:
        fake_uhid.event()  # CREATE2
        channel = _channel(fake_uhid)
        payload = bytes(range(200))
        for report in request_reports(channel, Command.CBOR, b"\x04" + payload):
            fake_uhid.write_report(report)
        assert fake_uhid.response(channel) == bytes([TYPE_INIT | Command.CBOR, 0, 4]) + payload
        assert handler.threads == ["uhid-inline-2"]  # not "ctaphid-worker"
    finally:
        transport.stop()


def test_stop_while_a_request_waits_for_the_user_cancels_it_first(fake_uhid: FakeKernel) -> None:
    """vfido run stopping (SIGTERM) while a request waits for a touch: the request is
    answered on the thread stop() joins, and it was cancelled only after that join gave up
    (5 s later), so UHID_DESTROY waited as long and the wake pipe stayed open (a review).
    Now the request is cancelled first and the thread has ended when stop() returns."""
    handler = WaitForCancelHandler()
    transport = uhid.UhidTransport(handler, serial="inline-3", path="/fake/uhid")
    transport.start()
    fake_uhid.event()  # CREATE2
    channel = _channel(fake_uhid)
    (cbor,) = request_reports(channel, Command.CBOR, b"\x02")
    fake_uhid.write_report(cbor)
    assert handler.started.wait(WAIT)
    thread = transport._thread
    assert thread is not None
    transport.stop()
    assert handler.saw_cancel.is_set()
    assert not thread.is_alive()
    assert _io_threads("inline-3") == 0
    assert transport._wake_fds == ()


def test_a_failed_read_of_dev_uhid_is_reported_as_the_transports_failure(
    fake_uhid: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading /dev/uhid failing ended the reading thread with a log line and nothing else:
    the hidraw node stayed, nobody answered it, and `vfido run` went on as if serving (a
    review). The transport now says why (``failure``), which `vfido run` exits with."""
    transport = uhid.UhidTransport(EchoHandler(), serial="inline-4", path="/fake/uhid")
    transport.start()
    fake_uhid.event()  # CREATE2
    assert transport.failure is None
    fd = transport._fd
    real_read = os.read

    def failing_read(descriptor: int, size: int) -> bytes:
        if descriptor == fd:
            raise OSError(5, "Input/output error")
        return real_read(descriptor, size)

    monkeypatch.setattr(uhid.os, "read", failing_read)
    (init,) = request_reports(BROADCAST_CID, Command.INIT, b"12345678")
    fake_uhid.write_report(init)
    thread = transport._thread
    assert thread is not None
    thread.join(WAIT)
    assert not thread.is_alive()
    assert transport.failure == "reading /fake/uhid failed: Input/output error"
    transport.stop()
    assert transport.failure == "reading /fake/uhid failed: Input/output error"


def test_a_stopped_transport_reports_no_failure(fake_uhid: FakeKernel) -> None:
    transport = uhid.UhidTransport(EchoHandler(), serial="inline-5", path="/fake/uhid")
    transport.start()
    fake_uhid.event()  # CREATE2
    assert _channel(fake_uhid)
    transport.stop()
    assert transport.failure is None


def test_no_thread_for_a_helper_reader_leaves_the_reading_where_it_was(
    fake_uhid: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler about to wait hands the reading to a new thread; when none can be started
    (the process is out of threads), the reading thread gave it up all the same and, having
    answered, ended: nobody read the device again. Now it keeps reading once it answered."""
    handler = WaitForCancelHandler(limit=0.2)  # answers by itself: no CANCEL can be read
    transport = uhid.UhidTransport(handler, serial="inline-6", path="/fake/uhid")
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if thread.name == "uhid-inline-6-reader":
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    transport.start()
    try:
        fake_uhid.event()  # CREATE2
        channel = _channel(fake_uhid)
        (cbor,) = request_reports(channel, Command.CBOR, b"\x02")
        fake_uhid.write_report(cbor)
        assert handler.started.wait(WAIT)
        fake_uhid.response(channel)  # answered after its wait
        assert _channel(fake_uhid)  # and the device is still read
        assert _io_threads("inline-6") == 1
    finally:
        transport.stop()


def test_reports_that_cannot_be_written_are_warned_about_once_per_streak(
    fake_uhid: FakeKernel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A device the kernel failed to add refuses every report: that was one warning per
    report, so a host retrying filled the log. Now one when the writes start failing and
    one when they succeed again (the rest at DEBUG)."""
    import logging

    transport = uhid.UhidTransport(EchoHandler(), serial="inline-7", path="/fake/uhid")
    transport.start()
    try:
        fake_uhid.event()  # CREATE2
        channel = _channel(fake_uhid)
        real_write = os.write
        failing = [True]

        def write(fd: int, data: bytes) -> int:
            kind = struct.unpack_from("<I", data)[0] if len(data) >= 4 else None
            if failing[0] and fd == transport._fd and kind == uhid.UhidEventType.INPUT2:
                raise OSError(22, "Invalid argument")
            return real_write(fd, data)

        monkeypatch.setattr(uhid.os, "write", write)
        caplog.set_level(logging.DEBUG, logger=uhid.__name__)
        for _ in range(5):
            (ping,) = request_reports(channel, Command.PING, b"x")
            fake_uhid.write_report(ping)
        (ping,) = request_reports(channel, Command.PING, b"last")
        for _ in range(int(WAIT / 0.02)):  # until the five answers were dropped
            if sum("dropping" in r.getMessage() for r in caplog.records) >= 5:
                break
            threading.Event().wait(0.02)
        failing[0] = False
        fake_uhid.write_report(ping)
        assert fake_uhid.response(channel)[1:] == b"last"
    finally:
        transport.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "uhid: dropping reports to the host: [Errno 22] Invalid argument",
        "uhid: reports reach the host again",
    ]


def test_feature_report_requests_are_answered_with_an_error(fake_uhid: FakeKernel) -> None:
    """A FIDO key has no feature reports: UHID_GET_REPORT and UHID_SET_REPORT are answered at
    once with an error (EIO) under the request's id, or the host's hidraw ioctl waits for
    the kernel's timeout (a session 20 mutation sampling: nothing tested either reply)."""
    transport = uhid.UhidTransport(EchoHandler(), serial="feature-1", path="/fake/uhid")
    transport.start()
    try:
        kind, _ = fake_uhid.event()
        assert kind == uhid.UhidEventType.CREATE2
        for request, reply, request_id in (
            (uhid.UhidEventType.GET_REPORT, uhid.UhidEventType.GET_REPORT_REPLY, 0x1234),
            (uhid.UhidEventType.SET_REPORT, uhid.UhidEventType.SET_REPORT_REPLY, 0xABCD),
        ):
            fake_uhid.sock.send(uhid._event(request, struct.pack("<IBB", request_id, 0, 0)))
            kind, body = fake_uhid.event()
            answered_id, error = struct.unpack_from("<IH", body)
            assert (kind, answered_id) == (reply, request_id)
            assert error != 0
        channel = _channel(fake_uhid)  # and the key goes on answering
        (ping,) = request_reports(channel, Command.PING, b"still here")
        fake_uhid.write_report(ping)
        assert fake_uhid.response(channel) == bytes([TYPE_INIT | Command.PING]) + b"still here"
    finally:
        transport.stop()
