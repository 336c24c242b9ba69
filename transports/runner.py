"""Threads around the sans-IO CTAPHID core: dispatch, keepalives, cancel and timeouts.

:class:`HidRunner` is what every transport (in-process, UDP, UHID) drives: the transport's I/O
thread calls :meth:`HidRunner.feed` with each 64-byte report from the host, and the runner calls
``send_report`` with each 64-byte report for the host.

Threads (CTAP 2.1 section 11.2):

* a *worker* runs ``handler.handle_cbor`` / ``handler.handle_msg`` one request at a time;
  with ``inline_requests=True`` there is no such hand-off: :meth:`HidRunner.feed` returns
  the request as a job that the transport runs on the thread that read it. So that a
  CTAPHID_CANCEL is still read while the handler waits, ``before_wait`` tells the
  transport when to let another thread read: it is called once per request, on the
  handler's thread, before the handler first waits (``wait_cancelled``, or the keepalive
  status leaving PROCESSING: the user is asked); see ``transports.udp`` and
  ``transports.uhid``;
* a *ticker* sends CTAPHID_KEEPALIVE about every 80 ms while a request is outstanding
  and drives the 500 ms message timeout. Section 11.2.9.1.7: "It SHOULD be sent at least
  every 100ms and whenever the status changes": a change of status (PROCESSING ->
  UPNEEDED and back, :meth:`HidTransaction.set_keepalive`) sends one at once, from the
  thread that changed it, and restarts the 80 ms interval. While reports keep coming (and
  for ``ACTIVE_LINGER`` seconds after the last) the ticker wakes at least every interval,
  so a new request never has to wake it: waking a thread per request costs more than a
  keepalive check, and lands just when the handler starts (a browser's ceremony is a few
  requests some 50-200 ms apart); idle, it sleeps until a report comes.

All core calls and all report sends happen under one lock, so the packets of one response are
never interleaved with a keepalive, and no keepalive follows a response.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence

from vfido.transports.ctaphid import (
    TYPE_INIT,
    Cancel,
    Capability,
    Command,
    CtapHidCore,
    Lock,
    Output,
    Request,
    Wink,
)
from vfido.transports.handler import CTAP2, U2F, CtapHandler, KeepaliveStatus

KEEPALIVE_INTERVAL = 0.08
#: Seconds after the last report during which the ticker keeps beating (see above).
ACTIVE_LINGER = 1.0
CTAP2_ERR_OTHER = b"\x7f"
SW_UNKNOWN_ERROR = b"\x6f\x00"

_module_log = logging.getLogger(__name__)


def _command_name(command: int) -> str:
    try:
        return Command(command).name
    except ValueError:
        return f"0x{command:02x}"


_EVENT_LOCK = threading.Lock()  # creates HidTransaction events (rare: presence waits)
_PROCESSING = int(KeepaliveStatus.PROCESSING)
_KEEPALIVE_VALUES = frozenset(int(s) for s in KeepaliveStatus)


class HidTransaction:
    """One MSG/CBOR request in flight; implements ``transports.handler.Transaction``.

    Most requests are answered without ever waiting, so the ``threading.Event`` a
    wait needs is made on the first :meth:`wait_cancelled` (an Event costs more
    than the rest of the object). :meth:`cancel` sets the flag, then the Event if
    one exists; a waiter makes the Event, then reads the flag, both under
    ``_EVENT_LOCK``: a cancel is never missed.
    """

    def __init__(
        self,
        channel: int,
        transaction: int,
        on_status_change: Callable[[HidTransaction], None] | None = None,
        *,
        before_wait: Callable[[], None] | None = None,
    ) -> None:
        self._channel = channel
        self.transaction = transaction
        self._cancelled = False
        self._event: threading.Event | None = None
        self._cancel_callbacks: list[Callable[[], None]] | None = None
        self._status = _PROCESSING
        self._on_status_change = on_status_change
        #: Called once, on the handler's thread, before the handler first waits (for the
        #: user or a CANCEL): see ``HidRunner(before_wait=...)``.
        self._before_wait = before_wait

    def _will_wait(self) -> None:
        hook, self._before_wait = self._before_wait, None
        if hook is not None:
            hook()

    def __repr__(self) -> str:
        return f"HidTransaction(channel=0x{self._channel:08x}, cancelled={self.is_cancelled()})"

    @property
    def channel(self) -> int:
        return self._channel

    def is_cancelled(self) -> bool:
        return self._cancelled

    def wait_cancelled(self, timeout: float) -> bool:
        if self._before_wait is not None:
            self._will_wait()
        event = self._event
        if event is None:
            with _EVENT_LOCK:
                event = self._event
                if event is None:
                    event = self._event = threading.Event()
                    if self._cancelled:
                        event.set()
        return event.wait(max(0.0, timeout))

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Have ``callback`` called (on the transport's thread, once) when the transaction
        is cancelled, or at once if it is: a waiter that waits for something else too (the
        presence broker waits for the user's answer) wakes up at the CANCEL, not at its next
        look at :meth:`is_cancelled`."""
        with _EVENT_LOCK:
            if not self._cancelled:
                if self._cancel_callbacks is None:
                    self._cancel_callbacks = []
                self._cancel_callbacks.append(callback)
                return
        callback()

    def set_keepalive(self, status: int) -> None:
        # Twice per request: a set lookup, not an enum construction.
        if status not in _KEEPALIVE_VALUES:
            raise ValueError(f"not a CTAPHID_KEEPALIVE status: {status!r}")
        if status == self._status:
            return
        if status != _PROCESSING and self._before_wait is not None:
            self._will_wait()  # UPNEEDED: the handler is about to wait for the user
        self._status = int(status)
        if self._on_status_change is not None:
            self._on_status_change(self)  # "whenever the status changes" (11.2.9.1.7)

    @property
    def keepalive_status(self) -> int:
        return self._status

    def cancel(self) -> None:
        with _EVENT_LOCK:
            self._cancelled = True
            event = self._event
            callbacks, self._cancel_callbacks = self._cancel_callbacks, None
        if event is not None:
            event.set()
        for callback in callbacks or ():
            callback()


def _capabilities_for(base: int, reporter: Callable[[], frozenset[str]]) -> int:
    """CTAPHID capability flags: ``base`` with CBOR and NMSG following the handler's
    :meth:`~vfido.transports.handler.ProtocolReporter.supported_protocols`."""
    protocols = reporter()
    flags = int(base) & ~int(Capability.CBOR | Capability.NMSG)  # int: keep every other bit
    if CTAP2 in protocols:
        flags |= Capability.CBOR
    if U2F not in protocols:
        flags |= Capability.NMSG
    return int(flags)


class HidRunner:
    """Thread-safe CTAPHID device: feed host reports in, get reports out via ``send_report``."""

    def __init__(
        self,
        handler: CtapHandler,
        send_report: Callable[[bytes], None],
        *,
        device_version: tuple[int, int, int] = (0, 1, 0),
        capabilities: int = Capability.WINK | Capability.CBOR,
        logger: logging.Logger | None = None,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        packet_observer: Callable[[str, bytes], None] | None = None,
        inline_requests: bool = False,
        before_wait: Callable[[], None] | None = None,
    ) -> None:
        #: Called with ("in", report) for each host report and ("out", report) for each
        #: report sent (a trace); may be set before the transport starts. Must not block.
        self.packet_observer = packet_observer
        self._handler = handler
        self._send_report = send_report
        self._log = logger or _module_log
        self._interval = keepalive_interval
        self._clock = clock
        reporter = getattr(handler, "supported_protocols", None)
        self._core = CtapHidCore(
            device_version=device_version,
            capabilities=(
                functools.partial(_capabilities_for, capabilities, reporter)
                if callable(reporter)
                else capabilities
            ),
        )
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._current: HidTransaction | None = None
        self._inline_requests = inline_requests
        self._before_wait = before_wait
        self._feeding = False  # feed() is collecting the request it will return (lock held)
        self._deferred: tuple[Request, HidTransaction] | None = None
        self._next_keepalive = 0.0
        self._ticker_due: float | None = None  # when the ticker wakes up next (None: on demand)
        self._last_report = float("-inf")  # clock() of the last report fed
        # SimpleQueue: a C queue, cheaper per hand-off than queue.Queue (no task tracking).
        self._requests: queue.SimpleQueue[tuple[Request, HidTransaction] | None] = (
            queue.SimpleQueue()
        )
        self._worker = threading.Thread(target=self._work, name="ctaphid-worker", daemon=True)
        self._ticker = threading.Thread(target=self._tick, name="ctaphid-ticker", daemon=True)
        self._worker.start()
        self._ticker.start()

    # -- public API -------------------------------------------------------------------------

    def feed(self, report: bytes, client: Hashable = None) -> Callable[[], None] | None:
        """One report from the host (called from the transport's I/O thread). Never raises.

        ``client``: who sent it, if the transport can tell (see :mod:`vfido.transports.ctaphid`);
        the reports for an identified client reach ``send_report`` as
        :class:`~vfido.transports.ctaphid.Report` objects naming it.

        Returns None, except with ``inline_requests``: a report that completes a MSG/CBOR
        request returns the job that answers it, which the caller must run (on any thread,
        once it no longer blocks the reading of reports)."""
        if self._closed.is_set():
            return None
        self._trace(report)
        self._observe("in", report)
        with self._lock:
            now = self._last_report = self._clock()
            try:
                outputs = self._core.feed(report, now, client)
            except Exception:  # a bug in the core must not kill the transport
                self._log.exception("ctaphid: internal error processing a report")
                return None
            self._feeding = self._inline_requests
            try:
                self._emit(outputs)
            finally:
                self._feeding = False
            self._wake_ticker_if_due()
            job, self._deferred = self._deferred, None
        if job is None:
            return None
        return functools.partial(self._serve, *job)

    def _wake_ticker_if_due(self) -> None:
        """Wake the ticker only if it now has to act before it planned to (lock held).

        Most reports (continuation packets, a request answered within the keepalive
        interval) move no deadline earlier, and waking a thread per report costs more
        than the report itself.
        """
        due = self._core.next_deadline()
        if self._current is not None and (due is None or self._next_keepalive < due):
            due = self._next_keepalive
        if due is not None and (self._ticker_due is None or due < self._ticker_due):
            self._ticker_due = due
            self._wake.set()

    def forget_client(self, client: Hashable) -> None:
        """``client`` went away: its channels, lock and outstanding request are dropped."""
        with self._lock:
            self._emit(self._core.forget_client(client, self._clock()))

    def power_cycle(self, *, keep_channels: bool = False) -> None:
        """Unplug and re-plug: drop channels (unless ``keep_channels``), cancel the request,
        tell the handler."""
        with self._lock:
            self._emit(self._core.reset(keep_channels=keep_channels))
        try:
            self._handler.power_cycle()
        except Exception:
            self._log.exception("ctaphid: handler.power_cycle failed")

    def cancel_current(self) -> None:
        """Cancel the request being handled, if any (its transport is stopping: a request
        waiting for the user would otherwise hold the thread that answers it)."""
        with self._lock:
            if self._current is not None:
                self._current.cancel()

    def close(self) -> None:
        """Stop the threads (a handler still running is cancelled and abandoned). Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            if self._current is not None:
                self._current.cancel()
        self._requests.put(None)
        self._wake.set()
        for thread in (self._worker, self._ticker):
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)

    # -- internals --------------------------------------------------------------------------

    def _trace(self, report: bytes) -> None:
        if not self._log.isEnabledFor(logging.DEBUG) or len(report) < 7:
            return
        if report[4] & TYPE_INIT:
            channel = int.from_bytes(report[:4], "big")
            length = int.from_bytes(report[5:7], "big")
            name = _command_name(report[4] & ~TYPE_INIT)
            self._log.debug("ctaphid: %s on channel 0x%08x, %d bytes", name, channel, length)

    def _observe(self, direction: str, report: bytes) -> None:
        observer = self.packet_observer
        if observer is None:
            return
        try:
            observer(direction, report)
        except Exception:
            self._log.exception("ctaphid: packet observer failed")

    def _send(self, reports: Sequence[bytes]) -> None:
        """Send reports (lock held). A failing transport is logged, never raised."""
        for report in reports:
            self._observe("out", report)
            try:
                self._send_report(report)
            except Exception:
                self._log.exception("ctaphid: sending a report failed")
                return

    def _emit(self, outputs: Sequence[Output]) -> None:
        """Carry out the core's outputs in order (lock held)."""
        for item in outputs:
            if isinstance(item, bytes):
                if item[4] == TYPE_INIT | Command.ERROR:
                    self._log.debug(
                        "ctaphid: error 0x%02x on channel 0x%s", item[7], item[:4].hex()
                    )
                self._send([item])
            elif isinstance(item, Request):
                # A request that takes the place of a discarded one still unwinding (a
                # re-INIT, a power cycle) goes to the worker: run inline, it would wait for
                # the old handler on the thread that reads the reports (a CANCEL for it,
                # other keys of the process), for as long as that handler takes to return.
                inline = (
                    self._feeding
                    and self._deferred is None
                    and self._current is None
                    and not self._core.unwinding  # a third request, the old still running
                )
                transaction = HidTransaction(
                    item.channel,
                    item.transaction,
                    self._status_changed,
                    before_wait=self._before_wait if inline else None,
                )
                self._current = transaction
                self._next_keepalive = self._clock() + self._interval
                if inline:
                    self._deferred = (item, transaction)  # feed() returns it as a job
                else:
                    self._requests.put((item, transaction))
            elif isinstance(item, Cancel):
                current = self._current
                if current is not None and current.transaction == item.transaction:
                    self._log.debug("ctaphid: cancel on channel 0x%08x", item.channel)
                    current.cancel()
            elif isinstance(item, Wink):
                try:
                    self._handler.wink()
                except Exception:
                    self._log.exception("ctaphid: handler.wink failed")
            elif isinstance(item, Lock):
                self._log.debug("ctaphid: lock 0x%08x for %d s", item.channel, item.seconds)

    def _status_changed(self, transaction: HidTransaction) -> None:
        """The handler changed the keepalive status: tell the host now, if the request is
        still outstanding (never after its response)."""
        with self._lock:
            if self._current is not transaction or self._closed.is_set():
                return
            self._send(self._core.keepalive(transaction.transaction, transaction.keepalive_status))
            self._next_keepalive = self._clock() + self._interval

    def _work(self) -> None:
        while True:
            job = self._requests.get()
            if job is None:
                return
            self._serve(*job)

    def _serve(self, request: Request, transaction: HidTransaction) -> None:
        """Answer one request: the handler, then the response's reports."""
        payload = self._call_handler(request, transaction)
        with self._lock:
            if self._current is transaction:
                self._current = None
            self._send(self._core.respond(request.transaction, payload))

    def _call_handler(self, request: Request, transaction: HidTransaction) -> bytes:
        is_cbor = request.command == Command.CBOR
        try:
            if is_cbor:
                result = self._handler.handle_cbor(request.payload, transaction)
            else:
                result = self._handler.handle_msg(request.payload, transaction)
            if not isinstance(result, bytes | bytearray):
                raise TypeError(f"handler returned {type(result).__name__}, not bytes")
            return bytes(result)
        except Exception:
            self._log.exception(
                "ctaphid: handler failed on a %s request", "CBOR" if is_cbor else "MSG"
            )
            return CTAP2_ERR_OTHER if is_cbor else SW_UNKNOWN_ERROR

    def _tick(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                now = self._clock()
                self._emit(self._core.tick(now))
                current = self._current
                if current is not None and now >= self._next_keepalive:
                    self._send(self._core.keepalive(current.transaction, current.keepalive_status))
                    self._next_keepalive = now + self._interval
                deadlines = [d for d in (self._core.next_deadline(),) if d is not None]
                if current is not None:
                    deadlines.append(self._next_keepalive)
                if now - self._last_report < ACTIVE_LINGER:
                    deadlines.append(now + self._interval)  # the beat: see the docstring
                self._ticker_due = min(deadlines) if deadlines else None
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            self._wake.wait(timeout)
            self._wake.clear()
