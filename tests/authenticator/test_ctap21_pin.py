"""CTAP 2.1 PIN/UV: python-fido2's ClientPin against the key, both PIN/UV auth protocols.

Through the in-process CTAPHID device; results are checked by value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from fido2 import cbor as fido_cbor
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocol, PinProtocolV1, PinProtocolV2

from tests.ctap2_helpers import EventContext, raw_set_pin
from tests.vkey import Key, running_key
from vfido.authenticator.config import Config as KeyConfig
from vfido.presence import AutoPresence

PIN = "1234"
PROTOCOLS = {"v1": PinProtocolV1, "v2": PinProtocolV2}

ERR = CtapError.ERR


@pytest.fixture
def key() -> Iterator[Key]:
    with running_key() as k:
        yield k


@pytest.fixture(params=list(PROTOCOLS))
def protocol(request: pytest.FixtureRequest) -> PinProtocol:
    return PROTOCOLS[request.param]()


def client_pin(key: Key, protocol: PinProtocol) -> ClientPin:
    return ClientPin(Ctap2(key.device), protocol)


def code(exc: pytest.ExceptionInfo[CtapError]) -> int:
    return exc.value.code


def test_get_info_advertises_ctap21_pin_support(key: Key) -> None:
    info = Ctap2(key.device).get_info()
    assert "FIDO_2_1" in info.versions and "FIDO_2_0" in info.versions
    assert info.options["clientPin"] is False
    assert info.options["pinUvAuthToken"] is True
    assert set(info.pin_uv_protocols) == {1, 2}
    assert info.options["credMgmt"] is True
    assert info.options["largeBlobs"] is True
    assert info.options["authnrCfg"] is True
    assert info.min_pin_length == 4
    for ext in ("credProtect", "hmac-secret", "credBlob", "largeBlobKey", "minPinLength"):
        assert ext in info.extensions


def test_set_pin_then_token(key: Key, protocol: PinProtocol) -> None:
    cp = client_pin(key, protocol)
    cp.set_pin(PIN)
    assert Ctap2(key.device).get_info().options["clientPin"] is True
    assert cp.get_pin_retries()[0] == 8
    token = cp.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL)
    assert len(token) == 32
    with pytest.raises(CtapError) as info:
        cp.set_pin("5678")  # a PIN is already set
    # 6.5.5.5 step 3: "If a PIN has already been set, authenticator returns
    # CTAP2_ERR_PIN_AUTH_INVALID error."
    assert code(info) == ERR.PIN_AUTH_INVALID


def test_pin_length_rules(key: Key, protocol: PinProtocol) -> None:
    cp = client_pin(key, protocol)
    with pytest.raises(CtapError) as info:
        raw_set_pin(cp, b"123".ljust(64, b"\0"))  # 3 code points < minPINLength 4
    assert code(info) == ERR.PIN_POLICY_VIOLATION
    with pytest.raises(CtapError) as info:
        raw_set_pin(cp, b"\xff\xfe\xfd\xfc".ljust(64, b"\0"))  # not UTF-8
    assert code(info) == ERR.PIN_POLICY_VIOLATION
    with pytest.raises(CtapError) as info:
        raw_set_pin(cp, b"1234".ljust(48, b"\0"))  # paddedPin must be 64 bytes
    assert code(info) == ERR.INVALID_PARAMETER
    assert not Ctap2(key.device).get_info().options["clientPin"]
    cp.set_pin("\u00e9\u00e9\u00e9\u00e9")  # 4 code points, 8 bytes
    with pytest.raises(CtapError) as info:
        cp.change_pin("\u00e9\u00e9\u00e9\u00e9", "x" * 64)
    assert code(info) == ERR.PIN_POLICY_VIOLATION
    cp.change_pin("\u00e9\u00e9\u00e9\u00e9", "y" * 63)
    cp.get_pin_token("y" * 63)


def test_wrong_pins_block_until_power_cycle_then_for_good(key: Key, protocol: PinProtocol) -> None:
    cp = client_pin(key, protocol)
    cp.set_pin(PIN)
    for expected_retries, expected in (
        (7, ERR.PIN_INVALID),
        (6, ERR.PIN_INVALID),
        (5, ERR.PIN_AUTH_BLOCKED),
    ):
        with pytest.raises(CtapError) as info:
            cp.get_pin_token("0000")
        assert code(info) == expected
        assert cp.get_pin_retries()[0] == expected_retries
    with pytest.raises(CtapError) as info:
        cp.get_pin_token(PIN)  # even the right PIN, until a power cycle
    assert code(info) == ERR.PIN_AUTH_BLOCKED
    assert cp.get_pin_retries()[0] == 5  # a blocked attempt costs nothing
    key.authenticator.power_cycle()
    cp = client_pin(key, protocol)
    cp.get_pin_token(PIN)  # correct PIN resets the counter
    assert cp.get_pin_retries()[0] == 8
    # 8 wrong PINs in a row (power cycling every 3) block the PIN for good
    for attempt in range(8):
        if attempt and attempt % 3 == 0:
            key.authenticator.power_cycle()
            cp = client_pin(key, protocol)
        with pytest.raises(CtapError):
            cp.get_pin_token("0000")
    assert cp.get_pin_retries()[0] == 0
    key.authenticator.power_cycle()
    cp = client_pin(key, protocol)
    with pytest.raises(CtapError) as info:
        cp.get_pin_token(PIN)
    assert code(info) == ERR.PIN_BLOCKED


def test_change_pin_invalidates_tokens(key: Key, protocol: PinProtocol) -> None:
    from fido2.ctap2.credman import CredentialManagement

    cp = client_pin(key, protocol)
    cp.set_pin(PIN)
    token = cp.get_pin_token(PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    CredentialManagement(Ctap2(key.device), protocol, token).get_metadata()
    cp.change_pin(PIN, "87654321")
    with pytest.raises(CtapError) as info:
        CredentialManagement(Ctap2(key.device), protocol, token).get_metadata()
    assert code(info) == ERR.PIN_AUTH_INVALID
    with pytest.raises(CtapError) as info:
        cp.get_pin_token(PIN)
    assert code(info) == ERR.PIN_INVALID
    cp.get_pin_token("87654321")


def test_token_permissions_are_enforced(key: Key, protocol: PinProtocol) -> None:
    from fido2.ctap2.credman import CredentialManagement

    cp = client_pin(key, protocol)
    cp.set_pin(PIN)
    token = cp.get_pin_token(PIN, ClientPin.PERMISSION.GET_ASSERTION, "example.com")
    with pytest.raises(CtapError) as info:
        CredentialManagement(Ctap2(key.device), protocol, token).get_metadata()
    assert code(info) == ERR.PIN_AUTH_INVALID  # CTAP 2.1: missing permission / other RP
    # The token itself is good: with its ga permission and RP it verifies (and
    # the RP simply has no credentials here)...
    ctap = Ctap2(key.device)
    cdh = bytes(32)
    with pytest.raises(CtapError) as info:
        ctap.get_assertion(
            "example.com",
            cdh,
            pin_uv_param=protocol.authenticate(token, cdh),
            pin_uv_protocol=protocol.VERSION,
        )
    assert code(info) == ERR.NO_CREDENTIALS
    # ...but not for another RP.
    token = cp.get_pin_token(PIN, ClientPin.PERMISSION.GET_ASSERTION, "example.com")
    with pytest.raises(CtapError) as info:
        ctap.get_assertion(
            "other.example",
            cdh,
            pin_uv_param=protocol.authenticate(token, cdh),
            pin_uv_protocol=protocol.VERSION,
        )
    assert code(info) == ERR.PIN_AUTH_INVALID
    with pytest.raises(CtapError) as info:
        cp.get_pin_token(PIN, ClientPin.PERMISSION(0))
    assert code(info) == ERR.INVALID_PARAMETER
    with pytest.raises(CtapError) as info:  # no bioEnroll on this key
        cp.get_pin_token(PIN, ClientPin.PERMISSION.BIO_ENROLL)
    assert code(info) == ERR.UNAUTHORIZED_PERMISSION


@pytest.mark.parametrize("command", ["getAssertion", "makeCredential"])
def test_an_operation_a_touch_approved_ends_the_tokens_permissions(
    key: Key, protocol: PinProtocol, command: str
) -> None:
    """makeCredential step 14 / getAssertion step 9 ("up" true), after 14.1 / 9.1 (with a
    pinUvAuthParam) and 14.2 / 9.2 ("Else (implying the pinUvAuthParam parameter is not
    present)"): "14.4 Call clearUserPresentFlag(), clearUserVerifiedFlag(), and
    clearPinUvAuthTokenPermissionsExceptLbw()" -- whether or not the request carried a
    pinUvAuthParam. vfido cleared only for a request that used the token (a session 15
    review), so a platform could come to rely on a token a hardware key has ended."""
    cp = client_pin(key, protocol)
    cp.set_pin(PIN)
    ctap = Ctap2(key.device)
    rp, user = {"id": "example.com", "name": "Example"}, {"id": b"u", "name": "u"}
    algorithms = [{"type": "public-key", "alg": -7}]
    permissions = ClientPin.PERMISSION.GET_ASSERTION | ClientPin.PERMISSION.MAKE_CREDENTIAL
    made = ctap.make_credential(
        bytes(32),
        rp,
        user,
        algorithms,
        pin_uv_param=protocol.authenticate(
            cp.get_pin_token(PIN, permissions, "example.com"), bytes(32)
        ),
        pin_uv_protocol=protocol.VERSION,
    )
    assert made.auth_data.credential_data is not None
    allow = [{"type": "public-key", "id": made.auth_data.credential_data.credential_id}]
    token = cp.get_pin_token(PIN, permissions, "example.com")
    # An operation without the token, approved by a touch (makeCredUvNotRqd: no PIN needed).
    if command == "getAssertion":
        ctap.get_assertion("example.com", bytes(32), allow)
    else:
        ctap.make_credential(bytes(32), rp, user, algorithms)
    for use in ("getAssertion", "makeCredential"):
        cdh = bytes([1]) * 32
        param = protocol.authenticate(token, cdh)
        with pytest.raises(CtapError) as info:
            if use == "getAssertion":
                ctap.get_assertion(
                    "example.com", cdh, allow, pin_uv_param=param, pin_uv_protocol=protocol.VERSION
                )
            else:
                ctap.make_credential(
                    cdh, rp, user, algorithms, pin_uv_param=param, pin_uv_protocol=protocol.VERSION
                )
        assert code(info) == ERR.PIN_AUTH_INVALID, use


def test_a_blocked_pin_is_said_before_the_key_agreement_is_read() -> None:
    """6.5.5.6 step 3, 6.5.5.7.1 and 6.5.5.7.2 step 5: "If the pinRetries counter is 0,
    return CTAP2_ERR_PIN_BLOCKED error", before the decapsulate step that answers a bad
    keyAgreement with INVALID_PARAMETER (a session 15 review found them the other way
    round)."""
    from tests.ctap2_helpers import make_key

    key = make_key()
    cp = ClientPin(key.ctap2(), PinProtocolV2())
    cp.set_pin(PIN)
    for _ in range(8):
        with pytest.raises(CtapError):
            cp.get_pin_token("0000")
        key.authenticator.power_cycle()
    assert cp.get_pin_retries()[0] == 0
    off_the_curve = {1: 2, 3: -25, -1: 1, -2: bytes(32), -3: bytes(32)}
    for sub, extra in ((0x04, {5: bytes(64), 4: bytes(32)}), (0x05, {}), (0x09, {9: 2})):
        request = {1: 2, 2: sub, 3: off_the_curve, 6: bytes(32), **extra}
        status, _ = key.call(0x06, request)
        assert status == ERR.PIN_BLOCKED, hex(sub)
        # ... and after steps 1 and 2: the mandatory parameters, then the protocol.
        missing = {k: v for k, v in request.items() if k != 3}
        assert key.call(0x06, missing)[0] == ERR.MISSING_PARAMETER, hex(sub)
        assert key.call(0x06, {**request, 1: 3})[0] == ERR.INVALID_PARAMETER, hex(sub)


def test_power_cycle_invalidates_tokens(key: Key, protocol: PinProtocol) -> None:
    from fido2.ctap2.credman import CredentialManagement

    cp = client_pin(key, protocol)
    cp.set_pin(PIN)
    token = cp.get_pin_token(PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    key.authenticator.power_cycle()
    with pytest.raises(CtapError) as info:
        CredentialManagement(Ctap2(key.device), protocol, token).get_metadata()
    assert code(info) == ERR.PIN_AUTH_INVALID


def test_reset_clears_the_pin(key: Key) -> None:
    cp = client_pin(key, PinProtocolV2())
    cp.set_pin(PIN)
    Ctap2(key.device).reset()
    assert Ctap2(key.device).get_info().options["clientPin"] is False


def _block_the_pin(key: Any, protocol: PinProtocol) -> ClientPin:
    """8 wrong PINs, a power cycle after every 3: pinRetries 0 (PIN_BLOCKED)."""
    cp = ClientPin(key.ctap2(), protocol)
    cp.set_pin(PIN)
    for attempt in range(8):
        if attempt and attempt % 3 == 0:
            key.authenticator.power_cycle()
        with pytest.raises(CtapError):
            cp.get_pin_token("0000")
    assert cp.get_pin_retries()[0] == 0
    return cp


def test_a_blocked_pin_disables_builtin_uv(protocol: PinProtocol) -> None:
    """CTAP 2.2 section 6.5.2, PIN-Entry and User Verification Retries Counters: "Once the
    pinRetries counter reaches 0, both ClientPin as well as built-in user verification are
    disabled and can only be enabled if authenticator is reset." (A session 20 review found
    built-in UV still issuing tokens and signing with uv after the PIN was blocked.)"""
    from tests.ctap2_helpers import get_assertion_map, make_credential_map, make_key

    key = make_key(KeyConfig(builtin_uv=True), presence=AutoPresence())
    status, _ = key.call(0x01, make_credential_map(options={"rk": True, "uv": True}))
    assert status == 0
    cp = _block_the_pin(key, protocol)
    with pytest.raises(CtapError) as info:  # 6.5.5.7.3 step 7
        cp.get_uv_token(ClientPin.PERMISSION.GET_ASSERTION, "example.com")
    assert code(info) == ERR.UV_BLOCKED
    # makeCredential step 11.2 / getAssertion step 6.2: performBuiltInUv fails; with a PIN
    # set (clientPin true) the platform is told to use a token (11.2.3 / 6.2.3).
    uv = {"uv": True}
    assert key.call(0x01, make_credential_map(options=uv))[0] == ERR.PUAT_REQUIRED
    assert key.call(0x02, get_assertion_map(options=uv))[0] == ERR.PUAT_REQUIRED
    # ... and only authenticatorReset enables it again.
    assert key.call(0x07)[0] == 0
    assert key.call(0x02, get_assertion_map(options=uv))[0] == ERR.NO_CREDENTIALS
    assert key.call(0x01, make_credential_map(options=uv))[0] == 0


def test_a_uv_blocked_key_says_so_before_reading_the_key_agreement() -> None:
    """6.5.5.7.3 step 7, "If the uvRetries counter is 0, return CTAP2_ERR_UV_BLOCKED", comes
    before the decapsulate step, which answers a bad keyAgreement INVALID_PARAMETER (as the
    PIN's step 5 does: test_a_blocked_pin_is_said_before_the_key_agreement_is_read)."""
    from tests.ctap2_helpers import make_key

    key = make_key(KeyConfig(builtin_uv=True), presence=AutoPresence())
    key.store.put_state({"uv.retries": (0).to_bytes(4, "big")})
    off_the_curve = {1: 2, 3: -25, -1: 1, -2: bytes(32), -3: bytes(32)}
    request = {1: 2, 2: 0x06, 3: off_the_curve, 9: 2, 10: "example.com"}
    assert key.call(0x06, request)[0] == ERR.UV_BLOCKED


def test_a_new_pin_that_does_not_decrypt_is_pin_auth_invalid(
    key: Key, protocol: PinProtocol
) -> None:
    """6.5.5.5 setPIN step 6: "The authenticator calls decrypt(shared secret, newPinEnc) to
    produce paddedNewPin. If an error results, it returns CTAP2_ERR_PIN_AUTH_INVALID." Step
    7: "If paddedNewPin is NOT 64 bytes long, it returns CTAP1_ERR_INVALID_PARAMETER." A
    newPinEnc that is not whole AES blocks cannot be decrypted (step 6); whole blocks of
    the wrong number decrypt (step 7). A session 20 review found both answered step 7's."""
    cp = client_pin(key, protocol)
    key_agreement, secret = cp._get_shared_secret()  # type: ignore[no-untyped-call]
    padded = PIN.encode().ljust(64, b"\0")
    cases = (
        (protocol.encrypt(secret, padded) + b"\x00", ERR.PIN_AUTH_INVALID),
        (protocol.encrypt(secret, padded)[:-1], ERR.PIN_AUTH_INVALID),
        (protocol.encrypt(secret, padded[:48]), ERR.INVALID_PARAMETER),
    )
    for new_pin_enc, expected in cases:
        with pytest.raises(CtapError) as info:
            cp.ctap.client_pin(
                protocol.VERSION,
                ClientPin.CMD.SET_PIN,
                key_agreement=key_agreement,
                new_pin_enc=new_pin_enc,
                pin_uv_param=protocol.authenticate(secret, new_pin_enc),
            )
        assert code(info) == expected, len(new_pin_enc)
    assert not Ctap2(key.device).get_info().options["clientPin"]
    raw_set_pin(cp, padded)  # the same exchange with a good newPinEnc sets the PIN
    assert Ctap2(key.device).get_info().options["clientPin"]
    # changePIN step 9 (after the current PIN was checked, so retries are restored).
    key_agreement, secret = cp._get_shared_secret()  # type: ignore[no-untyped-call]
    new_pin_enc = protocol.encrypt(secret, b"5678".ljust(64, b"\0")) + b"\x00"
    pin_hash_enc = protocol.encrypt(secret, hashlib.sha256(PIN.encode()).digest()[:16])
    with pytest.raises(CtapError) as info:
        cp.ctap.client_pin(
            protocol.VERSION,
            ClientPin.CMD.CHANGE_PIN,
            key_agreement=key_agreement,
            new_pin_enc=new_pin_enc,
            pin_hash_enc=pin_hash_enc,
            pin_uv_param=protocol.authenticate(secret, new_pin_enc + pin_hash_enc),
        )
    assert code(info) == ERR.PIN_AUTH_INVALID
    assert cp.get_pin_retries()[0] == 8
    cp.get_pin_token(PIN)  # the PIN is unchanged


_MC = {
    1: bytes(32),
    2: {"id": "a.example"},
    3: {"id": b"u"},
    4: [{"type": "public-key", "alg": -7}],
}
#: hmac-secret input with pinUvAuthProtocol -1 (section 12.5: "Unsigned Integer").
_HMAC_INPUT = {
    1: {1: 2, 3: -25, -1: 1, -2: bytes(32), -3: bytes(32)},
    2: bytes(32),
    3: bytes(16),
    4: -1,
}


@pytest.mark.parametrize(
    ("command", "request_map"),
    [
        (0x06, {1: -1, 2: 0x02}),  # clientPin getKeyAgreement, pinUvAuthProtocol -1
        (0x06, {1: 2, 2: -2}),  # clientPin, subCommand -2
        (0x06, {1: 2, 2: 0x09, 3: {}, 6: bytes(32), 9: -1}),  # permissions -1
        (0x01, {1: bytes(32), 2: {"id": "a.example"}, 3: {"id": b"u"}, 4: [], 9: -1}),
        (0x02, {1: "a.example", 2: bytes(32), 7: -1}),  # getAssertion pinUvAuthProtocol
        (0x0A, {1: 0x01, 3: -1, 4: bytes(32)}),  # credentialManagement
        (0x0A, {1: -1}),
        (0x0D, {1: -1}),  # authenticatorConfig subCommand
        (0x09, {1: -1, 2: 0x01}),  # bioEnrollment modality
        (0x0D, {1: 0x03, 2: {1: -1}}),  # setMinPINLength newMinPINLength
        (0x01, {**_MC, 6: {"credProtect": -1}}),
        (0x02, {1: "a.example", 2: bytes(32), 4: {"hmac-secret": _HMAC_INPUT}}),
    ],
)
def test_unsigned_parameters_refuse_negative_integers(
    command: int, request_map: dict[int, object]
) -> None:
    """subCommand, pinUvAuthProtocol and permissions are "Unsigned Integer" (6.5.5.1,
    6.8, 6.11, 6.7); a negative integer is another CBOR type (major type 1):
    CTAP2_ERR_CBOR_UNEXPECTED_TYPE, as largeBlobs and authenticatorConfig answered already.
    (A session 20 review found permissions -1 taken as every bit, refused only by the pcmr
    check after it.)"""
    from tests.ctap2_helpers import make_key

    key = make_key(KeyConfig(fingerprint=True), presence=AutoPresence())
    assert key.call(command, request_map)[0] == ERR.CBOR_UNEXPECTED_TYPE


@pytest.mark.parametrize("persona", ["ctap20", "ctap21pre", "ctap21"])
def test_a_persona_refuses_negative_unsigned_parameters_the_same_way(persona: str) -> None:
    """A persona's request checks (its PIN protocols and subcommands, authenticator.model) let a
    negative number through to the parser, which says CBOR_UNEXPECTED_TYPE as the full key
    does (a session 20 diff review: INVALID_PARAMETER and INVALID_SUBCOMMAND there)."""
    from vfido.api import VirtualKey

    with VirtualKey(persona=persona) as key:
        for command, request_map in (
            (0x06, {1: -1, 2: 0x02}),
            (0x06, {1: 1, 2: -2}),
            (0x02, {1: "a.example", 2: bytes(32), 7: -1}),
        ):
            payload = bytes([command]) + fido_cbor.encode(request_map)
            answer = key.authenticator.handle_cbor(payload, EventContext())
            assert answer[0] == ERR.CBOR_UNEXPECTED_TYPE, (command, request_map)
