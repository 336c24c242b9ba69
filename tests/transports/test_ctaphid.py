"""Sans-IO tests of the CTAPHID core (CTAP 2.1 section 11.2), with an explicit clock."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ctaphid_helpers import (
    assert_core_recovers,
    core_call,
    core_init,
    decode_messages,
    reports_of,
    request_reports,
)
from vfido.transports.ctaphid import (
    BROADCAST_CID,
    MAX_MESSAGE_SIZE,
    REPORT_SIZE,
    TYPE_INIT,
    Cancel,
    Capability,
    Command,
    CtapHidCore,
    HidError,
    HostChannelFilter,
    Lock,
    Request,
    Wink,
    encode_message,
)


def error_of(outputs: Sequence[object]) -> tuple[int, int]:
    """(channel, error code) of the single CTAPHID_ERROR among ``outputs``."""
    (message,) = decode_messages(reports_of(outputs))
    assert message.command == Command.ERROR
    assert len(message.payload) == 1
    return message.channel, message.payload[0]


def test_constants() -> None:
    assert REPORT_SIZE == 64
    assert MAX_MESSAGE_SIZE == 7609
    assert BROADCAST_CID == 0xFFFFFFFF


def test_broadcast_init_allocates_distinct_channels() -> None:
    core = CtapHidCore(device_version=(1, 2, 3))
    nonce = bytes(range(8))
    (message,) = decode_messages(
        reports_of(core.feed(request_reports(BROADCAST_CID, Command.INIT, nonce)[0], 0.0))
    )
    assert message.channel == BROADCAST_CID and message.command == Command.INIT
    assert len(message.payload) == 17
    got_nonce, channel, proto, major, minor, build, caps = struct.unpack(
        ">8sIBBBBB", message.payload
    )
    assert got_nonce == nonce
    assert channel not in (0, BROADCAST_CID)
    assert (proto, major, minor, build) == (2, 1, 2, 3)
    assert caps == Capability.WINK | Capability.CBOR
    others = {core_init(core) for _ in range(20)}
    assert channel not in others and len(others) == 20
    assert set(core.channels) == others | {channel}


@pytest.mark.parametrize("size", [0, 7, 9, 16])
def test_init_wrong_length_is_invalid_len(size: int) -> None:
    """CTAPHID_INIT's data is an 8-byte nonce: shorter or longer is ERR_INVALID_LEN, and no
    channel is allocated (only 7 was tested until a session 20 mutation sampling)."""
    core = CtapHidCore()
    out = core_call(core, BROADCAST_CID, Command.INIT, b"\x01" * size)
    assert error_of(out) == (BROADCAST_CID, HidError.INVALID_LEN)
    assert core.channels == ()


def test_channel_allocation_never_hands_out_a_reserved_id() -> None:
    """Channel 0 is reserved and 0xFFFFFFFF is the broadcast channel (CTAP 2.2 section
    11.2.3): a random draw of either is drawn again."""
    draws = iter([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x12\x34\x56\x78"])
    core = CtapHidCore(random_bytes=lambda n: next(draws))
    assert core_init(core) == 0x12345678


@pytest.mark.parametrize("size", [0, 1, 57, 58, 59, 116, 117, 118, 7609])
def test_ping_echo(size: int) -> None:
    core = CtapHidCore()
    channel = core_init(core)
    payload = bytes((i * 7) & 0xFF for i in range(size))
    (message,) = decode_messages(reports_of(core_call(core, channel, Command.PING, payload)))
    assert (message.channel, message.command, message.payload) == (channel, Command.PING, payload)


def test_too_long_message_is_invalid_len() -> None:
    core = CtapHidCore()
    channel = core_init(core)
    head = struct.pack(">IBH", channel, TYPE_INIT | Command.PING, MAX_MESSAGE_SIZE + 1)
    assert error_of(core.feed(head, 0.0)) == (channel, HidError.INVALID_LEN)
    assert not core.busy


def test_command_specific_lengths() -> None:
    core = CtapHidCore()
    channel = core_init(core)
    assert error_of(core_call(core, channel, Command.CBOR, b"")) == (channel, HidError.INVALID_LEN)
    assert error_of(core_call(core, channel, Command.LOCK, b"")) == (channel, HidError.INVALID_LEN)
    # Section 11.2.9.1.1, CTAPHID_MSG: "BCNT 1..(n + 1)" (trussed's fido2-tests
    # test_no_data_in_u2f_msg expects the same); before, the APDU parser answered 6700.
    assert error_of(core_call(core, channel, Command.MSG, b"")) == (channel, HidError.INVALID_LEN)


def test_invalid_sequence() -> None:
    core = CtapHidCore()
    channel = core_init(core)
    first, second, third = request_reports(channel, Command.PING, b"x" * 120)
    assert core.feed(first, 0.0) == []
    assert error_of(core.feed(third, 0.0)) == (channel, HidError.INVALID_SEQ)
    # The message was abandoned: its remaining continuation packet is ignored.
    assert core.feed(second, 0.0) == []
    assert not core.busy


def test_init_packet_mid_message_is_invalid_seq() -> None:
    core = CtapHidCore()
    channel = core_init(core)
    assert core.feed(request_reports(channel, Command.PING, b"x" * 100)[0], 0.0) == []
    out = core.feed(request_reports(channel, Command.PING, b"y")[0], 0.0)
    assert error_of(out) == (channel, HidError.INVALID_SEQ)
    (message,) = decode_messages(reports_of(core_call(core, channel, Command.PING, b"z")))
    assert message.payload == b"z"


def test_continuation_without_message_is_ignored() -> None:
    core = CtapHidCore()
    channel = core_init(core)
    assert core.feed(struct.pack(">IB", channel, 0).ljust(64, b"\xaa"), 0.0) == []
    assert core.feed(struct.pack(">IB", 0x12345678, 5), 0.0) == []


def test_message_timeout_uses_explicit_clock() -> None:
    core = CtapHidCore()
    channel = core_init(core)
    first, second, _third = request_reports(channel, Command.PING, b"x" * 120)
    assert core.feed(first, 10.0) == []
    assert core.next_deadline() == pytest.approx(10.5)
    assert core.tick(10.49) == []
    assert core.feed(second, 10.4) == []  # each packet restarts the 500 ms timer
    assert core.tick(10.89) == []
    assert error_of(core.tick(10.9)) == (channel, HidError.MSG_TIMEOUT)
    assert not core.busy and core.next_deadline() is None
    assert core.tick(20.0) == []


def test_timeout_is_reported_before_a_late_packet() -> None:
    core = CtapHidCore()
    channel = core_init(core)
    first, second, _ = request_reports(channel, Command.PING, b"x" * 120)
    core.feed(first, 0.0)
    assert error_of(core.feed(second, 0.6)) == (channel, HidError.MSG_TIMEOUT)


def test_other_channel_busy_while_assembling_and_processing() -> None:
    core = CtapHidCore()
    a, b = core_init(core), core_init(core)
    head, rest = request_reports(a, Command.CBOR, b"\x04" * 70)
    core.feed(head, 0.0)
    assert error_of(core_call(core, b, Command.PING, b"hi")) == (b, HidError.CHANNEL_BUSY)
    (request,) = core.feed(rest, 0.0)
    assert isinstance(request, Request)
    assert (request.channel, request.command, request.payload) == (a, Command.CBOR, b"\x04" * 70)
    assert error_of(core_call(core, b, Command.PING, b"hi")) == (b, HidError.CHANNEL_BUSY)
    assert error_of(core_call(core, a, Command.PING, b"hi")) == (a, HidError.CHANNEL_BUSY)
    # A new client can still get a channel while the device is busy.
    core_init(core)
    (response,) = decode_messages(core.respond(request.transaction, b"\x00ok"))
    assert (response.channel, response.command, response.payload) == (a, Command.CBOR, b"\x00ok")
    (pong,) = decode_messages(reports_of(core_call(core, b, Command.PING, b"hi")))
    assert pong.payload == b"hi"


@pytest.mark.parametrize("command", [Command.PING, Command.CBOR])
def test_invalid_channels(command: Command) -> None:
    core = CtapHidCore()
    core_init(core)
    for channel in (0, BROADCAST_CID, 0x12345678):
        out = core_call(core, channel, command, b"x")
        assert error_of(out) == (channel, HidError.INVALID_CHANNEL)


def test_a_cancel_is_never_answered_on_any_channel() -> None:
    """CTAP 2.1 section 11.2.9.1.5: "Whether a request was cancelled or not, the
    authenticator MUST NOT reply to the CTAPHID_CANCEL message itself. ... A
    CTAPHID_CANCEL received while no CTAPHID_CBOR request is being processed, or on a
    non-active CID SHALL be ignored by the authenticator." Not with INVALID_CHANNEL
    either: on the reserved and broadcast CIDs, an unallocated one, another client's."""
    core = CtapHidCore()
    idle = core_init(core)
    for channel in (0, BROADCAST_CID, 0x12345678, idle):
        assert core_call(core, channel, Command.CANCEL, b"") == []
    # (Another client's channel: test_ctaphid_clients.py.)


def test_init_on_reserved_or_unknown_channel_is_invalid_channel() -> None:
    core = CtapHidCore()
    for channel in (0, 0x12345678):
        out = core_call(core, channel, Command.INIT, b"\x00" * 8)
        assert error_of(out) == (channel, HidError.INVALID_CHANNEL)


def test_invalid_commands() -> None:
    core = CtapHidCore()
    channel = core_init(core)
    for command in (0x00, 0x02, 0x2A, Command.KEEPALIVE, Command.ERROR, 0x40, 0x7F):
        assert error_of(core_call(core, channel, command, b"")) == (channel, HidError.INVALID_CMD)
    nmsg = CtapHidCore(capabilities=Capability.CBOR | Capability.NMSG)
    channel = core_init(nmsg)
    assert error_of(core_call(nmsg, channel, Command.MSG, b"\x00")) == (
        channel,
        HidError.INVALID_CMD,
    )
    assert error_of(core_call(nmsg, channel, Command.WINK, b"")) == (channel, HidError.INVALID_CMD)
    u2f_only = CtapHidCore(capabilities=0)
    channel = core_init(u2f_only)
    assert error_of(core_call(u2f_only, channel, Command.CBOR, b"\x04")) == (
        channel,
        HidError.INVALID_CMD,
    )
    (request,) = core_call(u2f_only, channel, Command.MSG, b"\x00\x03\x00\x00")
    assert isinstance(request, Request) and request.command == Command.MSG


def test_capabilities_can_change_at_run_time() -> None:
    """A device whose protocols change (vfido's versions behaviour): each INIT reports
    the flags of the moment, and a channel's commands are checked against the flags its
    INIT reported (a host is held to what it was told until it INITs again)."""
    flags = [Capability.WINK | Capability.CBOR]
    core = CtapHidCore(capabilities=lambda: flags[0])
    channel = core_init(core)

    def answered(command: int, payload: bytes) -> bool:
        (request,) = core_call(core, channel, command, payload)
        assert isinstance(request, Request), request
        core.respond(request.transaction, b"\x00")
        return True

    assert answered(Command.CBOR, b"\x04")
    flags[0] = Capability.WINK  # U2F only from now on
    assert answered(Command.CBOR, b"\x04")  # this channel was told CBOR
    other = core_init(core)  # a new channel is told the new flags
    assert error_of(core_call(core, other, Command.CBOR, b"\x04")) == (
        other,
        HidError.INVALID_CMD,
    )
    (message,) = decode_messages(reports_of(core_call(core, channel, Command.INIT, b"\x05" * 8)))
    assert message.payload[16] == Capability.WINK  # re-synchronised: told anew
    assert error_of(core_call(core, channel, Command.CBOR, b"\x04")) == (
        channel,
        HidError.INVALID_CMD,
    )
    flags[0] = Capability.CBOR | Capability.NMSG  # CTAP2 only
    assert answered(Command.MSG, b"\x00")  # told at its INIT: no NMSG
    (message,) = decode_messages(reports_of(core_call(core, channel, Command.INIT, b"\x06" * 8)))
    assert message.payload[16] == Capability.CBOR | Capability.NMSG
    assert error_of(core_call(core, channel, Command.MSG, b"\x00")) == (
        channel,
        HidError.INVALID_CMD,
    )


def test_reinit_aborts_partial_message() -> None:
    core = CtapHidCore()
    channel = core_init(core)
    head, rest = request_reports(channel, Command.PING, b"x" * 100)
    core.feed(head, 0.0)
    (message,) = decode_messages(reports_of(core_call(core, channel, Command.INIT, b"\x09" * 8)))
    assert message.channel == channel
    assert message.payload[:8] == b"\x09" * 8
    assert struct.unpack_from(">I", message.payload, 8)[0] == channel  # same channel kept
    assert core.feed(rest, 0.0) == []  # the old message is gone
    assert not core.busy
    (pong,) = decode_messages(reports_of(core_call(core, channel, Command.PING, b"again")))
    assert pong.payload == b"again"


def test_reinit_discards_outstanding_request() -> None:
    core = CtapHidCore()
    channel = core_init(core)
    (request,) = core_call(core, channel, Command.CBOR, b"\x04")
    assert isinstance(request, Request)
    out = core_call(core, channel, Command.INIT, b"\x05" * 8)
    assert Cancel(channel, request.transaction) in out
    assert decode_messages(reports_of(out))[0].command == Command.INIT
    assert core.keepalive(request.transaction, 1) == []
    # Section 11.2.9.1.3: "It will then be ready for a new transaction": a PING is answered,
    # and the next request is taken while the discarded one's handler still unwinds (it was
    # CHANNEL_BUSY until then, and python-fido2 failed on it: outside review).
    (ping,) = decode_messages(reports_of(core_call(core, channel, Command.PING, b"hi")))
    assert (ping.command, ping.payload) == (Command.PING, b"hi")
    (follow,) = core_call(core, channel, Command.CBOR, b"\x04")
    assert isinstance(follow, Request) and follow.transaction != request.transaction
    # One discarded request unwinds at a time: a second re-INIT leaves the device busy.
    core_call(core, channel, Command.INIT, b"\x06" * 8)
    assert error_of(core_call(core, channel, Command.CBOR, b"\x04")) == (
        channel,
        HidError.CHANNEL_BUSY,
    )
    assert core.respond(request.transaction, b"\x00") == []  # the old answer: dropped
    (third,) = core_call(core, channel, Command.CBOR, b"\x04")  # now the next is taken
    assert isinstance(third, Request)
    assert core.respond(follow.transaction, b"\x00") == []  # discarded by the second INIT
    assert decode_messages(core.respond(third.transaction, b"\x00"))[0].payload == b"\x00"
    assert not core.busy


def test_cancel_keepalive_and_response() -> None:
    core = CtapHidCore()
    channel, other = core_init(core), core_init(core)
    assert core_call(core, channel, Command.CANCEL, b"") == []  # nothing to cancel, no answer
    (request,) = core_call(core, channel, Command.CBOR, b"\x01")
    assert isinstance(request, Request)
    (keepalive,) = decode_messages(core.keepalive(request.transaction, 2))
    assert (keepalive.channel, keepalive.command, keepalive.payload) == (
        channel,
        Command.KEEPALIVE,
        b"\x02",
    )
    assert core_call(core, other, Command.CANCEL, b"") == []  # other channel: ignored
    assert core_call(core, channel, Command.CANCEL, b"") == [Cancel(channel, request.transaction)]
    assert core_call(core, channel, Command.CANCEL, b"") == []  # only once
    (response,) = decode_messages(core.respond(request.transaction, b"\x2d"))
    assert (response.command, response.payload) == (Command.CBOR, b"\x2d")
    assert core.keepalive(request.transaction, 1) == []
    assert core.respond(request.transaction, b"\x00") == []


def test_a_cancel_while_a_u2f_request_runs_is_ignored() -> None:
    """Section 11.2.9.1.5: "A CTAPHID_CANCEL received while no CTAPHID_CBOR request is being
    processed, or on a non-active CID SHALL be ignored by the authenticator." A U2F request
    (CTAPHID_MSG) is not cancelled (a transport review: it was marked cancelled, unseen only
    because the U2F presence wait did not look)."""
    core = CtapHidCore()
    channel = core_init(core)
    (request,) = core_call(core, channel, Command.MSG, bytes([0, 3, 0, 0, 0, 0, 0]))
    assert isinstance(request, Request)
    assert core_call(core, channel, Command.CANCEL, b"") == []
    (response,) = decode_messages(core.respond(request.transaction, b"U2F_V2\x90\x00"))
    assert (response.command, response.payload) == (Command.MSG, b"U2F_V2\x90\x00")


def test_wink() -> None:
    core = CtapHidCore()
    channel = core_init(core)
    out = core_call(core, channel, Command.WINK, b"")
    assert out[0] == Wink(channel)
    (message,) = decode_messages(reports_of(out))
    assert (message.command, message.payload) == (Command.WINK, b"")
    assert error_of(core_call(core, channel, Command.WINK, b"x")) == (channel, HidError.INVALID_LEN)


def test_lock() -> None:
    core = CtapHidCore()
    a, b = core_init(core), core_init(core)
    assert error_of(core_call(core, a, Command.LOCK, b"\x0b")) == (a, HidError.INVALID_PAR)
    assert error_of(core_call(core, a, Command.LOCK, b"\x01\x02")) == (a, HidError.INVALID_LEN)
    out = core_call(core, a, Command.LOCK, b"\x02", now=100.0)
    assert Lock(a, 2) in out
    (message,) = decode_messages(reports_of(out))
    assert (message.channel, message.command, message.payload) == (a, Command.LOCK, b"")
    assert error_of(core_call(core, b, Command.PING, b"", now=101.0)) == (
        b,
        HidError.CHANNEL_BUSY,
    )
    assert error_of(core_call(core, BROADCAST_CID, Command.INIT, b"\0" * 8, now=101.0)) == (
        BROADCAST_CID,
        HidError.CHANNEL_BUSY,
    )
    (pong,) = decode_messages(reports_of(core_call(core, a, Command.PING, b"mine", now=101.0)))
    assert pong.payload == b"mine"
    # The lock expires by itself ...
    assert core.tick(102.0) == [Lock(a, 0)]
    (pong,) = decode_messages(reports_of(core_call(core, b, Command.PING, b"b", now=102.0)))
    assert pong.payload == b"b"
    # ... and LOCK 0 releases it early.
    core_call(core, b, Command.LOCK, b"\x0a", now=103.0)
    assert Lock(b, 0) in core_call(core, b, Command.LOCK, b"\x00", now=104.0)
    (pong,) = decode_messages(reports_of(core_call(core, a, Command.PING, b"a", now=104.0)))
    assert pong.payload == b"a"


def test_short_reports_padded_long_reports_ignored() -> None:
    core = CtapHidCore()
    channel = core_init(core)
    short = struct.pack(">IBH", channel, TYPE_INIT | Command.PING, 3) + b"abc"
    (message,) = decode_messages(reports_of(core.feed(short, 0.0)))
    assert message.payload == b"abc"
    assert core.feed(short + b"\0" * 60, 0.0) == []  # 67 bytes: not a report
    assert core.feed(b"", 0.0) == []


def test_channel_table_is_bounded_lru() -> None:
    core = CtapHidCore(max_channels=4)
    first = core_init(core)
    keep = core_init(core)
    for _ in range(2):
        core_init(core)
    core_call(core, keep, Command.PING, b"")  # recently used
    core_init(core)
    assert len(core.channels) == 4
    assert keep in core.channels and first not in core.channels
    for _ in range(10):
        core_init(core)
    assert len(core.channels) == 4
    assert error_of(core_call(core, first, Command.PING, b"")) == (first, HidError.INVALID_CHANNEL)


def test_reset_forgets_channels_and_cancels() -> None:
    core = CtapHidCore()
    channel = core_init(core)
    (request,) = core_call(core, channel, Command.CBOR, b"\x04")
    assert isinstance(request, Request)
    assert core.reset() == [Cancel(channel, request.transaction)]
    assert core.channels == ()
    assert core.respond(request.transaction, b"\x00") == []
    assert not core.busy


def test_encode_message_rejects_oversized() -> None:
    with pytest.raises(ValueError):
        encode_message(1, Command.PING, b"\0" * (MAX_MESSAGE_SIZE + 1))
    assert len(encode_message(1, Command.PING, b"\0" * MAX_MESSAGE_SIZE)) == 129


# -- property test: garbage never breaks the core -----------------------------------------------

_KNOWN = 0x0A0B0C0D


def _structured(data: st.DataObject) -> bytes:
    channel = data.draw(st.sampled_from([0, BROADCAST_CID, _KNOWN, 0x11111111]))
    kind = data.draw(
        st.one_of(
            st.sampled_from([TYPE_INIT | c for c in Command]),
            st.integers(0, 0xFF),
        )
    )
    length = data.draw(st.one_of(st.integers(0, 200), st.integers(0, 0xFFFF)))
    body = data.draw(st.binary(max_size=60))
    return (struct.pack(">IBH", channel, kind, length) + body)[: data.draw(st.integers(0, 70))]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_core_survives_garbage(data: st.DataObject) -> None:
    # The first broadcast INIT allocates _KNOWN, so garbage can hit a live channel.
    ids = iter([_KNOWN.to_bytes(4, "big")])
    core = CtapHidCore(max_channels=8, random_bytes=lambda n: next(ids, None) or os.urandom(n))
    now = 0.0
    steps = data.draw(st.integers(1, 40))
    for _ in range(steps):
        report = data.draw(st.one_of(st.binary(max_size=80), st.builds(lambda: _structured(data))))
        now += data.draw(st.sampled_from([0.0, 0.01, 0.3, 0.6, 11.0]))
        outputs = core.feed(report, now)
        for item in outputs:
            if isinstance(item, bytes):
                assert len(item) == REPORT_SIZE
            else:
                assert isinstance(item, Request | Cancel | Wink | Lock)
        decode_messages(reports_of(outputs))  # every answer is a complete, well-framed message
        for item in outputs:
            if isinstance(item, Request) and data.draw(st.booleans()):
                decode_messages(core.respond(item.transaction, b"\x00"))
    assert_core_recovers(core, now)


def test_host_channel_filter() -> None:
    mine, theirs = HostChannelFilter(), HostChannelFilter()
    init_a = request_reports(BROADCAST_CID, Command.INIT, b"A" * 8)[0]
    init_b = request_reports(BROADCAST_CID, Command.INIT, b"B" * 8)[0]
    mine.note_sent(init_a)
    theirs.note_sent(init_b)
    core = CtapHidCore()
    answer_a = reports_of(core.feed(init_a, 0.0))[0]
    answer_b = reports_of(core.feed(init_b, 0.0))[0]
    assert mine.wants(answer_a) and not mine.wants(answer_b)
    assert not mine.wants(answer_a)  # each nonce is answered once
    channel = struct.unpack_from(">I", answer_a, 15)[0]
    ping = request_reports(channel, Command.PING, b"x")[0]
    assert not mine.wants(ping)  # not used yet
    mine.note_sent(ping)
    (pong,) = reports_of(core.feed(ping, 0.0))
    assert mine.wants(pong) and not theirs.wants(pong)
    assert not mine.wants(pong[:63])
    # An ERROR on the broadcast channel goes to the client whose broadcast request it
    # answers, not to every client that once sent an INIT there (a fuzzer).
    assert theirs.wants(answer_b)  # its first broadcast request, answered
    bad_init = struct.pack(">IBH", BROADCAST_CID, 0x80 | Command.INIT, 7) + bytes(57)
    theirs.note_sent(bad_init)
    (refusal,) = reports_of(core.feed(bad_init, 0.0))
    assert refusal[4] == 0x80 | Command.ERROR
    assert theirs.wants(refusal) and not mine.wants(refusal)
    assert not theirs.wants(refusal)  # answered once
