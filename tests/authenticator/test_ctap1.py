"""CTAP1 / U2F: python-fido2's Ctap1 and U2F client backend against Ctap1Handler."""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature as CryptographyInvalidSignature
from fido2.attestation.base import InvalidSignature
from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap import CtapDevice
from fido2.ctap1 import APDU, ApduError, Ctap1, RegistrationData, SignatureData
from fido2.webauthn import UserVerificationRequirement
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ctap1_helpers import (
    CountingPresence,
    DirectU2fDevice,
    ManualClock,
    RecordingContext,
    extended_apdu,
    short_apdu,
    sw_of,
)
from tests.presence_helpers import ScriptedUser
from tests.rp import ORIGIN, RelyingParty, attestation_fmt, random_user, register, sign_in
from vfido.authenticator.config import Config
from vfido.authenticator.cose import EDDSA, ES256, CredentialKey
from vfido.authenticator.credential_source import (
    SealedCredential,
    decode_credential_id,
    encode_credential_id,
)
from vfido.authenticator.ctap1 import ABANDON_AFTER, Apdu, Ctap1Handler, parse_apdu
from vfido.authenticator.ctap1 import ApduError as HandlerApduError
from vfido.authenticator.env import KeepaliveStatus, Presence, PresenceKind, PresenceResult
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.presence import AutoPresence, DenyPresence

APP = hashlib.sha256(b"https://u2f.example.com").digest()
OTHER_APP = hashlib.sha256(b"https://evil.example.com").digest()

OK, NOT_SATISFIED, WRONG_DATA = 0x9000, 0x6985, 0x6A80
WRONG_LENGTH, INS_NOT_SUPPORTED, CLA_NOT_SUPPORTED, UNKNOWN = 0x6700, 0x6D00, 0x6E00, 0x6F00


@pytest.fixture
def store() -> Iterator[SqliteKeyStore]:
    s = SqliteKeyStore.ephemeral()
    yield s
    s.close()


def make(
    store: SqliteKeyStore,
    presence: Presence | None = None,
    config: Config | None = None,
    clock: ManualClock | None = None,
) -> tuple[Ctap1Handler, DirectU2fDevice, Ctap1]:
    handler = Ctap1Handler(store, presence or AutoPresence(), config or Config(), clock=clock)
    device = DirectU2fDevice(handler)
    return handler, device, Ctap1(device)


def challenge() -> bytes:
    return os.urandom(32)


def sw_error(call: Callable[[], object]) -> int:
    """Run ``call`` expecting an ApduError; return its status word."""
    with pytest.raises(ApduError) as info:
        call()
    return int(info.value.code)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until true or ``timeout`` (a generous bound, not a timing check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


def registration_waiting(
    store: SqliteKeyStore, clock: ManualClock | None = None
) -> tuple[ScriptedUser, CountingPresence, Ctap1Handler, Ctap1]:
    """A key whose user the test scripts (``manual``, its requests and answers counted by
    ``presence``), with a U2F registration for APP already waiting for them: the client was
    told 0x6985 and the prompt is pending. (manual, presence, handler, ctap1)."""
    manual = ScriptedUser()
    presence = CountingPresence(manual.presence)
    handler, _, ctap1 = make(store, presence, clock=clock)
    assert sw_error(lambda: ctap1.register(challenge(), APP)) == NOT_SATISFIED
    assert manual.wait_pending(10) is not None
    return manual, presence, handler, ctap1


# --- VERSION, REGISTER, AUTHENTICATE ------------------------------------------------


def test_get_version(store: SqliteKeyStore) -> None:
    _, _, ctap1 = make(store)
    assert ctap1.get_version() == "U2F_V2"


def test_register_verifies_with_batch_certificate(store: SqliteKeyStore) -> None:
    _, device, ctap1 = make(store)
    chal = challenge()
    reg = ctap1.register(chal, APP)
    reg.verify(APP, chal)
    identity = store.identity()
    assert reg.certificate == identity.attestation_chain[0]
    assert len(reg.public_key) == 65 and reg.public_key[0] == 0x04
    sealed = decode_credential_id(identity.credential_key, APP, reg.key_handle)
    assert sealed is not None and sealed.u2f and sealed.algorithm == ES256
    # The signature covers the challenge and application parameters.
    with pytest.raises(InvalidSignature):
        reg.verify(APP, challenge())
    with pytest.raises(InvalidSignature):
        reg.verify(OTHER_APP, chal)
    assert device.status_words == [OK]  # auto presence: no retry needed


def test_registrations_are_distinct(store: SqliteKeyStore) -> None:
    _, _, ctap1 = make(store)
    a, b = ctap1.register(challenge(), APP), ctap1.register(challenge(), APP)
    assert a.key_handle != b.key_handle and a.public_key != b.public_key


def test_authenticate_verifies_and_counter_increases(store: SqliteKeyStore) -> None:
    _, _, ctap1 = make(store)
    reg = ctap1.register(challenge(), APP)
    counters = []
    for _ in range(3):
        chal = challenge()
        sig = ctap1.authenticate(chal, APP, reg.key_handle)
        sig.verify(APP, chal, reg.public_key)
        assert sig.user_presence == 0x01
        counters.append(sig.counter)
        with pytest.raises(CryptographyInvalidSignature):
            sig.verify(APP, challenge(), reg.public_key)
    assert counters == [1, 2, 3]
    assert store.get_counter(reg.key_handle) == 3


def test_counter_is_per_key_handle(store: SqliteKeyStore) -> None:
    _, _, ctap1 = make(store)
    a, b = ctap1.register(challenge(), APP), ctap1.register(challenge(), OTHER_APP)
    assert ctap1.authenticate(challenge(), APP, a.key_handle).counter == 1
    assert ctap1.authenticate(challenge(), APP, a.key_handle).counter == 2
    assert ctap1.authenticate(challenge(), OTHER_APP, b.key_handle).counter == 1


def test_constant_zero_counter(store: SqliteKeyStore) -> None:
    _, _, ctap1 = make(store, config=Config(constant_zero_counter=True))
    reg = ctap1.register(challenge(), APP)
    for _ in range(2):
        chal = challenge()
        sig = ctap1.authenticate(chal, APP, reg.key_handle)
        sig.verify(APP, chal, reg.public_key)
        assert sig.counter == 0
    assert store.get_counter(reg.key_handle) == 0


def test_counter_saturates_at_32_bits(store: SqliteKeyStore) -> None:
    _, _, ctap1 = make(store)
    reg = ctap1.register(challenge(), APP)
    store.increment_counter(reg.key_handle, 2**32 + 5)
    chal = challenge()
    sig = ctap1.authenticate(chal, APP, reg.key_handle)
    assert sig.counter == 0xFFFFFFFF
    sig.verify(APP, chal, reg.public_key)


def test_check_only(store: SqliteKeyStore) -> None:
    presence = CountingPresence(AutoPresence())
    _, _, ctap1 = make(store, presence)
    reg = ctap1.register(challenge(), APP)
    asked = len(presence.requests)
    # Our handle for this app: "conditions not satisfied" (the U2F way of saying yes).
    assert sw_error(lambda: ctap1.authenticate(challenge(), APP, reg.key_handle, True)) == (
        NOT_SATISFIED
    )
    # Same handle, other app; and a handle that is not ours at all.
    assert sw_error(lambda: ctap1.authenticate(challenge(), OTHER_APP, reg.key_handle, True)) == (
        WRONG_DATA
    )
    assert sw_error(lambda: ctap1.authenticate(challenge(), APP, os.urandom(64), True)) == (
        WRONG_DATA
    )
    assert len(presence.requests) == asked  # check-only never asks the user
    assert store.get_counter(reg.key_handle) == 0


def test_dont_enforce_user_presence(store: SqliteKeyStore) -> None:
    ctap1 = make(store, AutoPresence())[2]
    reg = ctap1.register(challenge(), APP)
    # Same keystore, a key whose user refuses everything: no presence is needed for 0x08.
    presence = CountingPresence(DenyPresence())
    denying = Ctap1(DirectU2fDevice(Ctap1Handler(store, presence, Config())))
    chal = challenge()
    data = chal + APP + bytes([len(reg.key_handle)]) + reg.key_handle
    sig = SignatureData(denying.send_apdu(ins=0x02, p1=0x08, data=data))
    assert sig.user_presence == 0x00
    assert sig.counter == 1
    sig.verify(APP, chal, reg.public_key)
    assert presence.requests == []
    # And with 0x03 the same user refuses.
    assert sw_error(lambda: denying.authenticate(challenge(), APP, reg.key_handle)) == (
        NOT_SATISFIED
    )


def test_wrong_app_param_rejected(store: SqliteKeyStore) -> None:
    _, _, ctap1 = make(store)
    reg = ctap1.register(challenge(), APP)
    assert sw_error(lambda: ctap1.authenticate(challenge(), OTHER_APP, reg.key_handle)) == (
        WRONG_DATA
    )


@pytest.mark.parametrize("position", [0, 1, 13, 30, -17, -1])
def test_flipped_key_handle_rejected(store: SqliteKeyStore, position: int) -> None:
    _, _, ctap1 = make(store)
    kh = bytearray(ctap1.register(challenge(), APP).key_handle)
    kh[position] ^= 0x40
    assert sw_error(lambda: ctap1.authenticate(challenge(), APP, bytes(kh))) == WRONG_DATA


def test_truncated_and_extended_key_handles_rejected(store: SqliteKeyStore) -> None:
    _, _, ctap1 = make(store)
    kh = ctap1.register(challenge(), APP).key_handle
    for bad in (kh[:-1], kh + b"\x00", kh[1:], b"\x01", bytes(255)):
        assert sw_error(functools.partial(ctap1.authenticate, challenge(), APP, bad)) == (
            WRONG_DATA
        )


def test_key_handle_of_another_key_rejected(store: SqliteKeyStore) -> None:
    other_store = SqliteKeyStore.ephemeral()
    try:
        kh = make(other_store)[2].register(challenge(), APP).key_handle
    finally:
        other_store.close()
    _, _, ctap1 = make(store)
    assert sw_error(lambda: ctap1.authenticate(challenge(), APP, kh)) == WRONG_DATA


def _ctap2_style_handle(
    store: SqliteKeyStore, alg: int = ES256, **kw: object
) -> tuple[bytes, bytes]:
    key = CredentialKey.generate(alg)
    sealed = SealedCredential(algorithm=alg, private_key=key.private_bytes(), **kw)  # type: ignore[arg-type]
    kh = encode_credential_id(store.identity().credential_key, APP, sealed)
    public = key.cose_public_key()
    raw = b"\x04" + public[-2] + public[-3] if alg == ES256 else b""
    return kh, raw


def test_ctap2_credentials_over_u2f(store: SqliteKeyStore) -> None:
    _, _, ctap1 = make(store)
    # A non-discoverable ES256 CTAP2 credential with rpIdHash == appParam works.
    kh, public = _ctap2_style_handle(store)
    chal = challenge()
    ctap1.authenticate(chal, APP, kh).verify(APP, chal, public)
    # credProtect level 3 needs UV, which U2F cannot do.
    kh3, _ = _ctap2_style_handle(store, cred_protect=3)
    assert sw_error(lambda: ctap1.authenticate(challenge(), APP, kh3)) == WRONG_DATA
    # A discoverable credential whose record was deleted (never stored here).
    khd, _ = _ctap2_style_handle(store, discoverable=True)
    assert sw_error(lambda: ctap1.authenticate(challenge(), APP, khd)) == WRONG_DATA
    # U2F is ES256 only.
    khe, _ = _ctap2_style_handle(store, alg=EDDSA)
    assert sw_error(lambda: ctap1.authenticate(challenge(), APP, khe)) == WRONG_DATA


def test_keystore_failure_is_a_status_word(store: SqliteKeyStore) -> None:
    handler, _, ctap1 = make(store)
    reg = ctap1.register(challenge(), APP)
    store.close()
    request = challenge() + APP + bytes([len(reg.key_handle)]) + reg.key_handle
    assert sw_of(handler.process(extended_apdu(0x02, 0x03, request), RecordingContext())) == (
        UNKNOWN
    )
    assert handler.process(extended_apdu(0x03), RecordingContext()) == b"U2F_V2\x90\x00"


# --- APDU encodings and malformed requests ---------------------------------------------


def test_apdu_parser_cases() -> None:
    assert parse_apdu(b"\x00\x03\x00\x00") == Apdu(0, 3, 0, 0, b"")
    assert parse_apdu(b"\x00\x03\x00\x00\x00") == Apdu(0, 3, 0, 0, b"", le=0)
    assert parse_apdu(b"\x00\x01\x03\x00\x02ab") == Apdu(0, 1, 3, 0, b"ab")
    assert parse_apdu(b"\x00\x01\x00\x00\x02ab\x00") == Apdu(0, 1, 0, 0, b"ab", le=0)
    assert parse_apdu(b"\x00\x03\x00\x00\x00\x01\x00") == Apdu(0, 3, 0, 0, b"", 256, True)
    assert parse_apdu(b"\x00\x01\x00\x00\x00\x00\x02ab") == Apdu(0, 1, 0, 0, b"ab", None, True)
    assert parse_apdu(b"\x00\x01\x00\x00\x00\x00\x02ab\x00\x00") == Apdu(0, 1, 0, 0, b"ab", 0, True)
    # python-fido2's VERSION: extended Lc = 0 followed by Le.
    assert parse_apdu(b"\x00\x03\x00\x00\x00\x00\x00\x00\x00") == Apdu(0, 3, 0, 0, b"", 0, True)
    for bad in (
        b"",
        b"\x00\x03\x00",
        b"\x00\x03\x00\x00\x00\x00",  # extended marker with one length byte
        b"\x00\x01\x00\x00\x03ab",  # short Lc larger than the data
        b"\x00\x01\x00\x00\x01ab\x00",  # short Lc smaller than the data
        b"\x00\x01\x00\x00\x00\x00\x03ab",  # extended Lc larger than the data
        b"\x00\x01\x00\x00\x00\x00\x01ab",  # extended Lc smaller than the data
        b"\x00\x01\x00\x00\x00\x00\x02ab\x00",  # extended Le cut short
    ):
        with pytest.raises(HandlerApduError):
            parse_apdu(bad)


@pytest.mark.parametrize("encode", [short_apdu, extended_apdu], ids=["short", "extended"])
@pytest.mark.parametrize("le", [None, 0], ids=["no-le", "le"])
def test_register_and_authenticate_in_both_encodings(
    store: SqliteKeyStore, encode: object, le: int | None
) -> None:
    assert callable(encode)
    handler = Ctap1Handler(store, AutoPresence(), Config())
    ctx = RecordingContext()
    chal = challenge()
    response = handler.process(encode(0x01, 0x03, chal + APP, le), ctx)
    assert sw_of(response) == OK
    reg = RegistrationData(response[:-2])
    reg.verify(APP, chal)
    request = chal + APP + bytes([len(reg.key_handle)]) + reg.key_handle
    response = handler.process(encode(0x02, 0x03, request, le), ctx)
    assert sw_of(response) == OK
    SignatureData(response[:-2]).verify(APP, chal, reg.public_key)
    assert handler.process(encode(0x03, 0, b"", le), ctx) == b"U2F_V2\x90\x00"


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        (b"", WRONG_LENGTH),
        (b"\x00", WRONG_LENGTH),
        (b"\x00\x03\x00", WRONG_LENGTH),
        (b"\x80\x03\x00\x00", CLA_NOT_SUPPORTED),
        (b"\x01\x01\x00\x00" + b"\x00\x00\x40" + bytes(64), CLA_NOT_SUPPORTED),
        (b"\xff", CLA_NOT_SUPPORTED),
        (b"\x00\x04\x00\x00", INS_NOT_SUPPORTED),
        (b"\x00\xc0\x00\x00\x00\x00\x00", INS_NOT_SUPPORTED),
        (b"\x00\x40\x00\x00\x00\x00\x00", INS_NOT_SUPPORTED),
        (b"\x00\x03\x00\x00\x01a", WRONG_LENGTH),  # VERSION takes no data
        (b"\x00\x03\x00\x00\x00\x00", WRONG_LENGTH),  # half an extended length
        (short_apdu(0x01, 0x03, bytes(63)), WRONG_LENGTH),  # REGISTER needs 64 bytes
        (extended_apdu(0x01, 0x03, bytes(65)), WRONG_LENGTH),
        (extended_apdu(0x01, 0x03), WRONG_LENGTH),
        (extended_apdu(0x01, 0x03, bytes(64))[:-1], WRONG_LENGTH),  # truncated body
        (extended_apdu(0x02, 0x03, bytes(64)), WRONG_LENGTH),  # no key handle length
        (extended_apdu(0x02, 0x03, bytes(64) + b"\x05abcd"), WRONG_LENGTH),  # L too big
        (extended_apdu(0x02, 0x03, bytes(64) + b"\x03abcd"), WRONG_LENGTH),  # L too small
        (extended_apdu(0x02, 0x03, bytes(64) + b"\xff" + bytes(254)), WRONG_LENGTH),
        (extended_apdu(0x02, 0x03, bytes(64) + b"\x00"), WRONG_DATA),  # empty key handle
        (extended_apdu(0x02, 0x03, bytes(64) + b"\x04abcd"), WRONG_DATA),  # not ours
        (extended_apdu(0x02, 0x07, bytes(64) + b"\xff" + bytes(255)), WRONG_DATA),
    ],
)
def test_malformed_apdus(store: SqliteKeyStore, apdu: bytes, sw: int) -> None:
    presence = CountingPresence(AutoPresence())
    handler = Ctap1Handler(store, presence, Config())
    assert handler.process(apdu, RecordingContext()) == sw.to_bytes(2, "big")
    assert presence.requests == []


@pytest.mark.parametrize("control", [0x00, 0x01, 0x04, 0x83, 0xFF])
def test_unknown_control_byte(store: SqliteKeyStore, control: int) -> None:
    handler, _, ctap1 = make(store)
    kh = ctap1.register(challenge(), APP).key_handle
    request = challenge() + APP + bytes([len(kh)]) + kh
    assert sw_of(handler.process(extended_apdu(0x02, control, request), RecordingContext())) == (
        WRONG_DATA
    )
    assert store.get_counter(kh) == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.tuples(
            st.sampled_from([0x01, 0x02, 0x03, 0x04]),
            st.sampled_from([0x00, 0x03, 0x07, 0x08]),
            st.binary(max_size=200),
            st.booleans(),
        ).map(lambda t: (extended_apdu if t[3] else short_apdu)(t[0], t[1], t[2][:255])),
    )
)
def test_any_apdu_gets_a_status_word(apdu: bytes) -> None:
    response = _FUZZ_HANDLER.process(apdu, RecordingContext())
    assert len(response) >= 2
    assert sw_of(response) in {
        OK,
        NOT_SATISFIED,
        WRONG_DATA,
        WRONG_LENGTH,
        INS_NOT_SUPPORTED,
        CLA_NOT_SUPPORTED,
    }
    if sw_of(response) == OK:
        assert apdu[1] in (0x01, 0x03)  # random data never authenticates


_FUZZ_STORE = SqliteKeyStore.ephemeral()
_FUZZ_HANDLER = Ctap1Handler(_FUZZ_STORE, DenyPresence(), Config())


# --- user presence -----------------------------------------------------------------------


def test_presence_denied_client_keeps_polling(store: SqliteKeyStore) -> None:
    presence = CountingPresence(DenyPresence())
    _, device, ctap1 = make(store, presence)
    # A direct request: 0x6985, the U2F "touch me" answer.
    assert sw_error(lambda: ctap1.register(challenge(), APP)) == NOT_SATISFIED
    # python-fido2's U2F client backend polls on 0x6985 until its event is set.
    stop = threading.Event()
    polls = 6

    def observe(sw: int) -> None:
        if len(device.status_words) >= polls:
            stop.set()

    device.on_response = observe
    rp = RelyingParty(root_der=store.identity().attestation_chain[-1])
    options, _ = rp.begin_registration(*random_user())
    client = Fido2Client(
        device,
        client_data_collector=DefaultClientDataCollector(ORIGIN),
        user_interaction=UserInteraction(),
    )
    with pytest.raises(ClientError) as info:
        client.make_credential(options.public_key, event=stop)
    assert info.value.code == ClientError.ERR.TIMEOUT
    assert len(device.status_words) >= polls
    assert set(device.status_words) == {NOT_SATISFIED}
    # The refusal sticks while the client polls: the user is not asked again and again.
    assert len(presence.requests) == 2  # once for the direct request, once for the client's app
    assert all(r.kind is PresenceKind.REGISTER for r in presence.requests)
    assert presence.results == [PresenceResult.DENIED] * 2


def test_manual_approval_after_polling(store: SqliteKeyStore) -> None:
    manual = ScriptedUser()
    presence = CountingPresence(manual.presence)
    _, device, ctap1 = make(store, presence)
    result: list[RegistrationData] = []
    chal = challenge()

    def client() -> None:
        while True:
            try:
                result.append(ctap1.register(chal, APP))
                return
            except ApduError as exc:
                if exc.code != APDU.USE_NOT_SATISFIED:
                    raise
                time.sleep(0.05)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        assert wait_for(lambda: NOT_SATISFIED in device.status_words)
        pending = manual.wait_pending(10)
        assert pending is not None and pending.kind is PresenceKind.REGISTER
        assert manual.approve()
    finally:
        thread.join(20)
    assert result, "registration never completed"
    result[0].verify(APP, chal)
    assert device.status_words[-1] == OK
    assert len(presence.requests) == 1  # all the retries joined one prompt
    assert isinstance(device.context, RecordingContext)
    assert KeepaliveStatus.UPNEEDED in device.context.keepalives


def test_approval_is_for_one_command_and_one_app(store: SqliteKeyStore) -> None:
    manual, presence, _, ctap1 = registration_waiting(store)
    assert manual.approve()
    assert wait_for(lambda: presence.results == [PresenceResult.GRANTED])
    # The approval was for APP: another application's request does not get it.
    assert sw_error(lambda: ctap1.register(challenge(), OTHER_APP)) == NOT_SATISFIED
    assert wait_for(lambda: len(presence.requests) == 2)
    assert manual.wait_pending(10) is not None
    assert manual.approve()
    assert wait_for(lambda: presence.results[-1] is PresenceResult.GRANTED)
    chal = challenge()
    ctap1.register(chal, OTHER_APP).verify(OTHER_APP, chal)
    # Used up: the next registration asks again.
    assert sw_error(lambda: ctap1.register(challenge(), OTHER_APP)) == NOT_SATISFIED
    assert wait_for(lambda: len(presence.requests) == 3)
    # An approved REGISTER prompt is not an approved AUTHENTICATE.
    assert manual.approve()
    assert wait_for(lambda: presence.results[-1] is PresenceResult.GRANTED)
    kh = _ctap2_style_handle(store)[0]
    assert sw_error(lambda: ctap1.authenticate(challenge(), APP, kh)) == NOT_SATISFIED
    assert wait_for(lambda: len(presence.requests) == 4)
    assert presence.requests[-1].kind is PresenceKind.AUTHENTICATE
    manual.deny()


def test_auto_presence_needs_no_retry_for_authenticate(store: SqliteKeyStore) -> None:
    presence = CountingPresence(AutoPresence())
    _, device, ctap1 = make(store, presence)
    reg = ctap1.register(challenge(), APP)
    ctap1.authenticate(challenge(), APP, reg.key_handle)
    assert device.status_words == [OK, OK]
    assert [r.kind for r in presence.requests] == [
        PresenceKind.REGISTER,
        PresenceKind.AUTHENTICATE,
    ]


def test_abandoned_prompt_is_cancelled(store: SqliteKeyStore) -> None:
    clock = ManualClock()
    manual, presence, _, ctap1 = registration_waiting(store, clock)
    clock.advance(ABANDON_AFTER / 2)
    assert sw_error(lambda: ctap1.register(challenge(), APP)) == NOT_SATISFIED
    clock.advance(ABANDON_AFTER / 2 + 0.5)  # still polled recently enough
    assert manual.pending is not None and presence.results == []
    clock.advance(ABANDON_AFTER)  # the client went away
    assert wait_for(lambda: presence.results == [PresenceResult.CANCELLED])
    assert manual.pending is None
    # A late approval finds nothing; the next request asks afresh.
    assert not manual.approve()
    assert sw_error(lambda: ctap1.register(challenge(), APP)) == NOT_SATISFIED
    assert wait_for(lambda: len(presence.requests) == 2)
    manual.deny()


def test_abandoned_approval_is_not_used_later(store: SqliteKeyStore) -> None:
    clock = ManualClock()
    manual, presence, _, ctap1 = registration_waiting(store, clock)
    assert manual.approve()
    assert wait_for(lambda: presence.results == [PresenceResult.GRANTED])
    clock.advance(ABANDON_AFTER + 1)
    assert sw_error(lambda: ctap1.register(challenge(), APP)) == NOT_SATISFIED
    assert wait_for(lambda: len(presence.requests) == 2)
    manual.deny()


@pytest.mark.parametrize("how", ["cancel_presence", "power_cycle"])
def test_pending_prompt_cancelled_explicitly(store: SqliteKeyStore, how: str) -> None:
    manual, presence, handler, _ = registration_waiting(store)
    getattr(handler, how)()
    assert wait_for(lambda: presence.results == [PresenceResult.CANCELLED])
    assert manual.pending is None


def test_presence_front_end_failure_is_not_presence(store: SqliteKeyStore) -> None:
    class Broken:
        def request_presence(self, request: object, context: object, timeout: float) -> object:
            raise RuntimeError("front end crashed")

    _, _, ctap1 = make(store, Broken())  # type: ignore[arg-type]
    assert sw_error(lambda: ctap1.register(challenge(), APP)) == NOT_SATISFIED


# --- the whole U2F path of python-fido2's WebAuthn client -----------------------------


def test_webauthn_over_u2f_backend(store: SqliteKeyStore) -> None:
    _, device, _ = make(store)
    rp = RelyingParty(root_der=store.identity().attestation_chain[-1])
    client = Fido2Client(
        device,
        client_data_collector=DefaultClientDataCollector(ORIGIN),
        user_interaction=UserInteraction(),
    )
    assert attestation_fmt(register(client, rp)) == "fido-u2f"
    [cred] = rp.credentials
    assert [sign_in(client, rp) for _ in range(2)] == [1, 2]
    # Registering again with the credential excluded: python-fido2 finds it by check-only.
    options, _ = rp.begin_registration(
        *random_user(), user_verification=UserVerificationRequirement.DISCOURAGED
    )
    assert [c.id for c in options.public_key.exclude_credentials or []] == [cred.credential_id]
    with pytest.raises(ClientError) as info:
        client.make_credential(options.public_key)
    assert info.value.code == ClientError.ERR.DEVICE_INELIGIBLE


# --- through the Authenticator (CTAPHID_MSG entry point) ---------------------------------


def test_through_authenticator_handle_msg(store: SqliteKeyStore) -> None:
    from vfido.authenticator.device import Authenticator

    manual = ScriptedUser()
    presence = CountingPresence(manual.presence)
    authenticator = Authenticator(store, presence, Config())
    device = DirectU2fDevice(authenticator.handle_msg)
    ctap1 = Ctap1(device)
    assert ctap1.get_version() == "U2F_V2"
    # A pending U2F prompt ...
    assert sw_error(lambda: ctap1.register(challenge(), APP)) == NOT_SATISFIED
    assert manual.wait_pending(10) is not None
    # ... ends when a CTAP2 request arrives (here authenticatorGetInfo).
    assert authenticator.handle_cbor(b"\x04", RecordingContext())[0] == 0
    assert wait_for(lambda: presence.results == [PresenceResult.CANCELLED])
    assert wait_for(lambda: manual.pending is None)
    # The next poll asks afresh; approved, it registers.
    chal = challenge()
    result: list[RegistrationData] = []

    def approve_when_asked() -> None:
        if manual.wait_pending(10) is not None:
            manual.approve()

    helper = threading.Thread(target=approve_when_asked)
    helper.start()
    try:
        while not result:
            try:
                result.append(ctap1.register(chal, APP))
            except ApduError as exc:
                assert exc.code == NOT_SATISFIED
                time.sleep(0.05)
    finally:
        helper.join(20)
    result[0].verify(APP, chal)
    # Dont-enforce needs nobody; power cycle leaves key handles valid.
    authenticator.power_cycle()
    data = chal + APP + bytes([len(result[0].key_handle)]) + result[0].key_handle
    signed = SignatureData(ctap1.send_apdu(ins=0x02, p1=0x08, data=data))
    signed.verify(APP, chal, result[0].public_key)
    assert signed.user_presence == 0 and signed.counter == 1


def test_u2f_client_over_inprocess_ctaphid_with_manual_user(store: SqliteKeyStore) -> None:
    """python-fido2's U2F client backend over real CTAPHID framing, a user approving late."""
    from fido2.hid import CtapHidDevice

    from vfido.authenticator.device import Authenticator
    from vfido.transports.inprocess import open_device

    manual = ScriptedUser()
    presence = CountingPresence(manual.presence)
    hid = open_device(Authenticator(store, presence, Config()))
    assert isinstance(hid, CtapHidDevice)

    class U2fOnly(CtapDevice):
        """The CTAPHID device minus its CBOR capability: the client takes the U2F path."""

        capabilities = 0

        def call(self, *args: Any, **kwargs: Any) -> bytes:
            return hid.call(*args, **kwargs)

        @classmethod
        def list_devices(cls) -> Iterator[CtapDevice]:
            return iter(())

    def approver() -> None:
        for _ in range(2):  # registration, then authentication
            if manual.wait_pending(20) is None:
                return
            time.sleep(0.6)  # a slow user: the client gets 0x6985 and polls meanwhile
            manual.approve()
            wait_for(lambda: manual.pending is None)

    helper = threading.Thread(target=approver)
    helper.start()
    try:
        rp = RelyingParty(root_der=store.identity().attestation_chain[-1])
        client = Fido2Client(
            U2fOnly(),
            client_data_collector=DefaultClientDataCollector(ORIGIN),
            user_interaction=UserInteraction(),
        )
        assert attestation_fmt(register(client, rp)) == "fido-u2f"
        assert sign_in(client, rp) == 1
    finally:
        helper.join(30)
        hid.close()
    assert [r.kind for r in presence.requests] == [
        PresenceKind.REGISTER,
        PresenceKind.AUTHENTICATE,
    ]
