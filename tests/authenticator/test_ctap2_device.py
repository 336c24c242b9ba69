"""Dispatcher, getInfo, reset, selection and robustness against malformed input."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from fido2 import cbor as fido_cbor
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ctap2_helpers import (
    CLIENT_DATA_HASH,
    RP_ID,
    DenyPresence,
    EventContext,
    Key,
    NeverPresence,
    ScriptedPresence,
    credential_data,
    descriptor,
    get_assertion_map,
    make_credential_map,
    make_key,
    params,
    rp,
    user,
)
from vfido.authenticator import cbor
from vfido.authenticator.config import Config
from vfido.authenticator.cose import CLASSICAL_ALGORITHMS, supported_algorithms
from vfido.authenticator.env import PresenceKind, PresenceResult
from vfido.authenticator.errors import CtapStatus
from vfido.authenticator.get_info import MAX_CREDENTIAL_ID_LENGTH

VALID_STATUSES = {int(s) for s in CtapStatus}


# --- getInfo -------------------------------------------------------------------


def test_get_info_fields() -> None:
    key = make_key()
    info = Ctap2(key.device).get_info()
    assert info.versions == ["U2F_V2", "FIDO_2_0", "FIDO_2_1", "FIDO_2_3"]
    assert info.extensions == [
        "credProtect",
        "hmac-secret",
        "hmac-secret-mc",
        "credBlob",
        "largeBlobKey",
        "minPinLength",
        "pinComplexityPolicy",
        "thirdPartyPayment",
        "previewSign",
    ]
    assert bytes(info.aaguid) == key.store.identity().aaguid
    assert info.options == {
        "rk": True,
        "up": True,
        "plat": False,
        "clientPin": False,
        "pinUvAuthToken": True,
        "credMgmt": True,
        "largeBlobs": True,
        "authnrCfg": True,
        "alwaysUv": False,
        "makeCredUvNotRqd": True,
        "setMinPINLength": True,
        "perCredMgmtRO": True,
    }
    assert info.max_msg_size == 7609
    assert info.pin_uv_protocols == [2, 1]
    assert info.max_large_blob == 8192
    assert info.force_pin_change is False
    assert info.min_pin_length == 4
    assert info.max_cred_blob_length == 32
    assert info.max_rpids_for_min_pin == 8
    assert info.remaining_disc_creds == Config().max_resident_credentials
    # CTAP 2.2 section 6.4 (0x16): "Support for "none" attestation is implied and MUST be
    # omitted."
    assert info.attestation_formats == ["packed"]
    assert info.max_creds_in_list == Config().max_credential_count_in_list
    assert info.max_cred_id_length == MAX_CREDENTIAL_ID_LENGTH
    assert info.transports == ["usb"]
    # ML-DSA is opt-in (Config.mldsa): Firefox cannot parse it in getInfo.
    assert info.algorithms == [{"type": "public-key", "alg": a} for a in CLASSICAL_ALGORITHMS]
    assert info.firmware_version == Config().firmware_version


def test_get_info_follows_config() -> None:
    key = make_key(
        Config(
            max_msg_size=2048,
            algorithms=(-8, -7),
            firmware_version=7,
            max_credential_count_in_list=4,
        )
    )
    status, raw = key.call(0x04)
    assert status == CtapStatus.OK
    assert raw[5] == 2048
    assert raw[7] == 4
    assert raw[10] == [{"type": "public-key", "alg": -8}, {"type": "public-key", "alg": -7}]
    assert raw[14] == 7
    assert raw[6] == [2, 1]
    assert "ep" not in raw[4] and "uv" not in raw[4] and "bioEnroll" not in raw[4]
    assert key.raw(0x04, b"\xa0")[0] == CtapStatus.INVALID_LENGTH


def test_max_credential_id_length_bounds_real_ids() -> None:
    key = make_key(Config(mldsa=True, fully_specified_algorithms=True))
    for alg in supported_algorithms():
        att = key.ctap2().make_credential(
            CLIENT_DATA_HASH, rp(), user(), params(alg), options={"rk": True}
        )
        assert len(credential_data(att).credential_id) <= MAX_CREDENTIAL_ID_LENGTH


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attestation": "basic"},
        {"presence_timeout": 0},
        {"reset_window": -1},
        {"max_msg_size": 100},
        {"algorithms": ()},
        {"algorithms": (-7, -7)},
        {"algorithms": (-999,)},
        {"firmware_version": -1},
        {"max_credential_count_in_list": 0},
        {"next_assertion_timeout": 0},
    ],
)
def test_config_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Config(**kwargs)


# --- dispatcher ----------------------------------------------------------------


def test_message_level_errors() -> None:
    key = make_key(Config(max_msg_size=1024))
    assert key.authenticator.handle_cbor(b"", EventContext()) == bytes([CtapStatus.INVALID_LENGTH])
    for command in (0x00, 0x03, 0x05, 0x09, 0x0E, 0x40, 0x41, 0xFF):
        assert key.raw(command)[0] == CtapStatus.INVALID_COMMAND
    for command in (0x06, 0x0A, 0x0C, 0x0D):  # CTAP 2.1 commands need their parameters
        assert key.raw(command)[0] == CtapStatus.MISSING_PARAMETER
    too_big = cbor.encode(make_credential_map(user=user(name="x" * 1100)))
    assert key.raw(0x01, too_big)[0] == CtapStatus.REQUEST_TOO_LARGE
    assert key.store.count_credentials() == 0


@pytest.mark.parametrize(
    "payload",
    [
        b"\xa1\x01\x58\x20" + bytes(32) + b"\x00",  # trailing byte
        b"\xa2\x02\x61x\x01\x58\x20" + bytes(32),  # keys out of order
        b"\xa2\x01\x61x\x01\x61x",  # duplicate key
        b"\xa1\x18\x01\x61x",  # non-shortest key
        b"\xbf\x01\x61x\xff",  # indefinite map
        b"\xa1\x01\x58\x20" + bytes(31),  # truncated
        b"\xa1\x01\xc1\x00",  # tag
        b"\xa1\x01\xfb" + bytes(8),  # float
    ],
)
@pytest.mark.parametrize("command", [0x01, 0x02])
def test_non_canonical_cbor_rejected(command: int, payload: bytes) -> None:
    key = make_key()
    assert key.raw(command, payload)[0] == CtapStatus.INVALID_CBOR
    assert key.presence.requests == []
    assert key.store.count_credentials() == 0


def test_valid_request_made_non_canonical_is_rejected() -> None:
    key = make_key()
    good = cbor.encode(make_credential_map())
    assert good[0] == 0xA4
    # The same map with its count in a two-byte form.
    assert key.raw(0x01, b"\xb8\x04" + good[1:])[0] == CtapStatus.INVALID_CBOR
    assert key.raw(0x01, good + b"\x00")[0] == CtapStatus.INVALID_CBOR
    assert key.raw(0x01, good[:-1])[0] == CtapStatus.INVALID_CBOR
    assert key.raw(0x01, good)[0] == CtapStatus.OK


def test_nesting_deeper_than_four_rejected() -> None:
    key = make_key()
    deep = make_credential_map(extensions={"x": {"y": [{"z": 1}]}})  # five levels
    assert key.call(0x01, deep)[0] == CtapStatus.INVALID_CBOR
    four = make_credential_map(extensions={"x": {"y": [1]}})
    assert key.call(0x01, four)[0] == CtapStatus.OK


def test_internal_errors_become_other_without_leaking(caplog: pytest.LogCaptureFixture) -> None:
    class Exploding:
        def request_presence(self, request: Any, context: Any, timeout: float) -> PresenceResult:
            raise RuntimeError("secret-value-123")

    key = make_key(presence=Exploding())
    with caplog.at_level(logging.DEBUG):
        assert key.call(0x01, make_credential_map())[0] == CtapStatus.OTHER
    assert "secret-value-123" not in caplog.text
    assert "RuntimeError" in caplog.text
    assert key.store.count_credentials() == 0
    # Still works afterwards.
    assert key.call(0x04)[0] == CtapStatus.OK


def test_handle_msg_delegates_to_ctap1() -> None:
    key = make_key()
    # U2F VERSION: "U2F_V2" + 9000.
    assert key.authenticator.handle_msg(b"\x00\x03\x00\x00\x00", EventContext()) == (
        b"U2F_V2\x90\x00"
    )


def test_wink_and_power_cycle_do_not_disturb() -> None:
    key = make_key()
    key.authenticator.wink()
    key.authenticator.power_cycle()
    assert key.call(0x04)[0] == CtapStatus.OK


# --- reset and selection ------------------------------------------------------------


def _register(key: Key, *, rk: bool) -> bytes:
    att = key.ctap2().make_credential(CLIENT_DATA_HASH, rp(), user(), params(), options={"rk": rk})
    return bytes(credential_data(att).credential_id)


def test_reset_erases_everything_and_kills_old_ids() -> None:
    key = make_key()
    server_side = _register(key, rk=False)
    resident = _register(key, rk=True)
    key.ctap2().get_assertion(RP_ID, CLIENT_DATA_HASH, [descriptor(server_side)])
    aaguid = key.store.identity().aaguid
    key.ctap2().reset()
    assert key.presence.requests[-1].kind is PresenceKind.RESET
    assert key.store.count_credentials() == 0
    assert key.store.identity().aaguid == aaguid
    for cred_id in (server_side, resident):
        status, _ = key.call(0x02, get_assertion_map(allow_list=[descriptor(cred_id)]))
        assert status == CtapStatus.NO_CREDENTIALS
        # Nor are they excluded any more.
        status, _ = key.call(0x01, make_credential_map(exclude_list=[descriptor(cred_id)]))
        assert status == CtapStatus.OK
    assert key.call(0x02, get_assertion_map())[0] == CtapStatus.NO_CREDENTIALS


def test_reset_window() -> None:
    key = make_key(Config(reset_window=10.0))
    _register(key, rk=True)
    key.clock.advance(10.5)
    assert key.raw(0x07)[0] == CtapStatus.NOT_ALLOWED
    assert key.store.count_credentials() == 1
    # A power cycle reopens the window.
    key.authenticator.power_cycle()
    key.clock.advance(9.5)
    assert key.raw(0x07)[0] == CtapStatus.OK
    assert key.store.count_credentials() == 0
    assert key.raw(0x07, b"\xa0")[0] == CtapStatus.INVALID_LENGTH


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (PresenceResult.DENIED, CtapStatus.OPERATION_DENIED),
        (PresenceResult.TIMEOUT, CtapStatus.USER_ACTION_TIMEOUT),
        (PresenceResult.CANCELLED, CtapStatus.KEEPALIVE_CANCEL),
    ],
)
def test_reset_and_selection_need_presence(answer: PresenceResult, expected: int) -> None:
    presence = ScriptedPresence([PresenceResult.GRANTED, answer, answer])
    key = make_key(presence=presence)
    _register(key, rk=True)
    assert key.raw(0x07)[0] == expected
    assert key.store.count_credentials() == 1
    assert key.raw(0x0B)[0] == expected
    assert [r.kind for r in presence.requests][1:] == [PresenceKind.RESET, PresenceKind.SELECT]


def test_selection() -> None:
    key = make_key()
    key.ctap2().selection()
    assert key.presence.requests[-1].kind is PresenceKind.SELECT
    assert make_key(presence=DenyPresence()).raw(0x0B)[0] == CtapStatus.OPERATION_DENIED
    event = threading.Event()
    event.set()
    never = make_key(presence=NeverPresence())
    with pytest.raises(CtapError) as info:
        never.ctap2().selection(event=event)
    assert int(info.value.code) == CtapStatus.KEEPALIVE_CANCEL
    assert key.raw(0x0B, b"\x00")[0] == CtapStatus.INVALID_LENGTH


# --- fuzzing -------------------------------------------------------------------------


class SwitchPresence:
    """Answers with whatever ``result`` currently is."""

    def __init__(self, result: PresenceResult) -> None:
        self.result = result
        self.requests: list[Any] = []

    def request_presence(self, request: Any, context: Any, timeout: float) -> PresenceResult:
        self.requests.append(request)
        return self.result


@pytest.fixture(scope="module")
def fuzz_key() -> Key:
    return make_key(presence=SwitchPresence(PresenceResult.DENIED))


COMMANDS = [0x01, 0x02, 0x04, 0x06, 0x07, 0x08, 0x0A, 0x0B, 0x0C, 0x0D, 0x41, 0x99]


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(command=st.sampled_from(COMMANDS), payload=st.binary(max_size=200))
def test_random_bytes_never_crash(fuzz_key: Key, command: int, payload: bytes) -> None:
    fuzz_key.presence.result = PresenceResult.DENIED
    response = fuzz_key.authenticator.handle_cbor(bytes([command]) + payload, EventContext())
    assert response[0] in VALID_STATUSES
    assert response[0] != CtapStatus.OTHER
    if response[0] == CtapStatus.OK and len(response) > 1:
        assert isinstance(fido_cbor.decode(response[1:]), dict)
    assert fuzz_key.store.count_credentials() == 0


def _mutations() -> st.SearchStrategy[tuple[int, bytes]]:
    """Valid requests with one byte changed or cut: closer to real parser edge cases."""
    valid = [
        (0x01, cbor.encode(make_credential_map(options={"rk": True}))),
        (0x02, cbor.encode(get_assertion_map(allow_list=[descriptor(bytes(60))]))),
    ]
    return st.sampled_from(valid).flatmap(
        lambda cv: st.tuples(
            st.just(cv[0]),
            st.one_of(
                st.tuples(st.integers(0, len(cv[1]) - 1), st.integers(0, 255)).map(
                    lambda iv: cv[1][: iv[0]] + bytes([iv[1]]) + cv[1][iv[0] + 1 :]
                ),
                st.integers(0, len(cv[1])).map(lambda n: cv[1][:n]),
            ),
        )
    )


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_mutations())
def test_mutated_requests_never_crash(fuzz_key: Key, case: tuple[int, bytes]) -> None:
    command, payload = case
    fuzz_key.presence.result = PresenceResult.DENIED
    response = fuzz_key.authenticator.handle_cbor(bytes([command]) + payload, EventContext())
    assert response[0] in VALID_STATUSES
    assert response[0] != CtapStatus.OTHER
    # The user denies every touch, so nothing may ever be stored.
    assert fuzz_key.store.count_credentials() == 0


def test_still_works_after_fuzzing(fuzz_key: Key) -> None:
    for command in COMMANDS:
        fuzz_key.authenticator.handle_cbor(bytes([command]) + b"\xff\x00", EventContext())
    fuzz_key.presence.result = PresenceResult.GRANTED
    working = fuzz_key
    att = working.ctap2().make_credential(CLIENT_DATA_HASH, rp(), user(), params())
    cred = credential_data(att)
    assertion = working.ctap2().get_assertion(
        RP_ID, CLIENT_DATA_HASH, [descriptor(cred.credential_id)]
    )
    assertion.verify(CLIENT_DATA_HASH, cred.public_key)
