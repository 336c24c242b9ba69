"""An in-process "USB bus": python-fido2's own CTAPHID client code talking to our CTAPHID device.

:func:`open_device` returns a :class:`fido2.hid.CtapHidDevice` whose connection feeds a
:class:`~vfido.transports.runner.HidRunner`, so tests exercise the real framing (CTAP 2.1
section 11.2) without a kernel. :class:`InProcessKey` can hand out several connections to the
same key, like several applications opening one hidraw node; each connection only sees the
reports for the channels it used (and broadcast INIT responses carrying its own nonce).
"""

from __future__ import annotations

import logging
import queue
import threading

from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection

from vfido.transports.ctaphid import HostChannelFilter
from vfido.transports.descriptor import simulated_descriptor
from vfido.transports.handler import CtapHandler
from vfido.transports.runner import HidRunner

READ_TIMEOUT = 60.0


class InProcessKey:
    """A virtual key (one :class:`HidRunner`) that any number of connections can open."""

    def __init__(
        self,
        handler: CtapHandler,
        *,
        serial: str = "vfido-inprocess",
        read_timeout: float = READ_TIMEOUT,
        logger: logging.Logger | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._connections: list[InProcessConnection] = []
        self._read_timeout = read_timeout
        self.descriptor = simulated_descriptor(f"inprocess:{serial}", serial_number=serial)
        self.runner = HidRunner(handler, self._deliver, logger=logger)

    def connect(self, *, owns_key: bool = False) -> InProcessConnection:
        """A new connection ("open the hidraw node"). ``owns_key``: closing it closes the key."""
        connection = InProcessConnection(self, self._read_timeout, owns_key=owns_key)
        with self._lock:
            self._connections.append(connection)
        return connection

    def open(self) -> CtapHidDevice:
        """A python-fido2 device on a new connection (sends CTAPHID_INIT on broadcast)."""
        return CtapHidDevice(self.descriptor, self.connect())

    def power_cycle(self) -> None:
        self.runner.power_cycle()

    def close(self) -> None:
        self.runner.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()

    def _detach(self, connection: InProcessConnection) -> None:
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)

    def _deliver(self, report: bytes) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection._offer(report)


class InProcessConnection(CtapHidConnection):
    """One open "device node" of an :class:`InProcessKey`."""

    def __init__(self, key: InProcessKey, read_timeout: float, *, owns_key: bool = False) -> None:
        self._key = key
        self._timeout = read_timeout
        self._owns_key = owns_key
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._lock = threading.Lock()
        self._filter = HostChannelFilter()
        self._closed = False

    def write_packet(self, data: bytes) -> None:
        if self._closed:
            raise OSError("connection closed")
        report = bytes(data)
        with self._lock:
            self._filter.note_sent(report)
        self._key.runner.feed(report)

    def read_packet(self) -> bytes:
        try:
            report = self._inbox.get(timeout=self._timeout)
        except queue.Empty:
            raise TimeoutError(f"no report from the key within {self._timeout} s") from None
        if report is None:
            raise OSError("connection closed")
        return report

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put(None)
        self._key._detach(self)
        if self._owns_key:
            self._key.close()

    def _offer(self, report: bytes) -> None:
        """Queue ``report`` if it belongs to this connection's conversation."""
        with self._lock:
            if not self._filter.wants(report):
                return
        self._inbox.put(report)


def open_device(handler: CtapHandler) -> CtapHidDevice:
    """A python-fido2 device backed by ``handler``; ``device.close()`` stops the key."""
    key = InProcessKey(handler)
    try:
        return CtapHidDevice(key.descriptor, key.connect(owns_key=True))
    except BaseException:
        key.close()
        raise
