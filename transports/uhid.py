"""Linux UHID transport: the key appears to the kernel as a USB HID device (/dev/hidrawN).

The kernel's user-space HID driver (``/dev/uhid``, ``include/uapi/linux/uhid.h``) lets a
process create a HID device and exchange reports with it. Browsers and libfido2 then find
the key exactly like a plugged-in USB security key: a hidraw node whose report descriptor
has the FIDO usage page 0xF1D0.

Every message on ``/dev/uhid`` is one ``struct uhid_event`` (a packed ``__u32 type`` and a
union whose size, rounded up to the union's 8-byte alignment, is 4376 bytes). The structs are
packed here by hand with :mod:`struct`:

* ``UHID_CREATE2``: name[128] phys[64] uniq[64] rd_size:u16 bus:u16 vendor:u32 product:u32
  version:u32 country:u32 rd_data[4096]
* ``UHID_INPUT2`` (device -> host report): size:u16 data[4096]
* ``UHID_OUTPUT`` (host -> device report): data[4096] size:u16 rtype:u8
* ``UHID_GET_REPORT``/``UHID_SET_REPORT``: id:u32 rnum:u8 rtype:u8 [...]; we answer both with
  an error, a FIDO key has no feature reports.

CTAPHID itself (channels, fragmentation, keepalives, cancel) is done by
:class:`vfido.transports.runner.HidRunner`; this module only moves 64-byte reports.
Threads: one reads the events and answers a request it completes right there (no hand-off
to the runner's worker); only when a handler is about to wait (for the user, or a CANCEL)
does a helper thread take over the reading until that request is answered.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final

from vfido.transports.handler import CtapHandler

if TYPE_CHECKING:
    from vfido.transports.runner import HidRunner

log = logging.getLogger(__name__)

REPORT_SIZE: Final = 64
UHID_DATA_MAX: Final = 4096
HID_MAX_DESCRIPTOR_SIZE: Final = 4096
# sizeof(struct uhid_event): 4 (type) + 4376 (the union: its largest member, create2, is
# 4372 bytes; the union holds a __u64 so it is padded to a multiple of 8).
UHID_EVENT_SIZE: Final = 4380
BUS_USB: Final = 0x03
EIO_ERR: Final = errno.EIO

#: hidraw keeps at most 64 unread reports per open file (HIDRAW_BUFFER_SIZE, drivers/hid/
#: hidraw.c) and silently drops what comes on top, so a reader that falls a little behind a
#: burst of more than 64 reports loses part of the message (Chromium then gives up on the key
#: after its 3 s HID timeout). A USB key cannot burst like that: the host polls it, at most one
#: report per millisecond at full speed. Long messages (an ML-DSA-65 makeCredential response
#: is 94 reports, a 7609-byte message 129) are paced the same way: continuation packets from
#: sequence number PACED_FROM_SEQ on are written REPORT_INTERVAL after the previous report.
PACED_FROM_SEQ: Final = 16
REPORT_INTERVAL: Final = 0.001

DEFAULT_NAME: Final = "vfido virtual FIDO2 key"
DEFAULT_VENDOR_ID: Final = 0x1209  # pid.codes open-source vendor id
DEFAULT_PRODUCT_ID: Final = 0x0001
DEFAULT_SERIAL: Final = "vfido-0001"
SYSFS_UHID_DIR: Final = Path("/sys/devices/virtual/misc/uhid")

# FIDO Alliance HID report descriptor (CTAP 2.1 section 11.2.8.1): usage page 0xF1D0,
# usage 0x01 (CTAPHID), one 64-byte input report (usage 0x20) and one 64-byte output
# report (usage 0x21), no report ids.
FIDO_REPORT_DESCRIPTOR: Final = bytes(
    [
        0x06, 0xD0, 0xF1,  # Usage Page (FIDO Alliance, 0xF1D0)
        0x09, 0x01,  # Usage (CTAPHID)
        0xA1, 0x01,  # Collection (Application)
        0x09, 0x20,  # Usage (Input Report Data)
        0x15, 0x00,  # Logical Minimum (0)
        0x26, 0xFF, 0x00,  # Logical Maximum (255)
        0x75, 0x08,  # Report Size (8)
        0x95, REPORT_SIZE,  # Report Count (64)
        0x81, 0x02,  # Input (Data, Variable, Absolute)
        0x09, 0x21,  # Usage (Output Report Data)
        0x15, 0x00,  # Logical Minimum (0)
        0x26, 0xFF, 0x00,  # Logical Maximum (255)
        0x75, 0x08,  # Report Size (8)
        0x95, REPORT_SIZE,  # Report Count (64)
        0x91, 0x02,  # Output (Data, Variable, Absolute)
        0xC0,  # End Collection
    ]
)  # fmt: skip


class UhidEventType(IntEnum):
    """``enum uhid_event_type`` (legacy values kept so the numbering is visible)."""

    LEGACY_CREATE = 0
    DESTROY = 1
    START = 2
    STOP = 3
    OPEN = 4
    CLOSE = 5
    OUTPUT = 6
    LEGACY_OUTPUT_EV = 7
    LEGACY_INPUT = 8
    GET_REPORT = 9
    GET_REPORT_REPLY = 10
    CREATE2 = 11
    INPUT2 = 12
    SET_REPORT = 13
    SET_REPORT_REPLY = 14


class UhidUnavailableError(RuntimeError):
    """``/dev/uhid`` cannot be used; the message says what to do about it."""


def uhid_unavailable(path: str = "/dev/uhid") -> str | None:
    """Why a UHID device cannot be created through ``path`` (one line), or None if it can.

    Opens ``path`` read-write and closes it again (no device is created by that)."""
    if not os.path.exists(path):
        return (
            f"{path} does not exist: the kernel's uhid module is not loaded (`sudo modprobe "
            "uhid`) or this machine (container, CI runner) has no UHID"
        )
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
    except PermissionError:
        return (
            f"{path} is not readable and writable by this user: install vfido's udev rule "
            "(`sudo vfido install-udev --user $USER`, then log in again)"
        )
    except OSError as exc:
        return f"cannot open {path}: {exc.strerror or exc}"
    return None


def _fixed(text: str, size: int, what: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) >= size:
        raise ValueError(f"{what} must be shorter than {size} bytes")
    return raw.ljust(size, b"\0")


def _event(kind: UhidEventType, body: bytes = b"") -> bytes:
    """A whole ``struct uhid_event``: type, then the union member, zero padded."""
    if len(body) > UHID_EVENT_SIZE - 4:
        raise ValueError("uhid event body too large")
    return struct.pack("<I", kind) + body.ljust(UHID_EVENT_SIZE - 4, b"\0")


def encode_create2(
    *,
    name: str,
    phys: str,
    uniq: str,
    vendor_id: int,
    product_id: int,
    version: int = 0,
    country: int = 0,
    descriptor: bytes = FIDO_REPORT_DESCRIPTOR,
) -> bytes:
    """``UHID_CREATE2`` event bytes."""
    if len(descriptor) > HID_MAX_DESCRIPTOR_SIZE:
        raise ValueError("report descriptor too large")
    body = (
        _fixed(name, 128, "name")
        + _fixed(phys, 64, "phys")
        + _fixed(uniq, 64, "uniq")
        + struct.pack("<HHIIII", len(descriptor), BUS_USB, vendor_id, product_id, version, country)
        + descriptor.ljust(HID_MAX_DESCRIPTOR_SIZE, b"\0")
    )
    return _event(UhidEventType.CREATE2, body)


def report_delay(report: bytes) -> float:
    """Seconds to wait before writing ``report`` to the host (see :data:`REPORT_INTERVAL`)."""
    if len(report) > 4 and not report[4] & 0x80 and report[4] >= PACED_FROM_SEQ:
        return REPORT_INTERVAL
    return 0.0


def encode_input2(report: bytes) -> bytes:
    """``UHID_INPUT2`` event bytes carrying one report to the host."""
    if len(report) > UHID_DATA_MAX:
        raise ValueError("report too large")
    return _event(UhidEventType.INPUT2, struct.pack("<H", len(report)) + report)


def decode_output(body: bytes) -> tuple[bytes, int]:
    """The data and report type of a ``UHID_OUTPUT`` event body (after the type field)."""
    size, rtype = struct.unpack_from("<HB", body, UHID_DATA_MAX)
    return body[: min(size, UHID_DATA_MAX)], rtype


def output_to_packet(data: bytes) -> bytes | None:
    """The 64-byte CTAPHID packet in an OUTPUT report, or None if it is not one.

    A hidraw write of an unnumbered report is ``0x00`` (report id) + 64 bytes, and the
    kernel hands all 65 bytes to uhid; a 64-byte write (no report id byte) is accepted too.
    A shorter write loses its leading ``0x00`` (the report id, as usbhid strips it for a
    USB key) and is padded: kept, it shifted the channel ID by a byte (a review).
    """
    if len(data) == REPORT_SIZE + 1 and data[0] == 0:
        return data[1:]
    if len(data) == REPORT_SIZE:
        return data
    if 0 < len(data) < REPORT_SIZE:
        return (data[1:] if data[0] == 0 else data).ljust(REPORT_SIZE, b"\0")
    return None


#: The HID "phys" of every vfido device names the uid of the process that created it:
#: udev/70-vfido.rules matches it (only vfido's devices) and gives that user the hidraw node.
OWNER_PHYS_PREFIX: Final = "vfido-uid/"


def owner_phys(uid: int) -> str:
    """The HID ``phys`` of a device created by ``uid`` (``vfido-uid/1000``)."""
    return f"{OWNER_PHYS_PREFIX}{uid}"


def validate_serial(serial: str) -> str:
    if not serial or len(serial) > 63 or not all(0x21 <= ord(c) <= 0x7E for c in serial):
        raise ValueError("serial must be 1-63 printable ASCII characters without spaces")
    return serial


def find_hidraw(serial: str, sysfs_dir: Path = SYSFS_UHID_DIR) -> str | None:
    """``/dev/hidrawN`` of the uhid device whose ``HID_UNIQ`` is ``serial``, if any."""
    try:
        devices = sorted(sysfs_dir.iterdir())
    except OSError:
        return None
    for device in devices:
        try:
            uevent = (device / "uevent").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if f"HID_UNIQ={serial}" not in uevent.splitlines():
            continue
        try:
            nodes = sorted(p.name for p in (device / "hidraw").iterdir())
        except OSError:
            continue
        for node in nodes:
            if node.startswith("hidraw"):
                return f"/dev/{node}"
    return None


class UhidTransport:
    """Serve a :class:`CtapHandler` as a HID device through ``/dev/uhid``.

    ``start()`` creates the device and serves it on a background thread; ``serve_forever()``
    does the same on the calling thread until ``stop()``. Several transports can run at once,
    each with its own ``serial`` (it becomes the HID ``uniq``, which is how
    :meth:`hidraw_path` finds the device's node).
    """

    def __init__(
        self,
        handler: CtapHandler,
        *,
        name: str = DEFAULT_NAME,
        serial: str = DEFAULT_SERIAL,
        vendor_id: int = DEFAULT_VENDOR_ID,
        product_id: int = DEFAULT_PRODUCT_ID,
        path: str = "/dev/uhid",
        packet_observer: Callable[[str, bytes], None] | None = None,
    ) -> None:
        _fixed(name, 128, "name")
        self._packet_observer = packet_observer  # see HidRunner.packet_observer
        if not (0 <= vendor_id <= 0xFFFF and 0 <= product_id <= 0xFFFF):
            raise ValueError("vendor_id and product_id must be 16-bit")
        self._handler = handler
        self._name = name
        self._serial = validate_serial(serial)
        self._vendor_id = vendor_id
        self._product_id = product_id
        self._path = path
        self._fd: int | None = None
        self._runner: HidRunner | None = None
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._wake_fds: tuple[int, ...] = (self._wake_r, self._wake_w)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: int | None = None  # ident of the thread reading events now
        self._helpers: list[threading.Thread] = []  # readers while a handler waits
        self._started = threading.Event()  # UHID_START seen
        self._open_count = 0
        self._failure: str | None = None
        self._dropping = False  # the last report's write failed (warned once per streak)

    def __repr__(self) -> str:
        return f"UhidTransport(serial={self._serial!r}, path={self._path!r})"

    @property
    def serial(self) -> str:
        return self._serial

    @property
    def failure(self) -> str | None:
        """Why the device is no longer served although nobody stopped it (reading
        ``/dev/uhid`` failed: the hidraw node would stay, with nobody answering it), else
        None. ``vfido run`` then exits with an error, and its service is restarted."""
        return self._failure

    # -- life cycle -------------------------------------------------------------------------

    def _create(self) -> None:
        with self._state_lock:
            if self._fd is not None:
                return
            if self._stopping.is_set():
                raise RuntimeError("transport was stopped")
            from vfido.transports.runner import HidRunner

            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                raise UhidUnavailableError(
                    f"{self._path} does not exist: the kernel's uhid module is not loaded "
                    "(`sudo modprobe uhid`; udev/modules-load.d/vfido.conf loads it at boot), "
                    "or this kernel or container has no UHID (`vfido doctor` tells which)"
                ) from None
            except PermissionError:
                raise UhidUnavailableError(
                    f"permission denied opening {self._path}: install the udev rule with "
                    "`vfido install-udev` (then log in again or re-plug with "
                    "`sudo udevadm trigger`), or run as a user allowed to open it."
                ) from None
            except OSError as exc:
                raise UhidUnavailableError(f"cannot open {self._path}: {exc}") from exc
            try:
                os.write(
                    fd,
                    encode_create2(
                        name=self._name,
                        phys=owner_phys(os.getuid()),
                        uniq=self._serial,
                        vendor_id=self._vendor_id,
                        product_id=self._product_id,
                    ),
                )
            except OSError as exc:
                os.close(fd)
                raise UhidUnavailableError(
                    f"the kernel refused to create the HID device: {exc}"
                ) from exc
            self._fd = fd
            self._runner = HidRunner(
                self._handler,
                self._send_report,
                packet_observer=self._packet_observer,
                inline_requests=True,  # answered on the reading thread: see _read_events
                before_wait=self._hand_over,
            )
            log.info("uhid device %r created", self._serial)

    def start(self) -> None:
        """Create the device now and serve it on a background thread."""
        self._create()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name=f"uhid-{self._serial}", daemon=True
            )
            self._thread.start()

    def serve_forever(self) -> None:
        """Create the device (if needed) and serve it until :meth:`stop`."""
        self._create()
        try:
            self._loop()
        finally:
            self._close_wake_pipe()

    def stop(self) -> None:
        """Destroy the HID device (``UHID_DESTROY``) and stop serving. Idempotent."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        # A request answered on the reading thread and waiting for the user would hold that
        # thread past the join below (5 s), and UHID_DESTROY with it (a review): cancelled.
        with self._state_lock:
            runner = self._runner
        if runner is not None:
            runner.cancel_current()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
            if not thread.is_alive():
                self._close_wake_pipe()
        self._teardown()

    def _close_wake_pipe(self) -> None:
        with self._state_lock:
            fds, self._wake_fds = self._wake_fds, ()
        for wake_fd in fds:
            os.close(wake_fd)

    def _teardown(self) -> None:
        with self._state_lock:
            runner, self._runner = self._runner, None
            fd, self._fd = self._fd, None
        if runner is not None:
            runner.close()
        if fd is not None:
            with self._write_lock:
                try:
                    os.write(fd, _event(UhidEventType.DESTROY))
                except OSError as exc:
                    log.debug("UHID_DESTROY failed: %s", exc)
                os.close(fd)
            log.info("uhid device %r destroyed", self._serial)

    def hidraw_path(self) -> str | None:
        """``/dev/hidrawN`` of this device once the kernel has created it, else None."""
        if self._fd is None:
            return None
        return find_hidraw(self._serial)

    # -- I/O --------------------------------------------------------------------------------

    def _send_report(self, report: bytes) -> None:
        """Called by the runner (from its threads) with one 64-byte report for the host."""
        fd = self._fd
        if fd is None:
            return
        delay = report_delay(report)
        if delay:
            time.sleep(delay)
        with self._write_lock:
            if self._fd is None:
                return
            try:
                os.write(fd, encode_input2(report))
            except OSError as exc:
                # Once per streak: a device the kernel failed to add fails every write (a
                # review: one warning per report). The end of the streak is said too.
                log.log(
                    logging.DEBUG if self._dropping else logging.WARNING,
                    "uhid: dropping reports to the host: %s",
                    exc,
                )
                self._dropping = True
            else:
                if self._dropping:
                    self._dropping = False
                    log.warning("uhid: reports reach the host again")

    def _loop(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            if self._read_events(fd):  # handed over: helpers read until stop()
                self._stopping.wait()
            with self._state_lock:
                helpers = list(self._helpers)
            for helper in helpers:
                helper.join(timeout=5.0)
        finally:
            if threading.current_thread() is not self._thread:
                # serve_forever() on the caller's thread: clean up here.
                self._teardown()

    def _read_events(self, fd: int) -> bool:
        """Read and dispatch events; a request is answered here, on the reading thread (no
        hand-off to a worker). Returns False when stopping, True once this thread handed
        the reading over (its handler waited, see :meth:`_hand_over`) and answered."""
        me = threading.get_ident()
        self._reader = me
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping.is_set():
            ready = {f for f, _ in poller.poll()}
            if self._wake_r in ready or self._stopping.is_set():
                break
            if fd not in ready:
                continue
            try:
                event = os.read(fd, UHID_EVENT_SIZE)
            except InterruptedError:
                continue
            except BlockingIOError:
                continue
            except OSError as exc:
                if not self._stopping.is_set():
                    self._failure = f"reading {self._path} failed: {exc.strerror or exc}"
                    log.error("uhid: %s", self._failure)
                break
            job = self._dispatch(fd, event)
            if job is not None:
                job()  # may call _hand_over
                if self._reader != me:
                    return True
        return False

    def _hand_over(self) -> None:
        """The runner's ``before_wait``: the handler on this reading thread is about to wait
        (for the user or a CANCEL), so a helper thread reads events meanwhile."""
        if self._reader != threading.get_ident() or self._stopping.is_set():
            return
        fd = self._fd
        if fd is None:
            return
        self._reader = None
        helper = threading.Thread(
            target=self._help, args=(fd,), name=f"uhid-{self._serial}-reader", daemon=True
        )
        with self._state_lock:
            self._helpers = [t for t in self._helpers if t.is_alive()] + [helper]
        try:
            helper.start()
        except RuntimeError as exc:
            # No thread to be had: this one reads again once the request is answered (no
            # CANCEL is seen meanwhile), rather than nobody ever again.
            log.error("uhid: no thread to read while a request waits: %s", exc)
            with self._state_lock:
                self._helpers.remove(helper)
            self._reader = threading.get_ident()

    def _help(self, fd: int) -> None:
        self._read_events(fd)

    def _dispatch(self, fd: int, event: bytes) -> Callable[[], None] | None:
        """One UHID event; returns the job answering a request it completed (if any)."""
        if len(event) < 4:
            return None
        (kind,) = struct.unpack_from("<I", event)
        body = event[4:]
        if kind == UhidEventType.OUTPUT:
            if len(body) < UHID_DATA_MAX + 3:
                log.warning("uhid: short OUTPUT event (%d bytes)", len(event))
                return None
            data, _rtype = decode_output(body)
            packet = output_to_packet(data)
            runner = self._runner
            if packet is None:
                log.warning("uhid: ignoring an output report of %d bytes", len(data))
            elif runner is not None:
                return runner.feed(packet)
        elif kind == UhidEventType.START:
            self._started.set()
            log.debug("uhid: START")
        elif kind == UhidEventType.STOP:
            self._started.clear()
            log.debug("uhid: STOP")
        elif kind == UhidEventType.OPEN:
            self._open_count += 1
            log.debug("uhid: OPEN")
        elif kind == UhidEventType.CLOSE:
            self._open_count = max(0, self._open_count - 1)
            log.debug("uhid: CLOSE")
        elif kind == UhidEventType.GET_REPORT:
            (request_id,) = struct.unpack_from("<I", body)
            self._reply(
                fd, UhidEventType.GET_REPORT_REPLY, struct.pack("<IHH", request_id, EIO_ERR, 0)
            )
        elif kind == UhidEventType.SET_REPORT:
            (request_id,) = struct.unpack_from("<I", body)
            self._reply(fd, UhidEventType.SET_REPORT_REPLY, struct.pack("<IH", request_id, EIO_ERR))
        else:
            log.debug("uhid: ignoring event type %d", kind)
        return None

    def _reply(self, fd: int, kind: UhidEventType, body: bytes) -> None:
        with self._write_lock:
            try:
                os.write(fd, _event(kind, body))
            except OSError as exc:
                log.warning("uhid: reply %s failed: %s", kind.name, exc)
