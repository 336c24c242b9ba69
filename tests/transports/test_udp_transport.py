"""The UDP transport: real sockets on localhost, python-fido2 as the client."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from fido2.hid import CTAPHID, CtapHidDevice

from tests.ctaphid_helpers import EchoHandler
from vfido.transports.ctaphid import TYPE_INIT, Command
from vfido.transports.handler import CtapHandler, Transaction
from vfido.transports.udp import (
    POWER_CYCLE_DATAGRAM,
    UdpConnection,
    UdpTransport,
    _shared_reader,
    free_ports,
    open_udp_device,
)

WAIT = 10.0


@pytest.fixture
def served() -> Iterator[tuple[UdpTransport, EchoHandler, int]]:
    handler = EchoHandler()
    peer_port = free_ports(1)[0]
    transport = UdpTransport(handler, port=0, peer_port=peer_port)
    transport.start()
    yield transport, handler, peer_port
    transport.stop()


@contextmanager
def _udp_key(handler: CtapHandler) -> Iterator[CtapHidDevice]:
    """``handler`` served by a started UdpTransport on a free port, and a python-fido2 device
    on it; both closed afterwards."""
    peer_port = free_ports(1)[0]
    transport = UdpTransport(handler, port=0, peer_port=peer_port)
    transport.start()
    try:
        device = open_udp_device(port=transport.port, peer_port=peer_port, timeout=WAIT)
        try:
            yield device
        finally:
            device.close()
    finally:
        transport.stop()


def _reading_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "vfido-udp" and t.is_alive())


def _until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_power_cycle_datagram_constant() -> None:
    assert len(POWER_CYCLE_DATAGRAM) == 64
    assert POWER_CYCLE_DATAGRAM.hex().startswith("ac1052ca95e569de")


def test_round_trip_on_port_zero(served: tuple[UdpTransport, EchoHandler, int]) -> None:
    transport, handler, peer_port = served
    assert transport.port != 0
    device = open_udp_device(port=transport.port, peer_port=peer_port, timeout=WAIT)
    try:
        for size in (0, 1, 57, 58, 59, 116, 117, 7609):
            payload = os.urandom(size)
            assert device.ping(payload) == payload
        assert device.call(CTAPHID.CBOR, b"\x04") == b"\x00\x04"
        assert device.call(CTAPHID.MSG, b"\x00\x03\x00\x00") == b"\x00\x03\x00\x00\x90\x00"
        device.wink()
        assert handler.winks == 1
    finally:
        device.close()


def test_garbage_datagrams_are_survived(served: tuple[UdpTransport, EchoHandler, int]) -> None:
    transport, _handler, peer_port = served
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for size in (0, 1, 7, 63, 64, 65, 100, 1000, 65507):
            s.sendto(os.urandom(size), ("127.0.0.1", transport.port))
        s.sendto(
            struct.pack(">IBH", 0, TYPE_INIT | Command.PING, 0xFFFF), ("127.0.0.1", transport.port)
        )
    device = open_udp_device(port=transport.port, peer_port=peer_port, timeout=WAIT)
    try:
        assert device.ping(b"still here") == b"still here"
    finally:
        device.close()


def test_power_cycle_datagram(served: tuple[UdpTransport, EchoHandler, int]) -> None:
    transport, handler, peer_port = served
    connection = UdpConnection(transport.port, peer_port, timeout=WAIT)
    try:
        device = CtapHidDevice(connection.descriptor, connection)
        assert device.ping(b"before") == b"before"
        connection.power_cycle()
        assert handler.power_cycles.wait(WAIT)
        # The UDP convention: the device reboots, the host's channel stays valid.
        assert device.ping(b"after") == b"after"
        assert handler.power_cycle_count == 1
    finally:
        connection.close()


def test_serve_forever_blocks_until_stop() -> None:
    peer_port = free_ports(1)[0]
    transport = UdpTransport(EchoHandler(), port=0, peer_port=peer_port)
    thread = threading.Thread(target=transport.serve_forever)
    thread.start()
    device = open_udp_device(port=transport.port, peer_port=peer_port, timeout=WAIT)
    try:
        assert device.ping(b"x") == b"x"
        assert thread.is_alive()
    finally:
        device.close()
        transport.stop()
        transport.stop()  # idempotent
        thread.join(WAIT)
    assert not thread.is_alive()


def test_port_in_use_raises() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        with pytest.raises(OSError):
            UdpTransport(EchoHandler(), port=s.getsockname()[1])


def test_requests_answered_inline_still_see_cancel() -> None:
    """The thread that read a request answers it (no hand-off to a worker); a spare I/O
    thread keeps reading meanwhile, so python-fido2's CTAPHID_CANCEL ends the wait, request
    after request, and the key answers afterwards."""
    from fido2.ctap import STATUS

    from tests.ctaphid_helpers import CTAP2_ERR_KEEPALIVE_CANCEL, WaitForCancelHandler

    handler = WaitForCancelHandler()
    with _udp_key(handler) as device:
        for _ in range(3):
            cancel = threading.Event()

            def on_keepalive(status: int, cancel: threading.Event = cancel) -> None:
                if status == STATUS.UPNEEDED:
                    cancel.set()  # python-fido2 then sends CTAPHID_CANCEL

            response = device.call(CTAPHID.CBOR, b"\x02", event=cancel, on_keepalive=on_keepalive)
            assert response == bytes([CTAP2_ERR_KEEPALIVE_CANCEL])
            assert handler.saw_cancel.is_set()
            handler.saw_cancel.clear()
        assert device.ping(b"after") == b"after"
        assert device.call(CTAPHID.MSG, b"\x00\x03\x00\x00") == b"\x00\x03\x00\x00\x90\x00"


def test_requests_that_do_not_wait_stay_on_one_io_thread() -> None:
    """A request whose handler never waits is answered by the thread that read it, and no
    other I/O thread exists to be woken per report (the old spare reader cost every PING a
    futex wake-up); a request that waits hands the reading over, and the key still answers
    on one thread afterwards."""
    from fido2.ctap import STATUS

    from tests.ctaphid_helpers import CTAP2_ERR_KEEPALIVE_CANCEL, WaitForCancelHandler

    before = _reading_threads()
    handler = WaitForCancelHandler()
    with _udp_key(handler) as device:
        for _ in range(20):
            assert device.ping(b"p" * 100) == b"p" * 100
            assert device.call(CTAPHID.MSG, b"\x00\x03\x00\x00")[-2:] == b"\x90\x00"
        assert _reading_threads() - before == 1
        cancel = threading.Event()

        def on_keepalive(status: int) -> None:
            if status == STATUS.UPNEEDED:
                cancel.set()

        response = device.call(CTAPHID.CBOR, b"\x02", event=cancel, on_keepalive=on_keepalive)
        assert response == bytes([CTAP2_ERR_KEEPALIVE_CANCEL])
        assert device.ping(b"after") == b"after"
        # the thread that handed over ends after answering
        assert _until(lambda: _reading_threads() - before == 1)


def test_the_keys_of_one_process_share_one_reading_thread() -> None:
    """Eight keys in one process are read by one thread, not one thread each contending for
    the GIL (bench/HISTORY.md, session 10: 32 keys in one process cost about 2x the per-key
    latency of 32 processes that way); each still answers its own host, in order. Once every
    key has stopped the thread ends, and the next key starts one again."""
    before = _reading_threads()
    with contextlib.ExitStack() as stack:
        devices = [stack.enter_context(_udp_key(EchoHandler())) for _ in range(8)]
        for _ in range(3):
            for i, device in enumerate(devices):
                payload = bytes([i]) * (60 + 30 * i)  # 1-4 reports each way
                assert device.ping(payload) == payload
        assert _reading_threads() - before == 1
    assert _until(lambda: _reading_threads() == before)
    with _udp_key(EchoHandler()) as device:
        assert device.ping(b"again") == b"again"
        assert _reading_threads() - before == 1


def test_a_key_waiting_for_the_user_does_not_hold_up_the_others() -> None:
    """A request that waits hands the reading over: another key of the process answers
    meanwhile, and the waiting one still sees its CANCEL."""
    from tests.ctaphid_helpers import CTAP2_ERR_KEEPALIVE_CANCEL, WaitForCancelHandler

    waiting = WaitForCancelHandler()
    with _udp_key(waiting) as first, _udp_key(EchoHandler()) as second:
        cancel = threading.Event()
        answer: list[bytes] = []
        call = threading.Thread(
            target=lambda: answer.append(first.call(CTAPHID.CBOR, b"\x02", event=cancel))
        )
        call.start()
        try:
            assert waiting.started.wait(WAIT)
            assert second.ping(b"meanwhile") == b"meanwhile"
        finally:
            cancel.set()  # python-fido2 sends CTAPHID_CANCEL
            call.join(WAIT)
        assert answer == [bytes([CTAP2_ERR_KEEPALIVE_CANCEL])]
        assert first.ping(b"after") == b"after"


def test_stopping_a_key_leaves_the_others_of_the_process_served() -> None:
    """stop() takes one socket out of the shared reading and returns promptly, even while
    its handler waits (the wait is cancelled); the other keys keep answering."""
    from tests.ctaphid_helpers import WaitForCancelHandler

    with _udp_key(EchoHandler()) as other:
        waiting = WaitForCancelHandler()
        peer_port = free_ports(1)[0]
        transport = UdpTransport(waiting, port=0, peer_port=peer_port)
        transport.start()
        device = open_udp_device(port=transport.port, peer_port=peer_port, timeout=WAIT)

        def request() -> None:
            with contextlib.suppress(Exception):  # the key stops: no answer comes
                device.call(CTAPHID.CBOR, b"\x02")

        call = threading.Thread(target=request, daemon=True)
        try:
            call.start()
            assert waiting.started.wait(WAIT)
            started = time.monotonic()
            transport.stop()
            assert time.monotonic() - started < WAIT / 2
            assert waiting.saw_cancel.is_set()  # the handler ended before stop() returned
        finally:
            device.close()
            transport.stop()
        assert other.ping(b"still here") == b"still here"


def test_a_forked_child_leaves_the_parents_keys_alone() -> None:
    """The reading thread's selector (an epoll instance) is shared with a forked child: the
    child's stop() of a key it inherited must not unregister the parent's socket, nor take
    the locks of threads the child does not have, and a key the child makes is read by a
    thread of the child's own."""
    peer_port = free_ports(1)[0]
    transport = UdpTransport(EchoHandler(), port=0, peer_port=peer_port)
    transport.start()
    device = open_udp_device(port=transport.port, peer_port=peer_port, timeout=WAIT)
    try:
        assert device.ping(b"before") == b"before"
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 only if its own key answered
            status = 1
            try:
                transport.stop()  # e.g. the child's clean-up of what it inherited
                with _udp_key(EchoHandler()) as own:
                    status = 0 if own.ping(b"child") == b"child" else 2
            finally:
                os._exit(status)
        deadline = time.monotonic() + WAIT
        done, status = os.waitpid(pid, os.WNOHANG)
        while not done and time.monotonic() < deadline:
            time.sleep(0.01)
            done, status = os.waitpid(pid, os.WNOHANG)
        if not done:  # the child hangs (a lock another thread held at the fork): fail here
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        assert done and os.waitstatus_to_exitcode(status) == 0
        assert device.ping(b"after") == b"after"
    finally:
        device.close()
        transport.stop()


def test_stop_during_start_leaves_nothing_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() on another thread while start() registers the socket (serve_forever on one
    thread, stop on another) waits for start(): the socket ends closed and out of the
    reading, so the reading thread still ends."""
    from vfido.transports import udp

    before = _reading_threads()
    transport = UdpTransport(EchoHandler(), port=0, peer_port=free_ports(1)[0])
    stopper = threading.Thread(target=transport.stop)
    shared_reader = udp._shared_reader

    def stop_meanwhile() -> udp._Reader:  # start() between its check and the registration
        stopper.start()
        stopper.join(0.2)  # stop() must wait for start() to finish
        return shared_reader()

    monkeypatch.setattr(udp, "_shared_reader", stop_meanwhile)
    transport.start()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    transport.start()  # after stop(): nothing
    assert _until(lambda: _reading_threads() == before)


def test_a_port_that_cannot_be_bound_is_named() -> None:
    """`vfido run --udp-port 80` without privilege said only "Permission denied"."""
    import errno

    from vfido.transports.udp import _udp_socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot bind UDP 127.0.0.1:{port}: ") as info:
            _udp_socket("127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE


def test_free_ports_are_different_ports() -> None:
    """A key's port and peer port picked one at a time from closed sockets were once the
    same port ("--udp-port and --udp-peer-port are both 40697", a CI run of session 12)."""
    ports = free_ports(64)
    assert len(set(ports)) == 64


def test_a_request_after_a_reinit_waits_for_the_old_one_off_the_reading_thread() -> None:
    """After a re-INIT discards request A, request B is taken at once (CTAP 2.1 11.2.9.1.3);
    it must not wait for A's handler on the thread that reads every key's reports. A second
    review found another key's PING held up 1.3 s behind A's non-cancellable work."""
    from vfido.transports.ctaphid import BROADCAST_CID, encode_message

    finish, started = threading.Event(), threading.Event()

    class Busy(EchoHandler):
        def __init__(self) -> None:
            super().__init__()
            self.lock = threading.Lock()  # as the authenticator's: one request at a time

        def handle_cbor(self, request: bytes, transaction: Transaction) -> bytes:
            if request == b"\x04":  # answered without the lock (a U2F-only key's refusal)
                return b"\x00" + request
            with self.lock:
                if request == b"\x02":
                    transaction.wait_cancelled(0.01)  # the user is asked: reading handed over
                    started.set()
                    finish.wait(WAIT)  # then work that does not look at CANCEL
                return b"\x00" + request

    def client(port: int, peer: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", peer))
        s.connect(("127.0.0.1", port))
        s.settimeout(WAIT)
        return s

    def init(s: socket.socket, channel: int = BROADCAST_CID) -> int:
        nonce = os.urandom(8)
        for report in encode_message(channel, Command.INIT, nonce):
            s.send(report)
        while True:
            report = s.recv(64)
            if report[4] == TYPE_INIT | Command.INIT and report[7:15] == nonce:
                return int.from_bytes(report[15:19], "big")

    def answer(s: socket.socket) -> bytes:
        while True:
            report = s.recv(64)
            if report[4] != TYPE_INIT | Command.KEEPALIVE:
                return bytes(report)

    busy_port, busy_peer, other_port, other_peer = free_ports(4)
    keys = [
        UdpTransport(Busy(), port=busy_port, peer_port=busy_peer),
        UdpTransport(EchoHandler(), port=other_port, peer_port=other_peer),
    ]
    for key in keys:
        key.start()
    try:
        busy, other = client(busy_port, busy_peer), client(other_port, other_peer)
        channel, other_channel = init(busy), init(other)
        for report in encode_message(channel, Command.CBOR, b"\x02"):  # A
            busy.send(report)
        assert started.wait(WAIT)
        init(busy, channel)  # A is discarded
        for report in encode_message(channel, Command.CBOR, b"\x04"):  # B, taken at once
            busy.send(report)
        first = answer(busy)  # B needs no lock: answered while A works
        assert (first[4], first[7:9]) == (TYPE_INIT | Command.CBOR, b"\x00\x04")
        # C comes while A still works: it waits for A, but not on the reading thread (a
        # third review found the third request did).
        for report in encode_message(channel, Command.CBOR, b"\x05"):
            busy.send(report)
        time.sleep(0.05)
        for report in encode_message(other_channel, Command.PING, b"hi"):
            other.send(report)
        other.settimeout(WAIT / 3)  # A works for up to WAIT: the PING must come first
        ping = answer(other)  # while A still works
        assert (ping[4], ping[7:9]) == (TYPE_INIT | Command.PING, b"hi")
        assert not finish.is_set()
        finish.set()
        reply = answer(busy)  # C, once A has returned; A's answer never comes
        assert (reply[4], reply[7:9]) == (TYPE_INIT | Command.CBOR, b"\x00\x05")
        busy.close()
        other.close()
    finally:
        finish.set()
        for key in keys:
            key.stop()


def test_a_failed_wait_for_the_sockets_is_reported_as_the_transports_failure(
    served: tuple[UdpTransport, EchoHandler, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process's reading thread ending on an error (no key of the process is read until
    another is added) is every started key's ``failure``, which `vfido run` exits with; a key
    added afterwards starts a reader again and clears it."""
    transport, _, _ = served
    assert transport.failure is None
    reader = _shared_reader()
    assert _until(lambda: _reading_threads() == 1)

    def failing_select(timeout: float | None = None) -> list[object]:
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(reader._selector, "select", failing_select)
    reader._wake()  # the thread in select() comes round and calls it again
    assert _until(lambda: _reading_threads() == 0)
    assert transport.failure == "waiting for its UDP sockets failed: [Errno 9] Bad file descriptor"
    monkeypatch.undo()
    with _udp_key(EchoHandler()) as device:  # another key: a reader again, no failure
        assert device.ping(b"x") == b"x"
        assert transport.failure is None
    transport.stop()
    assert transport.failure is None
