"""A sans-IO CTAPHID device core (CTAP 2.1 section 11.2, "USB Human Interface Device (USB HID)").

:class:`CtapHidCore` is a pure state machine: it is fed 64-byte reports from the host together
with the current (monotonic) time and returns what should happen next, as a list of
:data:`Output` items in order:

* ``bytes``: one 64-byte report to send to the host;
* :class:`Request`: a complete CTAPHID_MSG / CTAPHID_CBOR message to hand to the authenticator.
  Answer it later with :meth:`CtapHidCore.respond` (until then the device is busy);
* :class:`Cancel`: the outstanding request should stop (CTAPHID_CANCEL, re-INIT, power cycle);
* :class:`Wink`: CTAPHID_WINK arrived (the empty response follows it in the same list);
* :class:`Lock`: CTAPHID_LOCK changed the channel lock (informational).

It owns no threads, sockets or clocks; :mod:`vfido.transports.runner` adds those.

Deliberate choices where the specification leaves room:

* CTAPHID_INIT is answered even while another channel's transaction is in progress (it does not
  disturb that transaction), so a new client can always synchronise; only a CTAPHID_LOCK held by
  another channel makes it fail with ERR_CHANNEL_BUSY.
* A re-INIT of the channel whose request is being processed discards that request (its response
  is dropped), and so does a power cycle. The device is then "ready for a new transaction"
  (section 11.2.9.1.3) at once: the next request is taken while the discarded one's handler
  unwinds, and handed to the authenticator, which answers it once the old one has returned
  (it was CHANNEL_BUSY for that while, 6-51 ms: python-fido2 failed on it). One discarded
  request may unwind at a time: until it has, the device is busy as before.
* The channel table is bounded; the least recently used idle channel is forgotten first.

Clients (where the transport can tell them apart). :meth:`CtapHidCore.feed` takes the
transport's identity of the client that sent the report (a UDP source address, a Unix-socket
connection); ``None`` means "cannot tell", and all such reports form one client (UHID: the
kernel merges every process that opened the hidraw node; the in-process bus). Then:

* a channel belongs to the client whose broadcast INIT allocated it; another client's reports
  on it are answered ERR_INVALID_CHANNEL, as for a channel that does not exist;
* each identified client holds at most ``max_channels_per_client`` channels (allocating more
  forgets its own least recently used one), and a full table forgets the least recently used
  idle channel of the client holding the most, so one client allocating channels in a loop
  cannot evict another's (a client with one channel goes only when the table holds as many
  clients as channels: cheap for a local attacker with many UDP source ports, who can use a
  UDP key anyway);
* CTAPHID_LOCK: section 11.2.9.2.2 lets a lock last "up to 10 seconds" and says "An
  application requiring a longer lock has to send repeating lock commands to maintain the
  lock". While nobody else asks for the key, that is what happens. Once another channel has
  been refused because of the lock, re-LOCKs extend it to at most :data:`MAX_LOCK_SECONDS`
  after that refusal, and when the lock ends its holder's next LOCK is refused with
  ERR_CHANNEL_BUSY for as long as it held the lock (at most 10 s): a client re-LOCKing in a
  loop keeps others waiting 10 s at most, and then for no more than half the time. Without
  client identities (UHID, in-process) the cool-down binds the channel that held the lock,
  so a client can LOCK again from a new channel; likewise a client that can take a new
  identity (a new Unix connection, a new UDP source port) starts afresh. Who can do that is
  bounded by the transport's own access check (UHID: whoever may open the hidraw node; Unix:
  the key's user only; UDP: every local user).
* a message arriving slowly: each continuation packet must come within MESSAGE_TIMEOUT of
  the previous one, and the whole message within :data:`MAX_MESSAGE_TIME` of its first
  packet (ERR_MSG_TIMEOUT). However a message ends (whole, timed out, cut off), if other
  channels were refused while it came and had been refused before (clients that try again:
  python-fido2 does, every 100 ms), for :data:`RESERVATION_TIME` only they may start a
  multi-packet message or LOCK (until one does): not its sender, under whatever identity
  it comes back. A channel refused once and not again reserves nothing (libfido2 gives up
  on ERR_CHANNEL_BUSY: holding the sender's next message for it would only fail that too).
  This is a mitigation, not a guarantee. A client the transport lets in can
  always keep the key busy: a request waiting for a touch holds it for the presence
  timeout, and several identities can take the reserved turns; a client that opens a new
  channel for every try is reserved nothing. Who may do that is the transport's access
  check (UHID: the seat; Unix: the owner; UDP: every local user, which is why a keystore
  over UDP needs its own flag).

Every report a client should receive is a :class:`Report` naming it (``report.client``), so a
transport serving several clients knows where to send it; with ``client=None`` reports are
plain ``bytes``.
"""

from __future__ import annotations

import os
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Final

REPORT_SIZE: Final = 64
INIT_DATA_SIZE: Final = REPORT_SIZE - 7  # CID(4) CMD(1) BCNT(2)
CONT_DATA_SIZE: Final = REPORT_SIZE - 5  # CID(4) SEQ(1)
MAX_CONTINUATION_PACKETS: Final = 128  # SEQ 0..127 (section 11.2.4)
MAX_MESSAGE_SIZE: Final = INIT_DATA_SIZE + MAX_CONTINUATION_PACKETS * CONT_DATA_SIZE  # 7609
BROADCAST_CID: Final = 0xFFFFFFFF
RESERVED_CID: Final = 0
TYPE_INIT: Final = 0x80
PROTOCOL_VERSION: Final = 2  # CTAPHID protocol version (section 11.2.9.1.3)
MESSAGE_TIMEOUT: Final = 0.5  # seconds between packets of one message
#: Seconds from a message's first packet to its last, however fast the packets come (a
#: 7609-byte message is 129 reports: a few hundred milliseconds even in a slow VM).
MAX_MESSAGE_TIME: Final = 3.0
#: After a message ended while other channels were refused (a second time), how long only
#: those may start a multi-packet message or LOCK (time for a refused client to try again);
#: also how far apart two refusals of one channel may be to count as its trying again.
RESERVATION_TIME: Final = 2.0
MAX_LOCK_SECONDS: Final = 10  # section 11.2.9.2.2
INIT_NONCE_SIZE: Final = 8
DEFAULT_MAX_CHANNELS: Final = 128
DEFAULT_MAX_CHANNELS_PER_CLIENT: Final = 32


class Command(IntEnum):
    """CTAPHID command codes (section 11.2.9), without the TYPE_INIT bit."""

    PING = 0x01
    MSG = 0x03
    LOCK = 0x04
    INIT = 0x06
    WINK = 0x08
    CBOR = 0x10
    CANCEL = 0x11
    KEEPALIVE = 0x3B
    ERROR = 0x3F


class HidError(IntEnum):
    """CTAPHID_ERROR codes (section 11.2.9.1.6)."""

    INVALID_CMD = 0x01
    INVALID_PAR = 0x02
    INVALID_LEN = 0x03
    INVALID_SEQ = 0x04
    MSG_TIMEOUT = 0x05
    CHANNEL_BUSY = 0x06
    LOCK_REQUIRED = 0x0A
    INVALID_CHANNEL = 0x0B
    OTHER = 0x7F


class Capability(IntFlag):
    """CTAPHID_INIT capability flags (section 11.2.9.1.3)."""

    WINK = 0x01
    CBOR = 0x04
    NMSG = 0x08


@dataclass(frozen=True)
class Request:
    """A complete MSG or CBOR message; answer with :meth:`CtapHidCore.respond` (``transaction``)."""

    channel: int
    command: Command
    payload: bytes = field(repr=False)
    transaction: int


@dataclass(frozen=True)
class Cancel:
    """The outstanding request ``transaction`` should stop as soon as possible."""

    channel: int
    transaction: int


@dataclass(frozen=True)
class Wink:
    channel: int


@dataclass(frozen=True)
class Lock:
    """``channel`` now holds the lock for ``seconds`` (0: released)."""

    channel: int
    seconds: int


class Report(bytes):
    """A report for one identified client (``client``, as the transport gave it to
    :meth:`CtapHidCore.feed`)."""

    client: Hashable


def _to(client: Hashable, report: bytes) -> bytes:
    """``report`` addressed to ``client`` (a :class:`Report`; unchanged for ``None``)."""
    if client is None:
        return report
    addressed = Report(report)
    addressed.client = client
    return addressed


def _addressed(outputs: Sequence[Output], client: Hashable) -> list[Output]:
    """``outputs`` with every report addressed to ``client``."""
    return [_to(client, item) if isinstance(item, bytes) else item for item in outputs]


@dataclass(frozen=True)
class _AnonymousChannel:
    """The LOCK cool-down key of a channel whose client the transport cannot tell."""

    channel: int | None


def _holder(client: Hashable, channel: int | None) -> Hashable:
    """Who a LOCK cool-down binds: the client, or the channel if the client is unknown."""
    return _AnonymousChannel(channel) if client is None else client


Event = Request | Cancel | Wink | Lock
Output = bytes | Event


_HEADER = struct.Struct(">IB")
_COMMANDS = {int(c): c for c in Command}
_SEQ_BYTES = tuple(bytes([seq]) for seq in range(MAX_CONTINUATION_PACKETS))


def encode_message(channel: int, command: int, payload: bytes) -> list[bytes]:
    """Split one message into an init packet and continuation packets (section 11.2.4)."""
    size = len(payload)
    if size > MAX_MESSAGE_SIZE:
        raise ValueError("message too long for CTAPHID")
    head = struct.pack(">IBH", channel, TYPE_INIT | command, size)
    if size <= INIT_DATA_SIZE:
        return [head + payload + bytes(INIT_DATA_SIZE - size)]
    count = -(-(size - INIT_DATA_SIZE) // CONT_DATA_SIZE)
    # Pad once, then every report is a slice of the same length.
    padded = bytes(payload) + bytes(INIT_DATA_SIZE + count * CONT_DATA_SIZE - size)
    cid = channel.to_bytes(4, "big")
    reports = [head + padded[:INIT_DATA_SIZE]]
    offset = INIT_DATA_SIZE
    for seq in _SEQ_BYTES[:count]:
        reports.append(cid + seq + padded[offset : offset + CONT_DATA_SIZE])
        offset += CONT_DATA_SIZE
    return reports


def error_report(channel: int, code: HidError) -> bytes:
    """One CTAPHID_ERROR report."""
    return encode_message(channel, Command.ERROR, bytes([code]))[0]


@dataclass
class _Assembly:
    """A message being received (init packet seen, continuation packets pending)."""

    channel: int
    command: Command
    length: int
    data: bytearray = field(repr=False)
    next_seq: int
    deadline: float
    client: Hashable = None
    started: float = 0.0
    #: The channels refused (CHANNEL_BUSY) while this message was being received that had
    #: been refused before: the clients that try again.
    refused: set[int] = field(default_factory=set)


@dataclass
class _Active:
    """A MSG/CBOR request handed to the authenticator and not answered yet."""

    channel: int
    command: Command
    transaction: int
    dropped: bool = False  # channel re-INITed / power cycle: the response goes nowhere
    cancelled: bool = False
    client: Hashable = None


def _allowed_commands(capabilities: int) -> frozenset[int]:
    allowed = {Command.PING, Command.LOCK}
    if capabilities & Capability.WINK:
        allowed.add(Command.WINK)
    if capabilities & Capability.CBOR:
        allowed.add(Command.CBOR)
    if not capabilities & Capability.NMSG:
        allowed.add(Command.MSG)
    return frozenset(int(c) for c in allowed)


class CtapHidCore:
    """The CTAPHID device state machine. Not thread-safe: callers serialise access."""

    def __init__(
        self,
        *,
        device_version: tuple[int, int, int] = (0, 1, 0),
        capabilities: int | Callable[[], int] = Capability.WINK | Capability.CBOR,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        max_channels_per_client: int = DEFAULT_MAX_CHANNELS_PER_CLIENT,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """``capabilities``: the CTAPHID_INIT capability flags, or a function giving them
        as of now (a device whose protocols change at run time), called at each INIT.
        Commands the flags a channel was given at its INIT rule out (CBOR without the CBOR
        flag, MSG with NMSG, WINK without WINK) are answered ERR_INVALID_CMD on it: a host
        is held to what it was told, until it INITs again."""
        if max_channels < 1 or max_channels_per_client < 1:
            raise ValueError("max_channels and max_channels_per_client must be positive")
        self._version = device_version
        self._capability_source = capabilities if callable(capabilities) else None
        self._capabilities = 0 if callable(capabilities) else int(capabilities)
        self._allowed = _allowed_commands(self._capabilities)
        self._max_channels = max_channels
        self._max_per_client = max_channels_per_client
        self._random = random_bytes
        # Allocated channels in LRU order (oldest first), each with the commands allowed by
        # the capabilities its INIT reported.
        self._channels: OrderedDict[int, frozenset[int]] = OrderedDict()
        self._owners: dict[int, Hashable] = {}  # channel -> the client that allocated it
        self._rx: _Assembly | None = None
        self._active: _Active | None = None
        #: A discarded request whose handler has not returned yet, replaced as the active one.
        self._unwinding: int | None = None
        self._lock_channel: int | None = None
        self._lock_until = 0.0
        self._lock_client: Hashable = None
        self._lock_since = 0.0  # when the current holder took the lock
        self._lock_contended: float | None = None  # when another channel was first refused
        self._lock_cooldown: dict[Hashable, float] = {}  # _holder -> no new LOCK before
        #: After a message ended while other channels waited: only they may start a
        #: multi-packet message or LOCK until then (see :meth:`_end_rx`).
        self._reserved_for: frozenset[int] = frozenset()
        self._reserved_until = 0.0
        self._refused_at: dict[int, float] = {}  # channel -> when a message last kept it out
        self._next_transaction = 1

    # -- queries ----------------------------------------------------------------------------

    @property
    def channels(self) -> tuple[int, ...]:
        """Allocated channel ids, least recently used first."""
        return tuple(self._channels)

    @property
    def busy(self) -> bool:
        """True while a message is being received or a request is being processed."""
        return self._rx is not None or self._active is not None

    @property
    def unwinding(self) -> bool:
        """True while a discarded request's handler has not returned (its place taken)."""
        return self._unwinding is not None

    def active_transaction(self) -> int | None:
        """The transaction id of the outstanding request, if any."""
        return self._active.transaction if self._active is not None else None

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work to do (message timeout, lock expiry), if ever."""
        times = []
        if self._rx is not None:
            times.append(self._rx.deadline)
        if self._lock_channel is not None:
            times.append(self._lock_until)
        return min(times) if times else None

    # -- host -> device ---------------------------------------------------------------------

    def feed(self, report: bytes, now: float, client: Hashable = None) -> list[Output]:
        """Process one report from the host received at ``now`` (section 11.2.4) from
        ``client`` (the transport's identity of the sender, None if it cannot tell)."""
        # tick() only has work with a message or lock pending (most reports: none).
        out = self.tick(now) if self._rx is not None or self._lock_channel is not None else []
        if len(report) > REPORT_SIZE:
            return out  # not a CTAPHID report: ignored
        if type(report) is not bytes or len(report) != REPORT_SIZE:
            report = bytes(report).ljust(REPORT_SIZE, b"\0")
        channel, kind = _HEADER.unpack_from(report)
        if kind & TYPE_INIT:
            (length,) = struct.unpack_from(">H", report, 5)
            produced = self._init_packet(
                channel, kind & ~TYPE_INIT, length, report[7:], now, client
            )
        else:
            produced = self._continuation_packet(channel, kind, report[5:], now, client)
        out += produced if client is None else _addressed(produced, client)
        return out

    def tick(self, now: float) -> list[Output]:
        """Expire the message timeout (ERR_MSG_TIMEOUT) and the channel lock."""
        out: list[Output] = []
        rx = self._rx
        if rx is not None and now >= rx.deadline:
            out.append(_to(rx.client, error_report(rx.channel, HidError.MSG_TIMEOUT)))
            self._end_rx(now)
        if self._lock_channel is not None and now >= self._lock_until:
            out.append(Lock(self._lock_channel, 0))
            self._end_lock(min(now, self._lock_until))
        return out

    # -- device -> host ---------------------------------------------------------------------

    def respond(self, transaction: int, payload: bytes) -> list[bytes]:
        """Reports answering request ``transaction``; ends the busy state.

        Returns nothing if the request was discarded (re-INIT, power cycle) or is unknown.
        """
        if transaction == self._unwinding:  # a discarded request's handler returned
            self._unwinding = None
            return []
        active = self._active
        if active is None or active.transaction != transaction:
            return []
        self._active = None
        if active.dropped or active.channel not in self._channels:
            return []
        if len(payload) > MAX_MESSAGE_SIZE:
            reports = [error_report(active.channel, HidError.OTHER)]
        else:
            reports = encode_message(active.channel, active.command, payload)
        if active.client is None:
            return reports
        return [_to(active.client, report) for report in reports]

    def keepalive(self, transaction: int, status: int) -> list[bytes]:
        """A CTAPHID_KEEPALIVE report for the outstanding request (section 11.2.9.1.7)."""
        active = self._active
        if active is None or active.transaction != transaction or active.dropped:
            return []
        if Command.CBOR not in self._channels.get(active.channel, frozenset()):
            # A channel INITed without the CBOR capability (a U2F-only key) speaks U2FHID,
            # which has no KEEPALIVE: Chromium takes one as a device error (issue #19).
            return []
        reports = encode_message(active.channel, Command.KEEPALIVE, bytes([status & 0xFF]))
        if active.client is None:
            return reports
        return [_to(active.client, report) for report in reports]

    def reset(self, *, keep_channels: bool = False) -> list[Output]:
        """Power cycle: forget all channels, the lock and partial messages, and cancel the
        request in flight. ``keep_channels``: the allocated channels stay valid (a simulated
        power cycle whose host keeps using its channel, see transports.udp)."""
        out: list[Output] = []
        if not keep_channels:
            self._channels.clear()
            self._owners.clear()
        self._rx = None
        self._lock_channel = None
        self._lock_cooldown.clear()
        self._reserved_for = frozenset()
        self._refused_at.clear()
        if self._active is not None and not self._active.dropped:
            self._active.dropped = True
            out.append(self._cancel(self._active))
        return out

    def forget_client(self, client: Hashable, now: float) -> list[Output]:
        """``client`` is gone (its connection closed): forget its channels, its partial
        message and its lock, and cancel its outstanding request."""
        out: list[Output] = []
        for channel in [c for c, owner in self._owners.items() if owner == client]:
            del self._channels[channel], self._owners[channel]
        if self._rx is not None and self._rx.client == client:
            self._end_rx(now)
        if self._lock_channel is not None and self._lock_client == client:
            out.append(Lock(self._lock_channel, 0))
            self._end_lock(now)
        active = self._active
        if active is not None and active.client == client and not active.dropped:
            active.dropped = True
            if not active.cancelled:
                out.append(self._cancel(active))
        return out

    # -- internals --------------------------------------------------------------------------

    def _cancel(self, active: _Active) -> Cancel:
        active.cancelled = True
        return Cancel(active.channel, active.transaction)

    def _end_rx(self, now: float) -> None:
        """The message being received ends (whole, timed out, cut off): the channels it
        kept waiting that try again go first for RESERVATION_TIME, whoever sends next."""
        rx, self._rx = self._rx, None
        if rx is not None and rx.refused:
            self._reserved_for = frozenset(rx.refused)
            self._reserved_until = now + RESERVATION_TIME

    def _replaceable(self) -> bool:
        """The request in flight was discarded (re-INIT, power cycle) and no other discarded
        one is still unwinding: a new one may take its place (see the module's notes)."""
        active = self._active
        return active is not None and active.dropped and self._unwinding is None

    def _reserved_out(self, channel: int, now: float) -> bool:
        """Another channel's turn (see :meth:`_end_rx`); a reserved channel taking its turn
        ends the reservation."""
        if not self._reserved_for or now >= self._reserved_until:
            return False
        if channel not in self._reserved_for:
            return True
        self._reserved_for = frozenset()
        self._refused_at.pop(channel, None)
        return False

    def _refuse_for_rx(self, rx: _Assembly, channel: int, now: float) -> list[Output]:
        """``channel`` must wait for the message being received (section 11.2.5.1: "that
        request will immediately fail with a busy-error message"). Refused before, within
        RESERVATION_TIME, it is a client that tries again: it gets a turn when the message
        ends (:meth:`_end_rx`). Refused once, it reserves nothing: libfido2 gives up on
        ERR_CHANNEL_BUSY, and the key, idle again, takes the sender's next message."""
        last = self._refused_at.get(channel)
        if last is not None and now - last <= RESERVATION_TIME:
            rx.refused.add(channel)
        if last is None and len(self._refused_at) >= self._max_channels:
            # Only an allocated channel is refused: the others (forgotten since) go, so the
            # table stays as small as the channel table, however many channels a client
            # allocates and gets refused on (a review: it grew, each refusal rebuilding it).
            self._refused_at = {
                c: t
                for c, t in self._refused_at.items()
                if c in self._channels and now - t <= RESERVATION_TIME
            }
        self._refused_at[channel] = now
        return [error_report(channel, HidError.CHANNEL_BUSY)]

    def _locked_out(self, channel: int, now: float) -> bool:
        """Another channel holds the lock (which then counts as contended from ``now``)."""
        if self._lock_channel is None or self._lock_channel == channel:
            return False
        if self._lock_contended is None:
            self._lock_contended = now
        return True

    def _owned(self, channel: int, client: Hashable) -> bool:
        """``channel`` is allocated, to ``client``."""
        return channel in self._channels and self._owners[channel] == client

    def _end_lock(self, now: float) -> None:
        """The lock ends at ``now``. If another channel was refused meanwhile, its holder may
        not LOCK again for as long as it held it (at most MAX_LOCK_SECONDS)."""
        holder = _holder(self._lock_client, self._lock_channel)
        held = max(0.0, now - self._lock_since)
        contended = self._lock_contended is not None
        self._lock_channel = None
        self._lock_client = None
        self._lock_contended = None
        for other, until in list(self._lock_cooldown.items()):
            if until <= now:
                del self._lock_cooldown[other]
        if contended and held > 0:
            self._lock_cooldown[holder] = now + min(held, MAX_LOCK_SECONDS)

    def _lock(self, channel: int, seconds: int, now: float, client: Hashable) -> list[Output]:
        """CTAPHID_LOCK with ``seconds`` > 0 on ``channel`` (not locked out), bounded so that
        one client cannot keep the key (see the module docstring)."""
        if self._lock_channel is None:
            if now < self._lock_cooldown.get(_holder(client, channel), now):
                return [error_report(channel, HidError.CHANNEL_BUSY)]
            if self._reserved_out(channel, now):  # a LOCK takes no other channel's turn
                return [error_report(channel, HidError.CHANNEL_BUSY)]
            self._lock_since = now
            self._lock_client = client
            self._lock_contended = None
        self._lock_channel = channel
        self._lock_until = now + seconds
        if self._lock_contended is not None:
            # Re-LOCK while another channel waits: not past MAX_LOCK_SECONDS after it asked.
            self._lock_until = min(self._lock_until, self._lock_contended + MAX_LOCK_SECONDS)
        granted = max(1, round(self._lock_until - now))
        return [Lock(channel, granted), *encode_message(channel, Command.LOCK, b"")]

    def _touch(self, channel: int) -> None:
        self._channels.move_to_end(channel)

    def _allocate(self, client: Hashable) -> int:
        if client is not None:
            while sum(owner == client for owner in self._owners.values()) >= self._max_per_client:
                if not self._evict_one(client):
                    break
        while len(self._channels) >= self._max_channels:
            if not self._evict_one():
                break
        while True:
            channel = int.from_bytes(self._random(4), "big")
            if channel not in (RESERVED_CID, BROADCAST_CID) and channel not in self._channels:
                self._channels[channel] = self._allowed
                self._owners[channel] = client
                return channel

    def _evict_one(self, client: Hashable = None) -> bool:
        """Forget one idle channel: ``client``'s least recently used one (if given), else
        the least recently used one of the client holding the most channels."""
        protected = {self._lock_channel}
        if self._rx is not None:
            protected.add(self._rx.channel)
        if self._active is not None:
            protected.add(self._active.channel)
        counts = Counter(self._owners.values())
        victim: int | None = None
        for channel in self._channels:  # least recently used first
            owner = self._owners[channel]
            if channel in protected or (client is not None and owner != client):
                continue
            if victim is None or counts[owner] > counts[self._owners[victim]]:
                victim = channel
        if victim is None:
            return False
        del self._channels[victim], self._owners[victim]
        return True

    def _init_packet(
        self, channel: int, command: int, length: int, data: bytes, now: float, client: Hashable
    ) -> list[Output]:
        if command == Command.INIT:
            return self._handle_init(channel, length, data, now, client)
        valid = channel not in (RESERVED_CID, BROADCAST_CID) and self._owned(channel, client)
        if command == Command.CANCEL:
            # Section 11.2.9.1.5: "the authenticator MUST NOT reply to the CTAPHID_CANCEL
            # message itself", and one "received while no CTAPHID_CBOR request is being
            # processed, or on a non-active CID SHALL be ignored": not even an
            # INVALID_CHANNEL error (over UDP it would reach another client's channel), and
            # a U2F request (CTAPHID_MSG) goes on.
            active = self._active
            if (
                valid
                and active is not None
                and active.channel == channel
                and active.command == Command.CBOR
                and not active.cancelled
            ):
                self._touch(channel)
                return [self._cancel(active)]
            return []
        if not valid:
            return [error_report(channel, HidError.INVALID_CHANNEL)]
        self._touch(channel)
        if self._locked_out(channel, now):
            return [error_report(channel, HidError.CHANNEL_BUSY)]
        if self._rx is not None:
            if self._rx.channel == channel:
                # A new init packet in the middle of a message (section 11.2.4).
                self._end_rx(now)
                return [error_report(channel, HidError.INVALID_SEQ)]
            return self._refuse_for_rx(self._rx, channel, now)
        if self._active is not None and not self._replaceable():
            return [error_report(channel, HidError.CHANNEL_BUSY)]
        error = self._check_command(self._channels[channel], command, length)
        if error is not None:
            return [error_report(channel, error)]
        cmd = _COMMANDS[command]  # a valid command (checked above)
        if length <= INIT_DATA_SIZE:
            return self._dispatch(channel, cmd, data[:length], now, client)
        if self._reserved_out(channel, now):
            return [error_report(channel, HidError.CHANNEL_BUSY)]
        self._rx = _Assembly(
            channel,
            cmd,
            length,
            bytearray(data),
            0,
            now + MESSAGE_TIMEOUT,
            client,
            started=now,
        )
        return []

    def _refresh_capabilities(self) -> int:
        """The capability flags now (recomputing the allowed commands when they change)."""
        if self._capability_source is not None:
            capabilities = int(self._capability_source())
            if capabilities != self._capabilities:
                self._capabilities = capabilities
                self._allowed = _allowed_commands(capabilities)
        return self._capabilities

    @staticmethod
    def _check_command(allowed: frozenset[int], command: int, length: int) -> HidError | None:
        if command not in allowed:
            return HidError.INVALID_CMD
        if length > MAX_MESSAGE_SIZE:
            return HidError.INVALID_LEN
        if (
            (command == Command.LOCK and length != 1)
            or (command == Command.WINK and length)
            # The CTAP command byte / the APDU is required (section 11.2.9.1.1: MSG's
            # "BCNT 1..(n + 1)"; 11.2.9.1.2: CBOR's likewise).
            or (command in (Command.CBOR, Command.MSG) and not length)
        ):
            return HidError.INVALID_LEN
        return None

    def _continuation_packet(
        self, channel: int, seq: int, data: bytes, now: float, client: Hashable
    ) -> list[Output]:
        rx = self._rx
        if rx is None or rx.channel != channel or rx.client != client:
            return []  # no message in progress on this channel: ignored (section 11.2.4)
        if seq != rx.next_seq:
            self._end_rx(now)
            return [error_report(channel, HidError.INVALID_SEQ)]
        rx.data += data
        rx.next_seq += 1
        # Each packet gives the next one MESSAGE_TIMEOUT, never past MAX_MESSAGE_TIME from
        # the first: one packet every 0.45 s held the key for ever (CHANNEL_BUSY to others).
        rx.deadline = min(now + MESSAGE_TIMEOUT, rx.started + MAX_MESSAGE_TIME)
        if len(rx.data) < rx.length:
            return []
        self._end_rx(now)
        return self._dispatch(channel, rx.command, bytes(rx.data[: rx.length]), now, client)

    def _handle_init(
        self, channel: int, length: int, data: bytes, now: float, client: Hashable
    ) -> list[Output]:
        """CTAPHID_INIT (section 11.2.9.1.3): allocate or re-synchronise a channel."""
        if channel == RESERVED_CID or (
            channel != BROADCAST_CID and not self._owned(channel, client)
        ):
            return [error_report(channel, HidError.INVALID_CHANNEL)]
        if self._locked_out(channel, now):
            return [error_report(channel, HidError.CHANNEL_BUSY)]
        if length != INIT_NONCE_SIZE:
            return [error_report(channel, HidError.INVALID_LEN)]
        out: list[Output] = []
        capabilities = self._refresh_capabilities()
        if channel == BROADCAST_CID:
            new_channel = self._allocate(client)
        else:
            new_channel = channel
            self._channels[channel] = self._allowed  # re-synchronised: told anew
            self._touch(channel)
            if self._rx is not None and self._rx.channel == channel:
                self._end_rx(now)
            active = self._active
            if active is not None and active.channel == channel and not active.dropped:
                active.dropped = True
                if not active.cancelled:
                    out.append(self._cancel(active))
        major, minor, build = self._version
        payload = data[:INIT_NONCE_SIZE] + struct.pack(
            ">IBBBBB", new_channel, PROTOCOL_VERSION, major, minor, build, capabilities
        )
        out += encode_message(channel, Command.INIT, payload)
        return out

    def _dispatch(
        self, channel: int, command: Command, payload: bytes, now: float, client: Hashable
    ) -> list[Output]:
        """A complete message arrived (section 11.2.9)."""
        if command == Command.PING:
            return list(encode_message(channel, Command.PING, payload))
        if command == Command.WINK:
            return [Wink(channel), *encode_message(channel, Command.WINK, b"")]
        if command == Command.LOCK:
            seconds = payload[0]
            if seconds > MAX_LOCK_SECONDS:
                return [error_report(channel, HidError.INVALID_PAR)]
            if seconds:
                return self._lock(channel, seconds, now, client)
            out: list[Output] = []
            if self._lock_channel == channel:
                out.append(Lock(channel, 0))
                self._end_lock(now)
            return [*out, *encode_message(channel, Command.LOCK, b"")]
        transaction = self._next_transaction
        self._next_transaction += 1
        if self._active is not None:  # a discarded one (_replaceable): it unwinds meanwhile
            self._unwinding = self._active.transaction
        self._active = _Active(channel, command, transaction, client=client)
        return [Request(channel, command, payload, transaction)]


class HostChannelFilter:
    """Host side helper: which device reports belong to one client's conversation.

    Where several clients share one report stream (in-process connections, a UDP peer port), a
    client should only see reports for the channels it used itself, broadcast INIT answers
    only for its own nonce, and other broadcast reports (an ERROR: CHANNEL_BUSY, INVALID_LEN)
    only while a broadcast request of its own waits for its answer; python-fido2 treats any
    other report as a fatal "Wrong channel" (a fuzzer: another client's malformed INIT, or a
    refusal while one client held a LOCK, broke every other client's next call). An ERROR
    names no nonce, so two clients waiting on the broadcast channel at once both see it, as
    every reader of a HID device does. Not thread-safe: callers serialise access.
    """

    def __init__(self) -> None:
        self._channels: set[int] = set()
        self._nonces: set[bytes] = set()
        self._broadcast_waiting = 0  # this client's broadcast requests not yet answered

    def note_sent(self, report: bytes) -> None:
        """Remember the channel (and INIT nonce) of a report sent by this client."""
        if len(report) < 7:
            return
        channel = int.from_bytes(report[:4], "big")
        self._channels.add(channel)
        if channel == BROADCAST_CID and report[4] & TYPE_INIT:
            self._broadcast_waiting += 1
            if report[4] == TYPE_INIT | Command.INIT:
                self._nonces.add(bytes(report[7:15]))

    def wants(self, report: bytes) -> bool:
        """True if ``report`` from the device is part of this client's conversation."""
        if len(report) != REPORT_SIZE:
            return False
        channel = int.from_bytes(report[:4], "big")
        if channel not in self._channels:
            return False
        if channel == BROADCAST_CID:
            if report[4] == TYPE_INIT | Command.INIT:
                nonce = bytes(report[7:15])
                if nonce not in self._nonces:
                    return False
                self._nonces.discard(nonce)
            elif not self._broadcast_waiting:
                return False
            self._broadcast_waiting = max(0, self._broadcast_waiting - 1)
        return True
