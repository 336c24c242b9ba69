"""CTAP 2.1 PIN/UV: python-fido2's ClientPin against the key, both PIN/UV auth protocols.

Through the in-process CTAPHID device; results are checked by value.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocol, PinProtocolV1, PinProtocolV2

from tests.ctap2_helpers import raw_set_pin
from tests.vkey import Key, running_key

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
