"""The Unix-socket transport (issue #15): python-fido2 over it, checked by fido2.server; other
users refused by SO_PEERCRED; each connection a CTAPHID client of its own."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fido2.ctap2 import Ctap2
from fido2.hid import CtapHidDevice

from tests.ctaphid_helpers import EchoHandler, decode_messages, request_reports
from tests.other_user import OTHER_UID, as_other_user, require_root
from tests.rp import RelyingParty, register, sign_in
from vfido.api import VirtualKey
from vfido.transports import unix
from vfido.transports.ctaphid import BROADCAST_CID, DEFAULT_MAX_CHANNELS, Command, HidError
from vfido.transports.unix import (
    UnixConnection,
    UnixTransport,
    UnixTransportError,
    open_unix_device,
)

WAIT = 10.0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[UnixTransport, EchoHandler]]:
    handler = EchoHandler()
    transport = UnixTransport(handler, tmp_path / "key.ctaphid")
    transport.start()
    yield transport, handler
    transport.stop()


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="vfido-test-"))
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


class Raw:
    """A raw client: 64-byte reports in and out, no python-fido2."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(WAIT)
        self.sock.connect(str(path))

    def send(self, channel: int, command: int, payload: bytes = b"") -> None:
        for report in request_reports(channel, command, payload):
            self.sock.send(report)

    def receive(self) -> tuple[int, int, bytes]:
        reports = [self.sock.recv(64)]
        (head,) = struct.unpack_from(">H", reports[0], 5)
        got = len(reports[0]) - 7
        while got < head:
            reports.append(self.sock.recv(64))
            got += 59
        (message,) = decode_messages(reports)
        return message.channel, message.command, message.payload

    def init(self, nonce: bytes = b"\x07" * 8) -> int:
        self.send(BROADCAST_CID, Command.INIT, nonce)
        channel, command, payload = self.receive()
        assert (channel, command, payload[:8]) == (BROADCAST_CID, Command.INIT, nonce)
        new: int = struct.unpack_from(">I", payload, 8)[0]
        return new

    def close(self) -> None:
        self.sock.close()


def test_python_fido2_registers_and_authenticates_over_unix() -> None:
    """Fido2Client over open_unix_device; fido2.server (and py_webauthn) verify both
    ceremonies, attestation up to the keystore's root included."""
    with VirtualKey(transport="unix") as key:
        assert key.unix_socket is not None
        assert stat.S_IMODE(os.stat(key.unix_socket).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(key.unix_socket.parent).st_mode) == 0o700
        device = open_unix_device(key.unix_socket, timeout=WAIT)
        try:
            client = key.client(device=device)
            rp = RelyingParty(root_der=key.attestation_root)
            register(client, rp, rk=True)
            assert sign_in(client, rp) >= 1
            assert sign_in(client, rp, allow=False) >= 2  # the discoverable credential
        finally:
            device.close()
        assert [c.rp_id for c in key.credentials()] == [rp.rp_id]


def test_long_messages_and_several_connections(
    served: tuple[UnixTransport, EchoHandler],
) -> None:
    transport, handler = served
    devices = [open_unix_device(transport.path, timeout=WAIT) for _ in range(3)]
    try:
        for size in (0, 57, 58, 7609):
            for device in devices:
                payload = os.urandom(size)
                assert device.ping(payload) == payload
        devices[1].wink()
        assert handler.winks == 1
    finally:
        for device in devices:
            device.close()


def test_another_uid_is_refused_by_peer_credentials(public_dir: Path) -> None:
    """Even where the file system would let another user connect (socket 0666 in a world-
    readable directory), the key closes that connection unanswered."""
    require_root()
    transport = UnixTransport(EchoHandler(), public_dir / "key.ctaphid")
    transport.start()
    try:
        os.chmod(transport.path, 0o666)
        _check_refused(transport)
    finally:
        transport.stop()


def _check_refused(transport: UnixTransport) -> None:

    def attack() -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.settimeout(WAIT)
            sock.connect(str(transport.path))  # the file system allows it ...
            try:
                sock.send(request_reports(BROADCAST_CID, Command.INIT, b"\x01" * 8)[0])
                return sock.recv(64)  # ... but the key hangs up: b""
            except (BrokenPipeError, ConnectionResetError):
                return b""  # (hung up before the report was even sent)

    outcome = as_other_user(attack)
    assert outcome.ok and outcome.value == b"", outcome
    # python-fido2 as the other user gets no device either.
    outcome = as_other_user(lambda: open_unix_device(transport.path, timeout=WAIT).ping(b"x"))
    assert (outcome.error or "").startswith(
        ("OSError: the key closed the connection", "BrokenPipeError", "ConnectionResetError")
    ), outcome
    # The key's own user still can.
    device = open_unix_device(transport.path, timeout=WAIT)
    try:
        assert device.ping(b"mine") == b"mine"
    finally:
        device.close()


def test_another_uid_cannot_reach_a_served_key() -> None:
    """As `vfido run --transport unix` serves it: a 0600 socket in a 0700 directory."""
    require_root()
    with VirtualKey(transport="unix") as key:
        path = key.unix_socket
        assert path is not None
        outcome = as_other_user(lambda: Ctap2(open_unix_device(path, timeout=WAIT)).get_info())
        assert not outcome.ok and "PermissionError" in (outcome.error or ""), outcome


def test_the_client_refuses_a_key_served_by_another_user(public_dir: Path) -> None:
    """A socket in a place another user controls must not get our reports (a PIN...)."""
    require_root()
    os.chmod(public_dir, 0o777)
    path = public_dir / "key.ctaphid"

    def fake_key() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as server:
            server.bind(str(path))
            os.chmod(path, 0o666)
            server.listen(1)
            server.settimeout(WAIT)
            conn, _ = server.accept()
            conn.close()

    result: list[object] = []
    attacker = threading.Thread(target=lambda: result.append(as_other_user(fake_key)))
    attacker.start()
    try:
        for _ in range(200):
            if path.exists():
                break
            threading.Event().wait(0.02)
        with pytest.raises(PermissionError, match=f"another user \\(uid {OTHER_UID}\\)"):
            UnixConnection(path, timeout=WAIT)
    finally:
        attacker.join(timeout=30)


def test_socket_file_handling(tmp_path: Path) -> None:
    path = tmp_path / "key.ctaphid"
    path.write_text("not a socket")
    with pytest.raises(UnixTransportError, match="not a socket"):
        UnixTransport(EchoHandler(), path)
    assert path.read_text() == "not a socket"
    path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as stale:
        stale.bind(str(path))  # a socket nobody serves any more
    first = UnixTransport(EchoHandler(), path)
    try:
        first.start()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with pytest.raises(UnixTransportError, match="another key is serving"):
            UnixTransport(EchoHandler(), path)
    finally:
        first.stop()
    assert not path.exists()


# --- one connection must not starve another (issue #15, low 7) ----------------------------------


def test_a_connection_allocating_channels_in_a_loop_cannot_evict_anothers(
    served: tuple[UnixTransport, EchoHandler],
) -> None:
    transport, _handler = served
    victim = open_unix_device(transport.path, timeout=WAIT)
    attacker = Raw(transport.path)
    try:
        assert victim.ping(b"before") == b"before"
        for n in range(3 * DEFAULT_MAX_CHANNELS):
            attacker.init(n.to_bytes(8, "big"))
        assert victim.ping(b"after") == b"after"  # its channel is still there
    finally:
        attacker.close()
        victim.close()


def test_a_connection_cannot_use_anothers_channel(
    served: tuple[UnixTransport, EchoHandler],
) -> None:
    transport, _handler = served
    victim, attacker = Raw(transport.path), Raw(transport.path)
    try:
        channel = victim.init()
        attacker.send(channel, Command.PING, b"mine now")
        assert attacker.receive() == (channel, Command.ERROR, bytes([HidError.INVALID_CHANNEL]))
        victim.send(channel, Command.PING, b"still mine")
        assert victim.receive() == (channel, Command.PING, b"still mine")
    finally:
        attacker.close()
        victim.close()


def test_a_connection_that_locks_and_leaves_frees_the_key(
    served: tuple[UnixTransport, EchoHandler],
) -> None:
    transport, _handler = served
    victim, attacker = Raw(transport.path), Raw(transport.path)
    try:
        mine, theirs = victim.init(), attacker.init()
        attacker.send(theirs, Command.LOCK, b"\x0a")
        assert attacker.receive() == (theirs, Command.LOCK, b"")
        victim.send(mine, Command.PING, b"x")
        assert victim.receive() == (mine, Command.ERROR, bytes([HidError.CHANNEL_BUSY]))
        attacker.close()  # gone: its lock goes with it, long before the 10 s
        for _ in range(100):
            victim.send(mine, Command.PING, b"x")
            answer = victim.receive()
            if answer[1] == Command.PING:
                break
            threading.Event().wait(0.05)
        assert answer == (mine, Command.PING, b"x")
    finally:
        victim.close()


def test_ctaphid_device_over_unix_is_a_python_fido2_device(tmp_path: Path) -> None:
    transport = UnixTransport(EchoHandler(), tmp_path / "k")
    transport.start()
    try:
        device = open_unix_device(tmp_path / "k", timeout=WAIT)
        assert isinstance(device, CtapHidDevice)
        assert device.descriptor.path == f"unix:{tmp_path / 'k'}"
        device.close()
    finally:
        transport.stop()


def test_a_failed_wait_for_the_sockets_is_reported_as_the_transports_failure(
    served: tuple[UnixTransport, EchoHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The serving thread ended silently when waiting for its sockets failed ("closed under
    us", though nobody had stopped it): the socket file stayed and nobody answered it. Now
    the transport says why (``failure``, which `vfido run` exits with); a stop says nothing."""
    transport, _ = served
    real_select = unix.select.select

    def failing_select(*args: object) -> object:
        if threading.current_thread().name == "vfido-unix":
            raise OSError(9, "Bad file descriptor")
        return real_select(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(unix.select, "select", failing_select)
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as client:
        client.connect(str(transport.path))  # wakes the thread: its next wait fails
        thread = transport._thread
        assert thread is not None
        thread.join(10.0)
    assert not thread.is_alive()
    assert transport.failure is not None
    assert transport.failure.startswith(f"waiting for {transport.path} failed: ")


def test_a_stopped_unix_transport_reports_no_failure(
    served: tuple[UnixTransport, EchoHandler],
) -> None:
    transport, _ = served
    transport.stop()
    assert transport.failure is None


def test_no_key_at_the_path_is_said_with_the_path(tmp_path: Path) -> None:
    """`open_unix_device` of a path where no key serves raised a bare FileNotFoundError (a
    newcomer's trial); over UDP the same mistake already said where it looked and why."""
    from vfido.transports.descriptor import NoKeyError

    missing = tmp_path / "no-such.ctaphid"
    with pytest.raises(NoKeyError, match=f"no key at {missing} \\(is `vfido run --transport unix`"):
        open_unix_device(missing, timeout=3)
    stale = tmp_path / "stale.ctaphid"  # a socket file left by a killed key: nobody listens
    left = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    left.bind(str(stale))
    left.close()
    with pytest.raises(NoKeyError, match=f"no key at {stale}"):
        open_unix_device(stale, timeout=3)
