"""CTAPHID over UDP: one raw 64-byte report per datagram (no report-id byte).

The key binds ``host:port`` and sends every report to ``peer_host:peer_port``, which is how
simulated-device test harnesses talk to a key. A datagram holding exactly
:data:`POWER_CYCLE_DATAGRAM` simulates unplugging and re-plugging the key (the authenticator
is power cycled, the request in flight cancelled; the host's channels stay valid). Anything
else that is not a report (empty or longer than 64 bytes) is dropped; shorter reports are zero
padded as on USB (CTAP 2.1 section 11.2.4). :class:`UdpConnection` / :func:`open_udp_device` are the
client side, for tests and tools.

Threads: one thread reads the sockets of all the UDP keys of a process (:class:`_Reader`),
in order, and a datagram that completes a request is answered by that thread, right there
(no hand-off to a worker, no other thread woken). Only if the handler is about to wait (for
the user, or for a CANCEL: the runner's ``before_wait``) does the thread hand the reading
over to a new thread, which keeps reading meanwhile, so a CTAPHID_CANCEL, an INIT on another
channel or another key's request is seen while the handler waits; the thread that handed
over ends once it has answered. A handler that computes without waiting (an RSA key
generation, a durable commit) delays the reading of other reports, the other keys' of the
same process too, until it answers; it does not look for a CANCEL meanwhile either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Hashable

from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection

from vfido.transports.ctaphid import REPORT_SIZE, HostChannelFilter
from vfido.transports.descriptor import NoKeyError as NoKeyError
from vfido.transports.descriptor import simulated_descriptor
from vfido.transports.handler import CtapHandler
from vfido.transports.ports import PEER_PORT, PORT
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


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different UDP ports on ``host`` that nothing was bound to just now (for a
    key's ``port`` and ``peer_port`` in a test).

    The sockets are held together until all are picked: ports taken one at a time from
    closed sockets may be the same port twice.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(_udp_socket(host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _udp_socket(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        # Which port: "Permission denied" alone does not say that port 80 needs privilege.
        raise OSError(exc.errno, f"cannot bind UDP {host}:{port}: {exc.strerror}") from None
    return sock


class UdpTransport:
    """Serve a :class:`CtapHandler` over UDP. The socket is bound in the constructor."""

    def __init__(
        self,
        handler: CtapHandler,
        *,
        host: str = "127.0.0.1",
        port: int = PORT,
        peer_host: str = "127.0.0.1",
        peer_port: int = PEER_PORT,
        logger: logging.Logger | None = None,
    ) -> None:
        self._log = logger or _module_log
        self._peer = (peer_host, peer_port)
        self._sock = _udp_socket(host, port)
        self._stopping = threading.Event()
        self._state_lock = threading.Lock()  # start() against stop()
        self._io: _Reader | None = None  # the reader of the process that started it
        self._in_read: set[int] = set()  # threads inside _read (their idents)
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

    @property
    def failure(self) -> str | None:
        """Why the key is no longer read although nobody stopped it (the process's reading
        thread failed), else None."""
        io = self._io
        if io is None or self._stopping.is_set():
            return None
        return io.failure

    def start(self) -> None:
        """Serve on background threads (the process's UDP reading thread)."""
        with self._state_lock:
            if self._io is None and not self._stopping.is_set():
                self._io = _shared_reader()
                self._io.add(self, self._sock)

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` (the reading runs on background threads; this one waits)."""
        self.start()
        self._stopping.wait()

    def stop(self) -> None:
        """Stop serving, close the socket and the runner. Idempotent."""
        io = self._io
        if io is not None and not io.of_this_process():
            # A forked child's copy of a started key: its threads, its runner's and its
            # reader's are the parent's (their locks may have been held at the fork, and the
            # epoll instance is shared). Only this process's descriptor of the socket goes.
            self._stopping.set()
            self._sock.close()
            return
        with self._state_lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            io = self._io
            if io is not None:
                io.remove(self._sock)
        self._runner.close()  # cancels a request in progress: its thread then answers
        me = threading.get_ident()
        deadline = time.monotonic() + 5.0
        while self._in_read - {me} and time.monotonic() < deadline:
            time.sleep(0.005)  # a thread still answering one of our requests
        self._sock.close()
        if io is not None:
            io.wait_idle(deadline)  # the last key's stop(): the reading threads have ended

    def _hand_over(self) -> None:
        """The runner's ``before_wait`` (see :meth:`_Reader.hand_over`)."""
        if self._io is not None:
            self._io.hand_over()

    def _send(self, report: bytes) -> None:
        try:
            self._sock.sendto(report, self._peer)
        except OSError as exc:
            self._log.debug("udp: dropping a report: %s", exc)

    def _read(self, batch: int) -> None:
        """On the reading thread, the socket being ready: read and feed up to ``batch``
        datagrams, answering a request one of them completes right here. Returns early
        once the socket is drained, the transport stops, or the handler of a request
        handed the reading over (this thread then no longer reads)."""
        me = threading.get_ident()
        self._in_read.add(me)
        try:
            for _ in range(batch):
                if self._stopping.is_set():
                    return
                try:
                    datagram, source = self._sock.recvfrom(MAX_DATAGRAM, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return  # drained
                except OSError as exc:  # e.g. ICMP port unreachable reported late
                    if not self._stopping.is_set() and self._sock.fileno() >= 0:
                        self._log.debug("udp: receive error: %s", exc)
                    return
                job = self._handle(datagram, source)
                if job is not None:
                    job()  # may hand the reading over (the handler waits)
                    if self._io is None or not self._io.reading():
                        return
        finally:
            self._in_read.discard(me)

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


class _Reader:
    """Reads the sockets of every :class:`UdpTransport` of this process, one thread at a time.

    The thread holding the reading (``_read_lock``) waits in ``select`` on every started
    transport's socket, reads the ready ones, feeds their reports to their runners and answers
    a request one of them completes right there. When that request's handler is about to wait
    (the runner's ``before_wait``: :meth:`hand_over`), a new thread takes over the reading and
    the old one ends once it has answered. So each key's reports are read and fed in order, a
    CANCEL reaches a waiting handler, and a process serving many keys has one reading thread,
    not one per key contending for the GIL (bench/HISTORY.md, session 10). The thread ends when
    no transport is left; the next :meth:`add` starts another.
    """

    #: Datagrams read from one ready socket before the other sockets get their turn.
    BATCH = 16

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()  # guards the registrations, _running, _threads
        self._running = False  # a thread reads, or is about to
        self._threads: set[threading.Thread] = set()  # alive, reading or answering
        self._selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self._selector.register(self._wake_in, selectors.EVENT_READ, None)
        self._read_lock = threading.Lock()  # its holder reads and feeds reports
        self._reader: int | None = None  # the thread holding _read_lock (its ident)
        #: Why no thread reads although transports are registered (until the next add()).
        self.failure: str | None = None

    def add(self, transport: UdpTransport, sock: socket.socket) -> None:
        with self._lock:
            self._selector.register(sock, selectors.EVENT_READ, transport)
            if not self._running:
                self._spawn()  # raises: the socket stays registered, and the next add retries
                self._running = True
                self.failure = None
                return
        self._wake()  # the thread in select() sees the new socket (any selector)

    def remove(self, sock: socket.socket) -> None:
        with self._lock:
            try:
                self._selector.unregister(sock)
            except KeyError:
                return  # never added
        self._wake()  # a reader with nothing left to read ends

    def wait_idle(self, deadline: float) -> None:
        """If no transport is left, wait (until ``deadline``, ``time.monotonic()``) for the
        reading threads to end; not the calling thread, if it is one."""
        with self._lock:
            if self._has_transports():
                return
            threads = [t for t in self._threads if t is not threading.current_thread()]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _has_transports(self) -> bool:
        """Whether a transport's socket is registered (besides the wake-up one; ``_lock``
        held)."""
        return len(self._selector.get_map()) > 1

    def of_this_process(self) -> bool:
        """False in a forked child (see :func:`_forget_shared_reader`)."""
        return os.getpid() == self._pid

    def reading(self) -> bool:
        """Whether the calling thread holds the reading."""
        return self._reader == threading.get_ident()

    def hand_over(self) -> None:
        """The runner's ``before_wait``: the handler running on the calling thread is about
        to wait, so a new thread takes over the reading (CANCEL, and the other keys'
        reports, must get through). Does nothing on a thread that does not read."""
        if not self.reading():
            return
        self._reader = None
        self._read_lock.release()
        with self._lock:
            try:
                self._spawn()
            except RuntimeError as exc:  # no thread: the next add() starts one
                self._running = False
                self.failure = f"no thread to read its UDP sockets: {exc}"
                _module_log.error("udp: %s", self.failure)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a wake-up already pending is enough
            self._wake_out.send(b"\0")

    def _spawn(self) -> None:
        """Start a reading thread (``_lock`` held)."""
        thread = threading.Thread(target=self._loop, name="vfido-udp", daemon=True)
        self._threads.add(thread)
        try:
            thread.start()
        except BaseException:
            self._threads.discard(thread)
            raise

    def _loop(self) -> None:
        """One reading thread. Returns when no transport is left, or after answering a
        request whose handler waited (another thread reads since)."""
        me = threading.get_ident()
        self._read_lock.acquire()
        self._reader = me
        try:
            while True:
                with self._lock:
                    if not self._has_transports():
                        self._running = False
                        return
                try:
                    events = self._selector.select()
                except Exception as exc:  # a bug: the next add() starts a reader again
                    failure = f"waiting for its UDP sockets failed: {exc}"
                    _module_log.error(
                        "udp: %s",
                        failure,
                        exc_info=_module_log.isEnabledFor(logging.DEBUG),  # -v: where
                    )
                    with self._lock:
                        self._running = False
                        self.failure = failure
                    return
                for key, _ in events:
                    transport: UdpTransport | None = key.data
                    if transport is None:
                        with contextlib.suppress(BlockingIOError):
                            self._wake_in.recv(4096)
                        continue
                    try:
                        transport._read(self.BATCH)
                    except Exception:  # a bug: the other keys of the process keep being read
                        _module_log.exception("udp: reading a socket failed")
                    if self._reader != me:
                        return  # handed over
        finally:
            if self._reader == me:
                self._reader = None
                self._read_lock.release()
            with self._lock:
                self._threads.discard(threading.current_thread())

    def close_in_child(self) -> None:
        """In a forked child: close the inherited selector and wake-up pair (the kernel's
        epoll instance is shared with the parent: never unregister through it)."""
        self._selector.close()  # this process's descriptor of it only
        self._wake_in.close()
        self._wake_out.close()


_shared: _Reader | None = None
_shared_lock = threading.Lock()


def _shared_reader() -> _Reader:
    """The process's one :class:`_Reader`, made on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = _Reader()
        return _shared


def _forget_shared_reader() -> None:
    """In a forked child: the parent's reader (its threads did not survive the fork, its
    selector is the parent's) is not this process's. A key the child inherited started is
    not served in the child, and its stop() only closes the child's descriptor of the socket
    (:meth:`UdpTransport.stop`); a key the child starts gets the child's own reader."""
    global _shared, _shared_lock
    if _shared is not None:
        _shared.close_in_child()
    _shared, _shared_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_shared_reader)


class UdpConnection(CtapHidConnection):
    """Client side: binds ``host:peer_port`` and sends reports to ``host:port``.

    The socket is connected to the key, so the kernel's "port unreachable" for a port nothing
    listens on ends a read at once (:class:`NoKeyError`) instead of after ``timeout``.

    Reports for channels this connection never used are skipped (see
    :class:`~vfido.transports.ctaphid.HostChannelFilter`).
    """

    def __init__(
        self,
        port: int = PORT,
        peer_port: int = PEER_PORT,
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
    port: int = PORT, peer_port: int = PEER_PORT, *, host: str = "127.0.0.1", timeout: float = 60.0
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
