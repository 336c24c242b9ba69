"""CTAPHID over UDP: one raw 64-byte report per datagram (no report-id byte).

The key binds ``host:port`` and sends every report to ``peer_host:peer_port``, which is how
simulated-device test harnesses talk to a key. A datagram holding exactly
:data:`POWER_CYCLE_DATAGRAM` simulates unplugging and re-plugging the key (the authenticator
is power cycled, the request in flight cancelled; the host's channels stay valid). Anything
else that is not a report (empty or longer than 64 bytes) is dropped; shorter reports are zero
padded as on USB (CTAP 2.1 section 11.2.4). :class:`UdpConnection` / :func:`open_udp_device` are the
client side, for tests and tools.

Threads: one I/O thread receives datagrams and feeds them to the runner in order. A datagram
that completes a request is answered by that thread, right there (no hand-off to a worker,
no other thread woken). Only if the handler is about to wait (for the user, or for a
CANCEL: the runner's ``before_wait``) does the thread hand the reading over to a new I/O
thread, which keeps reading meanwhile, so a CTAPHID_CANCEL, or an INIT on another channel,
is seen while the handler waits; the thread that handed over ends once it has answered.
A handler that computes without waiting (an RSA key generation) delays the reading of
other reports until it answers; it does not look for a CANCEL meanwhile either.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Hashable

from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection

from vfido.transports.ctaphid import REPORT_SIZE, HostChannelFilter
from vfido.transports.descriptor import simulated_descriptor
from vfido.transports.handler import CtapHandler
from vfido.transports.runner import HidRunner

POWER_CYCLE_DATAGRAM = bytes.fromhex(
    "ac1052ca95e569de69e02ebff333485f13f9b2da34c5a8a340526697a9ab2e0b"
    "394d8d04973c134005be1a0140bff6045bb26eb77a73eaa47813f6b49a7250dc"
)
MAX_DATAGRAM = 65535
#: Seconds :func:`open_udp_device` waits for the key's answer to CTAPHID_INIT: a key answers
#: at once, so silence this long means no key listens on that port.
CONNECT_TIMEOUT = 3.0

_module_log = logging.getLogger(__name__)


def _udp_socket(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class UdpTransport:
    """Serve a :class:`CtapHandler` over UDP. The socket is bound in the constructor."""

    def __init__(
        self,
        handler: CtapHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 8111,
        peer_host: str = "127.0.0.1",
        peer_port: int = 7112,
        logger: logging.Logger | None = None,
    ) -> None:
        self._log = logger or _module_log
        self._peer = (peer_host, peer_port)
        self._sock = _udp_socket(host, port)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._read_lock = threading.Lock()  # its holder reads and feeds datagrams, in order
        self._reader: int | None = None  # the thread holding _read_lock (its ident)
        self._pool_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._runner = HidRunner(
            handler,
            self._send,
            logger=logger,
            inline_requests=True,
            before_wait=self._hand_over,
        )

    def __repr__(self) -> str:
        return f"UdpTransport(port={self.port}, peer={self._peer!r})"

    @property
    def port(self) -> int:
        """The UDP port actually bound (useful with ``port=0``)."""
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def runner(self) -> HidRunner:
        return self._runner

    def start(self) -> None:
        """Serve on background threads."""
        if self._thread is None:
            self._thread = self._spawn()

    def serve_forever(self) -> None:
        """Serve on the calling thread (and others while a handler waits) until :meth:`stop`."""
        self._loop()
        self._stopping.wait()  # this thread handed the reading over: wait for the end

    def _spawn(self) -> threading.Thread:
        """Start an I/O thread."""
        thread = threading.Thread(target=self._loop, name="vfido-udp", daemon=True)
        with self._pool_lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop serving, close the socket and the runner. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with contextlib.suppress(OSError):  # ENOTCONN, but a blocked recvfrom returns (Linux)
            self._sock.shutdown(socket.SHUT_RDWR)
        self._runner.close()  # cancels a request in progress: its I/O thread then ends
        with self._pool_lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5.0)
        self._sock.close()

    def _send(self, report: bytes) -> None:
        try:
            self._sock.sendto(report, self._peer)
        except OSError as exc:
            self._log.debug("udp: dropping a report: %s", exc)

    def _loop(self) -> None:
        """One I/O thread: read, feed, answer a completed request here. Returns when the
        transport stops, or after answering a request whose handler waited (another thread
        took over the reading then)."""
        me = threading.get_ident()
        while not self._stopping.is_set():
            self._read_lock.acquire()
            self._reader = me
            try:
                if self._stopping.is_set():
                    return
                try:  # blocking: one system call per report (stop() shuts the socket down)
                    datagram, source = self._sock.recvfrom(MAX_DATAGRAM)
                except OSError as exc:  # e.g. ICMP port unreachable reported late
                    if self._stopping.is_set() or self._sock.fileno() < 0:
                        return  # closed under us
                    self._log.debug("udp: receive error: %s", exc)
                    continue
                if self._stopping.is_set():
                    return
                job = self._handle(datagram, source)
                if job is not None:
                    job()  # may call _hand_over (the handler waits)
            finally:
                if self._reader == me:
                    self._reader = None
                    self._read_lock.release()
                    handed_over = False
                else:
                    handed_over = True
            if handed_over:  # another thread reads now: this one is surplus
                with self._pool_lock, contextlib.suppress(ValueError):
                    self._threads.remove(threading.current_thread())
                return

    def _hand_over(self) -> None:
        """The runner's ``before_wait``: the handler running on this I/O thread is about
        to wait, so another thread takes over reading (CANCEL must get through)."""
        if self._reader != threading.get_ident():
            return  # not a request this transport answers inline
        self._reader = None
        self._read_lock.release()
        if not self._stopping.is_set():
            self._spawn()

    def _handle(self, datagram: bytes, source: Hashable = None) -> Callable[[], None] | None:
        """``source``: the sender's address, the CTAPHID client identity (every reply still
        goes to the one peer address)."""
        if datagram == POWER_CYCLE_DATAGRAM:
            self._log.info("udp: power cycle")
            # The simulation convention: the authenticator is power cycled and the request
            # in flight cancelled, but the host's channels stay valid (simulated-device test
            # suites keep using theirs after a "reboot"; a real unplug, UHID, forgets them).
            self._runner.power_cycle(keep_channels=True)
        elif 0 < len(datagram) <= REPORT_SIZE:
            return self._runner.feed(datagram, source)
        else:
            self._log.debug("udp: ignoring a %d-byte datagram", len(datagram))
        return None


class NoKeyError(ConnectionError):
    """No key answers on the UDP port (nothing listens there, or it does not speak CTAPHID)."""


class UdpConnection(CtapHidConnection):
    """Client side: binds ``host:peer_port`` and sends reports to ``host:port``.

    The socket is connected to the key, so the kernel's "port unreachable" for a port nothing
    listens on ends a read at once (:class:`NoKeyError`) instead of after ``timeout``.

    Reports for channels this connection never used are skipped (see
    :class:`~vfido.transports.ctaphid.HostChannelFilter`).
    """

    def __init__(
        self,
        port: int = 8111,
        peer_port: int = 7112,
        *,
        host: str = "127.0.0.1",
        timeout: float = 60.0,
    ) -> None:
        self._sock = _udp_socket(host, peer_port)
        self._sock.settimeout(timeout)
        self._key = (host, port)
        try:
            self._sock.connect(self._key)
        except OSError:
            self._sock.close()
            raise
        self._timeout = timeout
        self._filter = HostChannelFilter()
        self.descriptor = simulated_descriptor(f"udp:{host}:{port}", "vfido (udp)")

    def write_packet(self, data: bytes) -> None:
        report = bytes(data)
        self._filter.note_sent(report)
        try:
            self._sock.send(report)
        except ConnectionRefusedError:
            raise self._no_key() from None

    def _no_key(self, after: str = "") -> NoKeyError:
        host, port = self._key
        return NoKeyError(
            f"no key answers on udp {host}:{port}{after} (is `vfido run` running with "
            f"--udp-port {port}?)"
        )

    def set_timeout(self, timeout: float) -> None:
        """Seconds a read waits for the key."""
        self._timeout = timeout
        self._sock.settimeout(timeout)

    def read_packet(self) -> bytes:
        while True:
            try:
                datagram = self._sock.recv(MAX_DATAGRAM)
            except ConnectionRefusedError:
                raise self._no_key() from None
            except TimeoutError:
                raise TimeoutError(f"no report from the key within {self._timeout} s") from None
            if self._filter.wants(datagram):  # skip other clients' and stray reports
                return datagram

    def power_cycle(self) -> None:
        """Send the power-cycle datagram to the key."""
        self._sock.sendto(POWER_CYCLE_DATAGRAM, self._key)

    def close(self) -> None:
        self._sock.close()


def open_udp_device(
    port: int = 8111, peer_port: int = 7112, *, host: str = "127.0.0.1", timeout: float = 60.0
) -> CtapHidDevice:
    """A python-fido2 device talking to a :class:`UdpTransport` at ``host:port``.

    Raises :class:`NoKeyError` within :data:`CONNECT_TIMEOUT` seconds when no key answers
    there; afterwards each read waits up to ``timeout`` seconds.
    """
    connection = UdpConnection(port, peer_port, host=host, timeout=min(timeout, CONNECT_TIMEOUT))
    try:
        try:
            device = CtapHidDevice(connection.descriptor, connection)
        except TimeoutError:
            raise connection._no_key(f" within {connection._timeout:g} s") from None
        connection.set_timeout(timeout)
        return device
    except BaseException:
        connection.close()
        raise
