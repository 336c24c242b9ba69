"""CTAPHID over a Unix-domain socket, for tools that need a persistent key without UHID.

The key listens on a ``SOCK_SEQPACKET`` socket; each packet is one 64-byte CTAPHID report
(no report-id byte), in both directions, as over UDP and USB. Unlike UDP, the kernel says
who connected: every connection's peer uid is read with ``SO_PEERCRED`` and a connection
from any uid but the key's own (and root's, who can read the key's memory anyway) is closed
at once. The socket file is created 0600; the application puts it in the user's private
runtime directory (checked like the control socket's, :mod:`vfido.control`).

Each connection is a CTAPHID client of its own (:mod:`vfido.transports.ctaphid`): it only sees the
reports for the channels it allocated, its channels and lock are bounded, and they are
forgotten when it disconnects. :class:`UnixConnection` / :func:`open_unix_device` are the
client side (a python-fido2 ``CtapHidConnection``), so ``Fido2Client`` works over it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import socket
import threading
from collections.abc import Collection
from pathlib import Path

from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection

from vfido.transports.ctaphid import REPORT_SIZE, Report
from vfido.transports.descriptor import NoKeyError, simulated_descriptor
from vfido.transports.handler import CtapHandler
from vfido.transports.runner import HidRunner
from vfido.transports.sockets import SocketPathError, clear_stale_socket
from vfido.transports.sockets import peer_uid as peer_uid

#: Connections served at once; more are refused (closed) until one ends.
MAX_CONNECTIONS = 16
#: Send buffer per connection: a whole 7609-byte message (129 reports) must fit, so that a
#: client that is slow to read never blocks the key (its reports are dropped if it is full).
SEND_BUFFER = 1 << 20

_module_log = logging.getLogger(__name__)


class UnixTransportError(RuntimeError):
    """The socket cannot be served; the message (one line) says why."""


def _trusted_uids() -> frozenset[int]:
    return frozenset({os.geteuid(), 0})


class UnixTransport:
    """Serve a :class:`CtapHandler` on the Unix socket ``path`` (bound in the constructor).

    ``allowed_uids``: the peer uids served (default: this process's effective uid and root).
    """

    def __init__(
        self,
        handler: CtapHandler,
        path: str | os.PathLike[str],
        *,
        allowed_uids: Collection[int] | None = None,
        max_connections: int = MAX_CONNECTIONS,
        logger: logging.Logger | None = None,
    ) -> None:
        self._log = logger or _module_log
        self._path = Path(path)
        self._allowed = frozenset(allowed_uids) if allowed_uids is not None else _trusted_uids()
        self._max_connections = max_connections
        self._listener = self._bind(self._path)
        self._connections: dict[int, socket.socket] = {}  # client id -> connection
        self._ids = itertools.count(1)
        self._conn_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: str | None = None
        self._runner = HidRunner(handler, self._send, logger=logger)

    def __repr__(self) -> str:
        return f"UnixTransport(path={str(self._path)!r})"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def runner(self) -> HidRunner:
        return self._runner

    @property
    def failure(self) -> str | None:
        """Why the socket is no longer served although nobody stopped it, else None."""
        return self._failure

    @staticmethod
    def _bind(path: Path) -> socket.socket:
        try:
            clear_stale_socket(
                path,
                socket.SOCK_SEQPACKET,
                in_use=f"another key is serving {path}: stop it or choose another socket",
            )
        except SocketPathError as exc:
            raise UnixTransportError(str(exc)) from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)  # created 0600: never a moment with wider access
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)
            sock.listen(8)
        except OSError as exc:
            sock.close()
            reason = exc.strerror or exc  # "AF_UNIX path too long" has no strerror
            raise UnixTransportError(f"cannot create socket {path}: {reason}") from None
        finally:
            os.umask(old_umask)
        return sock

    def start(self) -> None:
        """Serve on a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="vfido-unix", daemon=True)
            self._thread.start()

    def serve_forever(self) -> None:
        """Serve on the calling thread until :meth:`stop`."""
        self._loop()

    def stop(self) -> None:
        """Stop serving, close every connection, remove the socket file. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        self._runner.close()
        with self._conn_lock:
            connections, self._connections = list(self._connections.values()), {}
        for sock in (*connections, self._listener, self._wake_r, self._wake_w):
            sock.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    # -- internals --------------------------------------------------------------------------

    def _send(self, report: bytes) -> None:
        """A report from the key: to the connection it is addressed to (never blocks)."""
        client = report.client if isinstance(report, Report) else None
        with self._conn_lock:
            conn = self._connections.get(client) if isinstance(client, int) else None
        if conn is None:
            return  # its connection is gone (or a report for nobody)
        try:
            conn.send(report, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except OSError as exc:  # full (not reading) or closed: its problem, not the key's
            self._log.debug("unix: dropping a report for connection %d: %s", client, exc)

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError as exc:
            self._log.debug("unix: accept failed: %s", exc)
            return
        try:
            uid = peer_uid(conn)
        except OSError:
            conn.close()
            return
        if uid not in self._allowed:
            self._log.warning("unix: refused a connection from uid %d", uid)
            conn.close()
            return
        with self._conn_lock:
            if len(self._connections) >= self._max_connections:
                self._log.warning("unix: too many connections, refusing one")
                conn.close()
                return
            client = next(self._ids)
            self._connections[client] = conn
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    def _drop(self, client: int) -> None:
        with self._conn_lock:
            conn = self._connections.pop(client, None)
        if conn is not None:
            conn.close()
            self._runner.forget_client(client)

    def _receive(self, client: int, conn: socket.socket) -> None:
        try:
            packet = conn.recv(REPORT_SIZE + 1)
        except OSError as exc:
            self._log.debug("unix: connection %d: %s", client, exc)
            packet = b""
        if not packet:
            self._drop(client)
        elif len(packet) > REPORT_SIZE:
            self._log.debug("unix: ignoring a packet longer than a report")
        else:
            self._runner.feed(packet, client)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            with self._conn_lock:
                by_socket = {conn: client for client, conn in self._connections.items()}
            try:
                ready, _, _ = select.select([self._listener, self._wake_r, *by_socket], [], [])
            except (OSError, ValueError) as exc:
                if not self._stopping.is_set():  # else: closed under us by stop()
                    self._failure = f"waiting for {self._path} failed: {exc}"
                    self._log.error("unix: %s", self._failure)
                return
            if self._wake_r in ready or self._stopping.is_set():
                return
            for sock in ready:
                if sock is self._listener:
                    self._accept()
                else:
                    self._receive(by_socket[sock], sock)


class UnixConnection(CtapHidConnection):
    """Client side: one connection to a :class:`UnixTransport` at ``path``.

    Refuses a server run by another user (``SO_PEERCRED``): a report sent to it could carry
    a PIN."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
        self._timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self._sock.settimeout(timeout)
            try:
                self._sock.connect(os.fspath(path))
            except (FileNotFoundError, ConnectionRefusedError):  # no socket, or a stale one
                raise NoKeyError(
                    f"no key at {os.fspath(path)} (is `vfido run --transport unix` running? "
                    "it prints its socket's path)"
                ) from None
            uid = peer_uid(self._sock)
            if uid not in _trusted_uids():
                raise PermissionError(f"{os.fspath(path)} is served by another user (uid {uid})")
        except BaseException:
            self._sock.close()
            raise
        self.descriptor = simulated_descriptor(f"unix:{os.fspath(path)}", "vfido (unix)")

    def write_packet(self, data: bytes) -> None:
        self._sock.send(bytes(data))

    def read_packet(self) -> bytes:
        try:
            packet = self._sock.recv(REPORT_SIZE)
        except TimeoutError:
            raise TimeoutError(f"no report from the key within {self._timeout} s") from None
        if not packet:
            raise OSError("the key closed the connection")
        return packet

    def close(self) -> None:
        self._sock.close()


def open_unix_device(path: str | os.PathLike[str], *, timeout: float = 60.0) -> CtapHidDevice:
    """A python-fido2 device talking to a :class:`UnixTransport` at ``path``."""
    connection = UnixConnection(path, timeout=timeout)
    try:
        return CtapHidDevice(connection.descriptor, connection)
    except BaseException:
        connection.close()
        raise
