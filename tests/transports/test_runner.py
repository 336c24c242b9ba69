"""HidRunner + in-process device, driven by python-fido2's own CTAPHID client code."""

from __future__ import annotations

import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from fido2.ctap import STATUS, CtapError
from fido2.hid import CTAPHID, CtapHidDevice
from fido2.hid.base import CtapHidConnection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ctaphid_helpers import (
    CTAP2_ERR_KEEPALIVE_CANCEL,
    CTAP2_OK,
    EchoHandler,
    FailingHandler,
    Message,
    WaitForCancelHandler,
    decode_messages,
    request_reports,
)
from vfido.transports.ctaphid import BROADCAST_CID, REPORT_SIZE, TYPE_INIT, Command, HidError
from vfido.transports.handler import KeepaliveStatus, Transaction
from vfido.transports.inprocess import InProcessConnection, InProcessKey, open_device
from vfido.transports.runner import ACTIVE_LINGER, KEEPALIVE_INTERVAL, HidRunner

WAIT = 10.0  # generous bound for "eventually"; never asserted as a timing


@pytest.fixture
def echo_device() -> Iterator[CtapHidDevice]:
    device = open_device(EchoHandler())
    yield device
    device.close()


@pytest.mark.parametrize("size", [0, 1, 57, 58, 59, 116, 117, 7609])
def test_ping_through_python_fido2(echo_device: CtapHidDevice, size: int) -> None:
    payload = bytes((i * 13 + 5) & 0xFF for i in range(size))
    assert echo_device.ping(payload) == payload


def test_init_fields_and_descriptor(echo_device: CtapHidDevice) -> None:
    assert echo_device.version == 2
    assert echo_device.device_version == (0, 1, 0)
    assert echo_device.capabilities == 0x05  # WINK | CBOR, NMSG clear (U2F supported)
    assert echo_device.product_name == "vfido"
    assert echo_device.descriptor.vid == 0x1209
    assert echo_device.descriptor.report_size_in == echo_device.descriptor.report_size_out == 64


def test_cbor_msg_and_wink() -> None:
    handler = EchoHandler()
    device = open_device(handler)
    try:
        big = bytes(range(256)) * 20
        assert device.call(CTAPHID.CBOR, b"\x04" + big) == b"\x00\x04" + big
        assert device.call(CTAPHID.MSG, b"\x00\x03\x00\x00") == b"\x00\x03\x00\x00\x90\x00"
        device.wink()
        assert handler.winks == 1
    finally:
        device.close()


def test_handler_exceptions_are_answered_and_survived() -> None:
    device = open_device(FailingHandler())
    try:
        assert device.call(CTAPHID.CBOR, b"\x04") == b"\x7f"
        assert device.call(CTAPHID.MSG, b"\x00\x03\x00\x00") == b"\x6f\x00"
        assert device.ping(b"still alive") == b"still alive"
    finally:
        device.close()


def test_cancel_during_user_presence_wait() -> None:
    handler = WaitForCancelHandler()
    device = open_device(handler)
    cancel = threading.Event()
    statuses: list[STATUS] = []

    def on_keepalive(status: STATUS) -> None:
        statuses.append(status)
        if status == STATUS.UPNEEDED:
            cancel.set()  # python-fido2 then sends CTAPHID_CANCEL

    try:
        response = device.call(CTAPHID.CBOR, b"\x02", event=cancel, on_keepalive=on_keepalive)
        assert response == bytes([CTAP2_ERR_KEEPALIVE_CANCEL])
        assert STATUS.UPNEEDED in statuses
        assert handler.saw_cancel.is_set()
        assert device.ping(b"after cancel") == b"after cancel"
    finally:
        device.close()


class CountingConnection(CtapHidConnection):
    """Wraps a connection and counts CTAPHID_KEEPALIVE reports on the way in."""

    def __init__(self, inner: InProcessConnection, after: int, reached: threading.Event) -> None:
        self.inner = inner
        self.keepalives: list[int] = []
        self.after = after
        self.reached = reached

    def write_packet(self, data: bytes) -> None:
        self.inner.write_packet(data)

    def read_packet(self) -> bytes:
        report = self.inner.read_packet()
        if report[4] == TYPE_INIT | Command.KEEPALIVE:
            self.keepalives.append(report[7])
            if len(self.keepalives) >= self.after:
                self.reached.set()
        return report

    def close(self) -> None:
        self.inner.close()


class WaitForEventHandler(EchoHandler):
    """A slow request: keeps the default PROCESSING keepalive until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def handle_cbor(self, request: bytes, transaction: Transaction) -> bytes:
        self.release.wait(WAIT)
        return b"\x00" + request


def test_keepalives_keep_coming_while_processing() -> None:
    handler = WaitForEventHandler()
    key = InProcessKey(handler)
    try:
        # The handler finishes only once the client has seen three keepalives.
        connection = CountingConnection(key.connect(), 3, handler.release)
        device = CtapHidDevice(key.descriptor, connection)
        assert device.call(CTAPHID.CBOR, b"\x04") == b"\x00\x04"
        assert handler.release.is_set()
        assert len(connection.keepalives) >= 3
        assert set(connection.keepalives) == {STATUS.PROCESSING}
        assert device.ping(b"x") == b"x"  # no stray keepalive after the response
    finally:
        key.close()


def test_the_keepalive_interval_is_within_the_specs_100_ms() -> None:
    """CTAP 2.2 section 11.2.9.1.7, CTAPHID_KEEPALIVE: "It SHOULD be sent at least every
    100ms". The ticker beats every KEEPALIVE_INTERVAL while a request is outstanding
    (test_keepalives_keep_coming_while_processing counts them; the interval itself is not
    timed in a test, so its value is held here: a session 20 mutation to 0.3 s went
    unnoticed)."""
    assert 0 < KEEPALIVE_INTERVAL <= 0.1


def test_second_channel_gets_channel_busy() -> None:
    handler = WaitForCancelHandler()
    key = InProcessKey(handler)
    first, second = key.open(), key.open()
    result: queue.Queue[bytes] = queue.Queue()
    try:
        worker = threading.Thread(target=lambda: result.put(first.call(CTAPHID.CBOR, b"\x01")))
        worker.start()
        assert handler.started.wait(WAIT)
        give_up = threading.Event()
        give_up.set()  # python-fido2 retries BUSY only while its event is clear
        with pytest.raises(CtapError) as excinfo:
            second.call(CTAPHID.PING, b"me too", event=give_up)
        assert excinfo.value.code == CtapError.ERR.CHANNEL_BUSY
        handler.release.set()
        worker.join(WAIT)
        assert result.get_nowait() == b"\x00\x01"
        assert second.ping(b"me too") == b"me too"
    finally:
        handler.release.set()
        key.close()


def test_power_cycle_cancels_and_forgets_channels() -> None:
    handler = WaitForCancelHandler()
    key = InProcessKey(handler)
    device = key.open()
    raw = key.connect()
    try:
        # Start a long request on a raw channel, then unplug and re-plug.
        channel = _raw_init(raw)
        for report in request_reports(channel, Command.CBOR, b"\x02"):
            raw.write_packet(report)
        assert handler.started.wait(WAIT)
        key.power_cycle()
        assert handler.power_cycles.wait(WAIT)
        assert handler.saw_cancel.wait(WAIT)
        with pytest.raises(CtapError) as excinfo:
            device.ping(b"old channel")
        assert excinfo.value.code == CtapError.ERR.INVALID_CHANNEL
        fresh = key.open()
        assert fresh.ping(b"new channel") == b"new channel"
    finally:
        key.close()


def _raw_init(connection: InProcessConnection, channel: int = BROADCAST_CID) -> int:
    nonce = os.urandom(8)
    connection.write_packet(request_reports(channel, Command.INIT, nonce)[0])
    message = _raw_answer(connection)
    assert message.command == Command.INIT
    assert message.payload[:8] == nonce
    allocated: int = struct.unpack_from(">I", message.payload, 8)[0]
    return allocated


def _raw_answer(connection: InProcessConnection) -> Message:
    """The next one-report message from the device, keepalives skipped."""
    report = connection.read_packet()
    while report[4] == TYPE_INIT | Command.KEEPALIVE:
        report = connection.read_packet()
    (message,) = decode_messages([report])
    return message


def test_reinit_drops_the_outstanding_response() -> None:
    handler = WaitForCancelHandler()
    key = InProcessKey(handler)
    raw = key.connect()
    try:
        channel = _raw_init(raw)
        for report in request_reports(channel, Command.CBOR, b"\x02"):
            raw.write_packet(report)
        assert handler.started.wait(WAIT)
        assert _raw_init(raw, channel) == channel  # re-synchronise the same channel
        assert handler.saw_cancel.wait(WAIT)
        # Ping until the device is free; the cancelled CBOR answer must never show up.
        while True:
            for report in request_reports(channel, Command.PING, b"p"):
                raw.write_packet(report)
            message = _raw_answer(raw)
            assert message.command != Command.CBOR
            if message.command == Command.ERROR:
                assert message.payload == bytes([HidError.CHANNEL_BUSY])
                threading.Event().wait(0.05)
                continue
            assert (message.command, message.payload) == (Command.PING, b"p")
            break
    finally:
        key.close()


def test_after_a_reinit_the_next_request_is_taken_while_the_old_one_unwinds() -> None:
    """Section 11.2.9.1.3: a re-INIT discards the channel's transaction "as quickly as
    possible. It will then be ready for a new transaction." The next request was
    CHANNEL_BUSY until the discarded handler had returned (6-51 ms; python-fido2 fails on
    it: outside review). It is now taken at once and answered once the old one returns."""

    class SlowToUnwind(WaitForCancelHandler):
        def handle_cbor(self, request: bytes, transaction: Transaction) -> bytes:
            if request != b"\x02":
                return bytes([CTAP2_OK]) + request
            answer = super().handle_cbor(request, transaction)
            time.sleep(0.3)  # a handler that takes its time to return after the cancel
            return answer

    handler = SlowToUnwind()
    key = InProcessKey(handler)
    raw = key.connect()
    try:
        channel = _raw_init(raw)
        for report in request_reports(channel, Command.CBOR, b"\x02"):
            raw.write_packet(report)
        assert handler.started.wait(WAIT)
        assert _raw_init(raw, channel) == channel
        for report in request_reports(channel, Command.CBOR, b"\x04"):
            raw.write_packet(report)
        message = _raw_answer(raw)
        assert (message.command, message.payload) == (Command.CBOR, bytes([CTAP2_OK, 4]))
        assert handler.saw_cancel.is_set()
    finally:
        key.close()


def test_message_timeout_is_sent_by_the_runner() -> None:
    key = InProcessKey(EchoHandler())
    raw = key.connect()
    try:
        channel = _raw_init(raw)
        raw.write_packet(request_reports(channel, Command.PING, b"x" * 100)[0])  # never finished
        (message,) = decode_messages([raw.read_packet()])
        assert (message.channel, message.command) == (channel, Command.ERROR)
        assert message.payload == bytes([HidError.MSG_TIMEOUT])
    finally:
        key.close()


def test_verbose_log_names_commands_but_not_payloads(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("vfido-test-ctaphid")
    key = InProcessKey(EchoHandler(), logger=logger)
    device = key.open()
    secret = bytes.fromhex("5ec7e75ec7e75ec7e7")
    try:
        with caplog.at_level(logging.DEBUG, logger=logger.name):
            assert device.ping(secret) == secret
            assert device.call(CTAPHID.CBOR, secret) == b"\x00" + secret
    finally:
        key.close()
    text = caplog.text
    assert "PING" in text and "CBOR" in text and f"0x{device._channel_id:08x}" in text
    assert secret.hex() not in text.lower()
    assert repr(secret) not in text


def test_close_is_idempotent_and_feed_after_close_is_ignored() -> None:
    sent: list[bytes] = []
    runner = HidRunner(EchoHandler(), sent.append)
    runner.close()
    runner.close()
    runner.feed(request_reports(BROADCAST_CID, Command.INIT, b"\0" * 8)[0])
    assert sent == []


def test_failing_send_report_does_not_kill_the_runner() -> None:
    calls: list[bytes] = []
    ready = threading.Event()

    def send(report: bytes) -> None:
        calls.append(report)
        if len(calls) == 1:
            raise OSError("host went away")
        ready.set()

    runner = HidRunner(EchoHandler(), send)
    try:
        init = request_reports(BROADCAST_CID, Command.INIT, b"\0" * 8)[0]
        runner.feed(init)
        runner.feed(init)
        assert ready.wait(WAIT)
        assert decode_messages(calls[1:2])[0].command == Command.INIT
    finally:
        runner.close()


# -- property test: garbage fed to a live runner -------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.reports: queue.Queue[bytes] = queue.Queue()

    def __call__(self, report: bytes) -> None:
        self.reports.put(report)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=80),
            st.builds(
                lambda cid, kind, length, body: struct.pack(">IBH", cid, kind, length) + body,
                st.sampled_from([0, BROADCAST_CID, 0x01020304]),
                st.integers(0, 0xFF),
                st.integers(0, 0xFFFF),
                st.binary(max_size=57),
            ),
        ),
        max_size=30,
    )
)
def test_runner_survives_garbage(reports: list[bytes]) -> None:
    recorder = Recorder()
    runner = HidRunner(WaitForCancelHandler(limit=0.2), recorder)
    try:
        for report in reports:
            runner.feed(report)
        # Afterwards a normal client still gets a channel and an echo.
        nonce = b"\x42" * 8
        runner.feed(request_reports(BROADCAST_CID, Command.INIT, nonce)[0])
        channel = None
        while channel is None:
            report = recorder.reports.get(timeout=WAIT)
            assert len(report) == REPORT_SIZE
            if report[:4] == b"\xff" * 4 and report[4] == TYPE_INIT | Command.INIT:
                (message,) = decode_messages([report])
                if message.payload[:8] == nonce:
                    channel = struct.unpack_from(">I", message.payload, 8)[0]
        while True:
            for request in request_reports(channel, Command.PING, b"ok"):
                runner.feed(request)
            reply = _next_for(recorder, channel)
            if reply.command == Command.ERROR:
                assert reply.payload == bytes([HidError.CHANNEL_BUSY])
                threading.Event().wait(0.05)  # busy with a garbage request: try again
                continue
            assert (reply.command, reply.payload) == (Command.PING, b"ok")
            break
    finally:
        runner.close()


def _next_for(recorder: Recorder, channel: int) -> Message:
    while True:
        report = recorder.reports.get(timeout=WAIT)
        assert len(report) == REPORT_SIZE
        if int.from_bytes(report[:4], "big") == channel and report[4] & TYPE_INIT:
            if report[4] == TYPE_INIT | Command.KEEPALIVE:
                continue
            (message,) = decode_messages([report])
            return message


class _StatusStepsHandler(EchoHandler):
    """A CBOR request that asks for the user, then works on, each step released by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.touched = threading.Event()
        self.finish = threading.Event()

    def handle_cbor(self, request: bytes, transaction: Transaction) -> bytes:
        transaction.set_keepalive(KeepaliveStatus.UPNEEDED)
        self.touched.wait(WAIT)
        transaction.set_keepalive(KeepaliveStatus.PROCESSING)
        self.finish.wait(WAIT)
        return b"\x00" + request


def test_keepalive_goes_out_whenever_the_status_changes() -> None:
    """CTAP 2.1/2.2 section 11.2.9.1.7, CTAPHID_KEEPALIVE: "It SHOULD be sent at least every
    100ms and whenever the status changes." With the periodic keepalive far away (30 s), the
    change to UPNEEDED and back to PROCESSING each reach the host at once (#14, defect 2)."""
    reports: queue.Queue[bytes] = queue.Queue()
    handler = _StatusStepsHandler()
    runner = HidRunner(handler, reports.put, keepalive_interval=30.0)

    def next_message() -> Message:
        (message,) = decode_messages([reports.get(timeout=WAIT)])
        return message

    try:
        for report in request_reports(BROADCAST_CID, Command.INIT, b"12345678"):
            runner.feed(report)
        channel = int.from_bytes(next_message().payload[8:12], "big")
        for report in request_reports(channel, Command.CBOR, b"\x04"):
            runner.feed(report)
        assert next_message() == Message(channel, Command.KEEPALIVE, bytes([STATUS.UPNEEDED]))
        handler.touched.set()
        assert next_message() == Message(channel, Command.KEEPALIVE, bytes([STATUS.PROCESSING]))
        handler.finish.set()
        assert next_message() == Message(channel, Command.CBOR, b"\x00\x04")
        assert reports.empty()
    finally:
        handler.touched.set()
        handler.finish.set()
        runner.close()


def test_before_wait_is_called_once_before_an_inline_handler_waits() -> None:
    """``before_wait`` (how the UDP transport knows to hand its reading over) runs on the
    handler's thread before the first wait (UPNEEDED or ``wait_cancelled``), once per
    request; a handler that never waits never calls it; queued (non-inline) requests never."""
    calls: list[str] = []

    class Handler(EchoHandler):
        def handle_cbor(self, request: bytes, transaction: Transaction) -> bytes:
            if request == b"\x02":
                calls.append("handler")
                transaction.set_keepalive(KeepaliveStatus.UPNEEDED)
                transaction.wait_cancelled(0.0)
                transaction.set_keepalive(KeepaliveStatus.PROCESSING)
                transaction.set_keepalive(KeepaliveStatus.UPNEEDED)
                transaction.wait_cancelled(0.0)
            return b"\x00" + request

    sent: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    runner = HidRunner(
        Handler(), sent.put, inline_requests=True, before_wait=lambda: calls.append("hook")
    )
    try:
        (init,) = request_reports(BROADCAST_CID, Command.INIT, b"n" * 8)
        assert runner.feed(init) is None
        answer = sent.get(timeout=WAIT)
        channel = int.from_bytes(answer[15:19], "big")
        for payload, expected in ((b"\x04", ["handler-free"]), (b"\x02", ["handler", "hook"])):
            calls.clear()
            (report,) = request_reports(channel, Command.CBOR, payload)
            job = runner.feed(report)
            assert job is not None  # inline: the caller runs the request
            job()
            assert sorted(calls or ["handler-free"]) == expected
    finally:
        runner.close()
    # Without inline_requests the worker answers: the transport's reader is not involved.
    calls.clear()
    sent = queue.SimpleQueue()
    runner = HidRunner(Handler(), sent.put, before_wait=lambda: calls.append("hook"))
    try:
        assert runner.feed(init) is None
        channel = int.from_bytes(sent.get(timeout=WAIT)[15:19], "big")
        (report,) = request_reports(channel, Command.CBOR, b"\x02")
        assert runner.feed(report) is None
        response = sent.get(timeout=WAIT)
        while response[4] == TYPE_INIT | Command.KEEPALIVE:
            response = sent.get(timeout=WAIT)
        assert response[7:9] == b"\x00\x02"
        assert calls == ["handler"]
    finally:
        runner.close()


def test_a_busy_ticker_is_not_woken_per_request() -> None:
    """While reports keep coming the ticker beats on its own (``ACTIVE_LINGER``), so a
    request that starts needs no thread woken: only the first request after an idle spell
    wakes it. Each request here starts after the ticker has ticked since the last one
    (without the beat that tick would leave it asleep until the next request woke it)."""
    now = [0.0]
    sent: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    runner = HidRunner(EchoHandler(), sent.put, inline_requests=True, clock=lambda: now[0])
    wakes, ticks = [0], [0]
    event = runner._wake
    plain_set, plain_wait = event.set, event.wait

    def counting_set() -> None:
        wakes[0] += 1
        plain_set()

    def counting_wait(timeout: float | None = None) -> bool:
        ticks[0] += 1
        return plain_wait(timeout)

    event.set = counting_set  # type: ignore[method-assign]
    event.wait = counting_wait  # type: ignore[method-assign]

    def eventually(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.005)

    def request(channel: int) -> None:
        (report,) = request_reports(channel, Command.CBOR, b"\x04")
        job = runner.feed(report)
        assert job is not None
        job()
        assert sent.get(timeout=WAIT)[7:9] == b"\x00\x04"
        seen = ticks[0]
        eventually(lambda: ticks[0] > seen)  # the ticker has ticked since

    try:
        (init,) = request_reports(BROADCAST_CID, Command.INIT, b"n" * 8)
        assert runner.feed(init) is None
        channel = int.from_bytes(sent.get(timeout=WAIT)[15:19], "big")
        request(channel)
        assert wakes[0] == 1  # the first request after idle
        for _ in range(5):
            now[0] += 0.05  # a ceremony's requests: 50 ms apart
            request(channel)
        assert wakes[0] == 1
        now[0] += ACTIVE_LINGER + 1.0  # idle: the ticker stops beating
        eventually(lambda: runner._ticker_due is None)
        request(channel)
        assert wakes[0] == 2
    finally:
        runner.close()


def test_a_cancel_calls_the_waiters_callbacks_once() -> None:
    """``HidTransaction.on_cancel``: the presence broker waits for the user's answer and
    wakes at the CANCEL itself (it looked every 50 ms, and an answer in between won)."""
    from vfido.transports.runner import HidTransaction

    transaction = HidTransaction(1, 1)
    called: list[str] = []
    transaction.on_cancel(lambda: called.append("first"))
    transaction.on_cancel(lambda: called.append("second"))
    assert called == []
    transaction.cancel()
    transaction.cancel()  # a second CANCEL calls nobody again
    assert called == ["first", "second"]
    transaction.on_cancel(lambda: called.append("late"))  # already cancelled: at once
    assert called == ["first", "second", "late"]


def test_another_clients_broadcast_error_does_not_reach_a_client() -> None:
    """An ERROR on the broadcast channel answers one client's broadcast request. It was
    queued for every connection that once sent an INIT there, and python-fido2's next call
    on it failed with "Wrong channel" (a CTAPHID fuzzer): after another application's
    malformed INIT (here BCNT 7), or after its INIT was refused CHANNEL_BUSY while this
    client held a LOCK. Over UDP, one datagram from anyone did it to the peer."""
    from fido2.ctap2 import Ctap2

    from tests.ctap2_helpers import make_key

    key = InProcessKey(make_key().authenticator, read_timeout=5)
    try:
        victim = key.open()
        assert Ctap2(victim).get_info().versions
        other = key.connect()
        other.write_packet(
            struct.pack(">IBH", BROADCAST_CID, TYPE_INIT | Command.INIT, 7) + bytes(57)
        )
        refusal = other.read_packet()
        assert refusal[4] == TYPE_INIT | Command.ERROR and refusal[7] == HidError.INVALID_LEN
        assert Ctap2(victim).get_info().versions
        victim.lock(1)
        second = key.open()  # its INIT is refused CHANNEL_BUSY (retried) until the lock ends
        assert second.ping(b"b") == b"b"
        assert victim.ping(b"a") == b"a"
    finally:
        key.close()
