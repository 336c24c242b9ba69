"""CTAPHID with several clients the transport can tell apart (issue #15, low 7): one client
must not starve another by allocating channels in a loop or by re-LOCKing the key.

Sans-IO tests of :class:`vfido.transports.ctaphid.CtapHidCore` with an explicit clock; the same
attacks over real transports are in tests/transports/test_unix_transport.py and
tests/transports/test_udp_transport.py.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable, Sequence

import pytest

from tests.ctaphid_helpers import decode_messages, reports_of, request_reports
from vfido.transports.ctaphid import (
    BROADCAST_CID,
    DEFAULT_MAX_CHANNELS,
    DEFAULT_MAX_CHANNELS_PER_CLIENT,
    MAX_LOCK_SECONDS,
    MAX_MESSAGE_SIZE,
    Command,
    CtapHidCore,
    HidError,
    Lock,
    Output,
    Report,
    Request,
)

VICTIM, ATTACKER = "victim", "attacker"


def init(core: CtapHidCore, client: Hashable, now: float = 0.0) -> int:
    nonce = struct.pack(">Q", int(now * 1000) + 1)
    out = core.feed(request_reports(BROADCAST_CID, Command.INIT, nonce)[0], now, client)
    (message,) = decode_messages(reports_of(out))
    assert message.command == Command.INIT and message.payload[:8] == nonce
    channel: int = struct.unpack_from(">I", message.payload, 8)[0]
    return channel


def call(
    core: CtapHidCore,
    client: Hashable,
    channel: int,
    command: int,
    payload: bytes = b"",
    now: float = 0.0,
) -> list[Output]:
    out: list[Output] = []
    for report in request_reports(channel, command, payload):
        out += core.feed(report, now, client)
    return out


def answer(outputs: Sequence[Output]) -> tuple[int, int, bytes]:
    """(channel, command, payload) of the one message among ``outputs``."""
    (message,) = decode_messages(reports_of(outputs))
    return message.channel, message.command, message.payload


def pings(core: CtapHidCore, client: Hashable, channel: int, now: float = 0.0) -> bool:
    return answer(call(core, client, channel, Command.PING, b"hi", now)) == (
        channel,
        Command.PING,
        b"hi",
    )


def error(outputs: Sequence[Output]) -> int:
    _channel, command, payload = answer(outputs)
    assert command == Command.ERROR
    return payload[0]


# --- channel table ------------------------------------------------------------------------------


def test_one_client_allocating_channels_in_a_loop_cannot_evict_anothers() -> None:
    core = CtapHidCore()
    mine = init(core, VICTIM)
    for _ in range(5 * DEFAULT_MAX_CHANNELS):
        init(core, ATTACKER)
    assert mine in core.channels
    assert pings(core, VICTIM, mine)
    # The attacker holds at most its share (its own oldest channels went first).
    assert len(core.channels) <= 1 + DEFAULT_MAX_CHANNELS_PER_CLIENT


def test_a_full_table_evicts_from_the_client_holding_the_most() -> None:
    core = CtapHidCore(max_channels=8, max_channels_per_client=6)
    victims = [init(core, VICTIM) for _ in range(2)]
    for n in range(3):
        init(core, f"client-{n}")
    for _ in range(50):
        init(core, ATTACKER)
    assert all(channel in core.channels for channel in victims)
    assert len(core.channels) == 8


def test_clients_the_transport_cannot_tell_apart_keep_one_lru_table() -> None:
    """UHID and the in-process bus give no client identity: one table, least recently used
    first, as before (documented in transports/ctaphid.py)."""
    core = CtapHidCore(max_channels=4)
    first = init(core, None)
    for _ in range(4):
        init(core, None)
    assert first not in core.channels and len(core.channels) == 4


def test_a_client_cannot_use_or_resynchronise_another_clients_channel() -> None:
    core = CtapHidCore()
    mine = init(core, VICTIM)
    assert error(call(core, ATTACKER, mine, Command.PING, b"x")) == HidError.INVALID_CHANNEL
    assert error(call(core, ATTACKER, mine, Command.INIT, b"\x02" * 8)) == HidError.INVALID_CHANNEL
    # A continuation packet of the attacker's does not join the victim's message.
    long = request_reports(mine, Command.PING, bytes(range(100)))
    assert core.feed(long[0], 0.0, VICTIM) == []
    forged = struct.pack(">IB", mine, 0) + b"\xff" * 59
    assert core.feed(forged, 0.0, ATTACKER) == []
    assert answer(core.feed(long[1], 0.0, VICTIM)) == (mine, Command.PING, bytes(range(100)))


def test_a_cancel_on_another_clients_channel_is_ignored_not_answered() -> None:
    """Section 11.2.9.1.5: a CANCEL is never answered, one "on a non-active CID SHALL be
    ignored". Over UDP every report goes to the one peer: an INVALID_CHANNEL error for the
    attacker's CANCEL landed on the victim's channel, and python-fido2 raised on it."""
    core = CtapHidCore()
    mine = init(core, VICTIM)
    assert call(core, ATTACKER, mine, Command.CANCEL) == []
    pending = call(core, VICTIM, mine, Command.CBOR, b"\x04")
    assert any(isinstance(o, Request) for o in pending)
    assert call(core, ATTACKER, mine, Command.CANCEL) == []  # nor is the request cancelled
    assert core.respond(next(o for o in pending if isinstance(o, Request)).transaction, b"\x00")


def test_reports_name_the_client_they_are_for() -> None:
    core = CtapHidCore()
    a, b = init(core, VICTIM), init(core, ATTACKER)
    # A message timeout found while another client's report is processed goes to its owner.
    assert core.feed(request_reports(b, Command.PING, bytes(100))[0], 1.0, ATTACKER) == []
    late = reports_of(core.feed(request_reports(a, Command.PING, b"")[0], 2.0, VICTIM))
    assert all(isinstance(r, Report) for r in late)
    assert error([r for r in late if r.client == ATTACKER]) == HidError.MSG_TIMEOUT  # type: ignore[attr-defined]
    assert answer([r for r in late if r.client == VICTIM]) == (a, Command.PING, b"")  # type: ignore[attr-defined]
    # Keepalives and the response go to the client that sent the request.
    out = call(core, VICTIM, a, Command.CBOR, b"\x04", now=3.0)
    (request,) = [o for o in out if isinstance(o, Request)]
    keepalive = core.keepalive(request.transaction, 1)
    response = core.respond(request.transaction, b"\x00")
    assert keepalive and response
    assert all(isinstance(r, Report) and r.client == VICTIM for r in keepalive + response)
    # Without client identities, reports stay plain bytes.
    anonymous = CtapHidCore()
    channel = init(anonymous, None)
    assert all(type(r) is bytes for r in reports_of(call(anonymous, None, channel, 1, b"x")))


def test_a_client_that_goes_away_loses_its_channels_lock_and_request() -> None:
    core = CtapHidCore()
    a, b = init(core, VICTIM), init(core, ATTACKER)
    call(core, ATTACKER, b, Command.LOCK, b"\x0a", now=0.0)
    assert error(call(core, VICTIM, a, Command.PING, b"x", now=1.0)) == HidError.CHANNEL_BUSY
    out = core.forget_client(ATTACKER, 1.0)
    assert Lock(b, 0) in out
    assert b not in core.channels
    assert pings(core, VICTIM, a, now=1.0)


# --- CTAPHID_LOCK ---------------------------------------------------------------------------------


def test_one_client_re_locking_cannot_hold_the_key_beyond_the_bound() -> None:
    core = CtapHidCore()
    victim, attacker = init(core, VICTIM), init(core, ATTACKER)
    blocked: list[bool] = []
    for second in range(60):  # the attacker re-LOCKs for 10 s every second, for a minute
        now = float(second)
        call(core, ATTACKER, attacker, Command.LOCK, bytes([MAX_LOCK_SECONDS]), now)
        blocked.append(not pings(core, VICTIM, victim, now))
    longest = run = 0
    for is_blocked in blocked:
        run = run + 1 if is_blocked else 0
        longest = max(longest, run)
    assert longest <= MAX_LOCK_SECONDS  # never locked out longer than one lock may last
    assert sum(blocked) <= len(blocked) // 2  # and at most half of the time


def test_after_a_contended_lock_its_holder_waits_as_long_as_it_held_it() -> None:
    core = CtapHidCore()
    a, b = init(core, VICTIM), init(core, ATTACKER)
    assert Lock(b, 4) in call(core, ATTACKER, b, Command.LOCK, b"\x04", now=100.0)
    assert error(call(core, VICTIM, a, Command.PING, b"x", now=101.0)) == HidError.CHANNEL_BUSY
    assert core.tick(104.0) == [Lock(b, 0)]
    assert error(call(core, ATTACKER, b, Command.LOCK, b"\x01", now=105.0)) == (
        HidError.CHANNEL_BUSY
    )
    assert Lock(a, 2) in call(core, VICTIM, a, Command.LOCK, b"\x02", now=105.0)  # others can
    call(core, VICTIM, a, Command.LOCK, b"\x00", now=105.5)
    assert Lock(b, 1) in call(core, ATTACKER, b, Command.LOCK, b"\x01", now=108.0)


def test_a_lock_nobody_else_wants_is_maintained_by_repeating_lock_commands() -> None:
    """CTAP 2.1 section 11.2.9.2.2: "An application requiring a longer lock has to send
    repeating lock commands to maintain the lock." So it does while nobody else asks; once
    another channel has been refused, the holder keeps the lock at most 10 s more. Also
    without client identities (UHID)."""
    for holder_client, other_client in ((ATTACKER, VICTIM), (None, None)):
        core = CtapHidCore()
        holder, other = init(core, holder_client), init(core, other_client)
        for second in range(0, 60, 8):  # a minute, nobody else asking
            lock = call(core, holder_client, holder, Command.LOCK, b"\x0a", now=float(second))
            assert Lock(holder, MAX_LOCK_SECONDS) in lock
        busy = call(core, other_client, other, Command.PING, b"x", now=60.0)
        assert error(busy) == HidError.CHANNEL_BUSY
        assert Lock(holder, 6) in call(core, holder_client, holder, Command.LOCK, b"\x0a", 64.0)
        assert core.tick(70.0) == [Lock(holder, 0)]
        assert error(call(core, holder_client, holder, Command.LOCK, b"\x0a", now=70.0)) == (
            HidError.CHANNEL_BUSY
        )
        assert pings(core, other_client, other, now=70.0)


@pytest.mark.parametrize("cut", [False, True], ids=["timed out", "cut off"])
@pytest.mark.parametrize("rotate", [False, True], ids=["same identity", "new identity"])
def test_a_client_dribbling_a_message_cannot_hold_the_key(rotate: bool, cut: bool) -> None:
    """Without LOCK: the first packet of a 7609-byte message, then one continuation every
    0.45 s (each within the 0.5 s between packets), then again. Every other client's request
    was answered CHANNEL_BUSY for as long as it kept going (found by a security review). Now
    a message must be whole within MAX_MESSAGE_TIME, and after one timed out while others
    were refused, only they may start a long message for a while: whatever identity the
    sender comes back under (a new channel and a new client: a UDP source port, a Unix
    connection; a review found the first fix, keyed on the sender, bypassed that way)."""
    core = CtapHidCore()
    victim = init(core, VICTIM)
    attempt = 0
    sender: Hashable = ATTACKER
    channel = init(core, sender)
    served = refused = 0
    now, seq, next_victim = 0.0, -1, 0.0
    while now < 120:
        core.tick(now)  # the runner's ticker: message timeouts
        if core.busy and seq >= 0:
            # "cut off": a wrong SEQ ends the message just before it would time out
            wrong = cut and seq == 5
            packet = channel.to_bytes(4, "big") + bytes([(seq + 50 if wrong else seq) % 128])
            core.feed(packet.ljust(64, b"\0"), now, sender)
            seq += 1
        else:
            if rotate:  # a new identity and channel for every attempt
                attempt += 1
                sender = (ATTACKER, attempt)
                channel = init(core, sender, now)
            first = request_reports(channel, Command.PING, bytes(MAX_MESSAGE_SIZE))[0]
            started = core.feed(first, now, sender)  # again, at once
            seq = 0 if not started else -1
        if now >= next_victim:  # the victim asks every 0.5 s
            if pings(core, VICTIM, victim, now):
                served += 1
            else:
                refused += 1
            next_victim = now + 0.5
        now += 0.45
    assert served >= (served + refused) // 3, (served, refused)


@pytest.mark.parametrize("clients", [(VICTIM, ATTACKER), (None, None)], ids=["udp", "uhid"])
def test_a_channel_refused_once_reserves_nothing_one_that_tries_again_gets_a_turn(
    clients: tuple[Hashable, Hashable],
) -> None:
    """Section 11.2.5.1: after a transaction "The device then returns to idle state, ready to
    perform another transaction for the same or a different channel." A channel refused
    (CHANNEL_BUSY) once while another's message came, and never again, held the sender's
    next long message back for 2 s: libfido2 gives up on CHANNEL_BUSY (io.c), so one PING
    from another process in the middle of a makeCredential failed the next one with
    FIDO_ERR_RX on an idle key (a transport review). A channel refused again, within
    RESERVATION_TIME (python-fido2 retries every 100 ms), still gets the next turn."""
    sender_client, other_client = clients
    long = bytes(200)  # 4 reports
    for retries in (False, True):
        core = CtapHidCore()
        sender, other = init(core, sender_client), init(core, other_client)
        first, *rest = request_reports(sender, Command.PING, long)
        assert core.feed(first, 1.0, sender_client) == []
        refused = call(core, other_client, other, Command.PING, b"x" * 100, now=1.01)
        assert error(refused) == HidError.CHANNEL_BUSY
        if retries:
            again = call(core, other_client, other, Command.PING, b"x" * 100, now=1.11)
            assert error(again) == HidError.CHANNEL_BUSY
        out: list[Output] = []
        for report in rest:
            out += core.feed(report, 1.2, sender_client)
        assert answer(out) == (sender, Command.PING, long)
        assert not core.busy
        next_one = call(core, sender_client, sender, Command.PING, long, now=1.3)
        if not retries:
            assert answer(next_one) == (sender, Command.PING, long)
            continue
        assert error(next_one) == HidError.CHANNEL_BUSY
        turn = call(core, other_client, other, Command.PING, b"x" * 100, now=1.35)
        assert answer(turn) == (other, Command.PING, b"x" * 100)
        assert answer(call(core, sender_client, sender, Command.PING, long, now=1.4)) == (
            sender,
            Command.PING,
            long,
        )


def test_the_refusals_remembered_stay_as_few_as_the_channels() -> None:
    """Each channel refused while a message comes is remembered (a second refusal earns it
    a turn). A client allocating a channel and getting it refused, again and again, grew
    that memory without bound, every refusal rebuilding it (a review): only allocated
    channels are kept."""
    core = CtapHidCore()
    sender = init(core, None)
    first = request_reports(sender, Command.PING, bytes(200))[0]
    assert core.feed(first, 0.0, None) == []  # a message in progress
    for _ in range(1000):
        channel = init(core, None, 0.001)
        assert error(call(core, None, channel, Command.PING, b"x", now=0.001)) == (
            HidError.CHANNEL_BUSY
        )
    assert len(core._refused_at) <= DEFAULT_MAX_CHANNELS + 1
