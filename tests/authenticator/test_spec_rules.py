"""Spec rules that no test pinned until a session 20 mutation sampling of `authenticator/`.

Each test changes its answer when the rule's one line in vfido is changed (the mutation is
named in the docstring): a flipped comparison, a dropped check. Two rules here were pinned
only by python-fido2's device suite (tests/conformance), which a run without its sdist
skips. Requests are raw CTAP2 maps through ``Authenticator.handle_cbor``.
"""

from __future__ import annotations

import hashlib

from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import ClientPin, PinProtocolV2

from tests.ctap2_helpers import CLIENT_DATA_HASH, RP_ID, Key, make_credential_map, make_key

ERR = CtapError.ERR
PIN = "12345678"

# authenticatorLargeBlobs (0x0C) parameters, CTAP 2.2 section 6.10.
LB_GET, LB_SET, LB_OFFSET, LB_LENGTH = 1, 2, 3, 4
#: The serialized large-blob array of an empty key: an empty CBOR array and its checksum.
EMPTY_ARRAY = b"\x80" + hashlib.sha256(b"\x80").digest()[:16]
# authenticatorConfig (0x0D) setMinPINLength (subCommand 0x03) parameters, section 6.11.4.
SET_MIN_PIN_LENGTH, NEW_MIN_LENGTH, MIN_PIN_RP_IDS, FORCE_CHANGE_PIN = 0x03, 1, 2, 3


def _with_pin() -> tuple[Key, ClientPin]:
    key = make_key()
    client_pin = ClientPin(key.ctap2(), PinProtocolV2())
    client_pin.set_pin(PIN)
    return key, client_pin


def _config(key: Key, params: dict[int, object]) -> int:
    return key.call(0x0D, {1: SET_MIN_PIN_LENGTH, 2: params})[0]


# --- pinUvAuthToken and clientPin -------------------------------------------------------------


def test_a_token_nobody_used_stops_after_the_initial_usage_time_limit() -> None:
    """6.5.2.1: a pinUvAuthToken not used within the initial usage time limit (30 s) stops
    being usable (pinUvAuthTokenUsageTimerObserver). Mutation: the unused-token branch of
    ``PinUvAuthToken.expire_if_due`` never true."""
    key, client_pin = _with_pin()
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID)
    param = client_pin.protocol.authenticate(token, CLIENT_DATA_HASH)
    request = make_credential_map(pin_uv_auth_param=param, pin_uv_auth_protocol=2)
    key.clock.advance(31)
    assert key.call(0x01, request)[0] == ERR.PIN_AUTH_INVALID
    # The same token used within the limit works: the limit, not the token, refused it.
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID)
    param = client_pin.protocol.authenticate(token, CLIENT_DATA_HASH)
    key.clock.advance(29)
    assert key.call(0x01, {**request, 8: param})[0] == 0


def test_a_wrong_pin_makes_a_new_key_agreement_key() -> None:
    """6.5.5.7.2 (getPinUvAuthTokenUsingPinWithPermissions), a PIN mismatch: "the
    authenticator ... calls regenerate()": the shared secret a platform used for the wrong
    guess is dead, so the right PIN sent under it fails too. Mutation: ``regenerate()``
    dropped from ``ClientPin._check_pin_hash``."""
    key, client_pin = _with_pin()
    key_agreement, secret = client_pin._get_shared_secret()  # type: ignore[no-untyped-call]

    def token_with(pin: str) -> int:
        pin_hash_enc = client_pin.protocol.encrypt(
            secret, hashlib.sha256(pin.encode()).digest()[:16]
        )
        request = {1: 2, 2: 0x09, 3: key_agreement, 6: pin_hash_enc, 9: 0x01, 10: RP_ID}
        return key.call(0x06, request)[0]

    assert token_with("00000000") == ERR.PIN_INVALID
    assert token_with(PIN) == ERR.PIN_INVALID  # the old shared secret no longer decrypts
    client_pin.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID)  # a new one


# --- authenticatorCredentialManagement ------------------------------------------------------------


def test_update_user_information_refuses_another_user_id() -> None:
    """6.8.6 updateUserInformation: "If the user.id does not match the stored user.id ...
    return CTAP1_ERR_INVALID_PARAMETER", and nothing is changed. Mutation: the user.id
    comparison in ``credential_management`` dropped."""
    key, client_pin = _with_pin()
    permissions = ClientPin.PERMISSION.MAKE_CREDENTIAL | ClientPin.PERMISSION.CREDENTIAL_MGMT
    token = client_pin.get_pin_token(PIN, permissions)
    param = client_pin.protocol.authenticate(token, CLIENT_DATA_HASH)
    made = make_credential_map(
        options={"rk": True}, pin_uv_auth_param=param, pin_uv_auth_protocol=2
    )
    assert key.call(0x01, made)[0] == 0
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    manager = CredentialManagement(Ctap2(key.device), client_pin.protocol, token)
    rp_id_hash = hashlib.sha256(RP_ID.encode()).digest()
    (credential,) = manager.enumerate_creds(rp_id_hash)
    credential_id = credential[CredentialManagement.RESULT.CREDENTIAL_ID]
    stored_user = credential[CredentialManagement.RESULT.USER]
    try:
        manager.update_user_info(credential_id, {"id": b"someone-else", "name": "mallory"})
    except CtapError as exc:
        assert exc.code == ERR.INVALID_PARAMETER
    else:
        raise AssertionError("another user.id was accepted")
    (after,) = manager.enumerate_creds(rp_id_hash)
    assert after[CredentialManagement.RESULT.USER] == stored_user


# --- extensions ---------------------------------------------------------------------------------


def test_cred_protect_outside_its_three_levels_is_refused() -> None:
    """Section 12.1 defines credProtect 0x01-0x03 only; vfido refuses other values rather than
    put an undefined policy in the authData a relying party receives. Mutation: the range
    check in ``extensions`` widened to 0-4."""
    key = make_key()
    for level in (0, 4):
        status, _ = key.call(0x01, make_credential_map(extensions={"credProtect": level}))
        assert status == ERR.INVALID_PARAMETER, level
    assert key.call(0x01, make_credential_map(extensions={"credProtect": 3}))[0] == 0


# --- authenticatorConfig setMinPINLength ------------------------------------------------------


def test_set_min_pin_length_takes_as_many_rp_ids_as_get_info_says() -> None:
    """6.4 getInfo 0x10 maxRPIDsForSetMinPINLength is how many RP IDs setMinPINLength takes:
    that many are taken, one more is refused (vfido: PIN_POLICY_VIOLATION). Mutation: ``>``
    made ``>=``."""
    key = make_key()
    most = key.call(0x04)[1][0x10]
    assert _config(key, {MIN_PIN_RP_IDS: [f"rp{i}.example" for i in range(most)]}) == 0
    too_many = [f"rp{i}.example" for i in range(most + 1)]
    assert _config(key, {MIN_PIN_RP_IDS: too_many}) == ERR.PIN_POLICY_VIOLATION


def test_force_change_pin_without_a_pin_is_pin_not_set() -> None:
    """6.11.4 setMinPINLength: forceChangePin true on a key without a PIN is
    CTAP2_ERR_PIN_NOT_SET, and getInfo's forcePINChange stays false. Mutation: the
    ``is_pin_set`` check dropped."""
    key = make_key()
    assert _config(key, {FORCE_CHANGE_PIN: True}) == ERR.PIN_NOT_SET
    assert not key.call(0x04)[1].get(0x0C, False)


def test_the_minimum_pin_length_never_shrinks() -> None:
    """6.11.4 setMinPINLength: a newMinPINLength below the current minimum is
    CTAP2_ERR_PIN_POLICY_VIOLATION (until authenticatorReset). Until session 20 only
    python-fido2's device suite pinned it. Mutation: the lower bound dropped."""
    key = make_key()
    assert _config(key, {NEW_MIN_LENGTH: 6}) == 0
    assert _config(key, {NEW_MIN_LENGTH: 5}) == ERR.PIN_POLICY_VIOLATION
    assert key.call(0x04)[1][0x0D] == 6


# --- authenticatorLargeBlobs --------------------------------------------------------------------


def test_large_blobs_get_at_the_end_of_the_array_is_empty() -> None:
    """6.10.2 step 4.d: "If the value of offset is greater than the length of the stored
    serialized large-blob array, return CTAP1_ERR_INVALID_PARAMETER"; an offset equal to it
    gives a zero-length substring. Mutation: ``>`` made ``>=``."""
    key = make_key()
    assert key.call(0x0C, {LB_GET: 10, LB_OFFSET: len(EMPTY_ARRAY)}) == (0, {1: b""})
    status, _ = key.call(0x0C, {LB_GET: 10, LB_OFFSET: len(EMPTY_ARRAY) + 1})
    assert status == ERR.INVALID_PARAMETER


def test_large_blobs_get_longer_than_max_fragment_length_is_invalid_length() -> None:
    """6.10.2 step 4.c: "If the value of get is greater than maxFragmentLength, return
    CTAP1_ERR_INVALID_LENGTH" (maxFragmentLength = maxMsgSize - 64). Mutation: off by one."""
    key = make_key()
    longest = key.call(0x04)[1][0x05] - 64
    assert key.call(0x0C, {LB_GET: longest, LB_OFFSET: 0})[0] == 0
    assert key.call(0x0C, {LB_GET: longest + 1, LB_OFFSET: 0})[0] == ERR.INVALID_LENGTH


def test_large_blobs_set_of_fewer_than_17_bytes_is_invalid_parameter() -> None:
    """6.10.2 step 5.b.iii: "If the value of length is less than 17, return
    CTAP1_ERR_INVALID_PARAMETER" (no array and checksum fit in fewer). Mutation: the check
    dropped (the write then ends in INTEGRITY_FAILURE instead)."""
    key = make_key()
    status, _ = key.call(0x0C, {LB_SET: EMPTY_ARRAY[:16], LB_OFFSET: 0, LB_LENGTH: 16})
    assert status == ERR.INVALID_PARAMETER


def test_large_blobs_set_past_the_announced_length_is_invalid_parameter() -> None:
    """6.10.2 step 5.f: "If the sum of offset and the length of the value of set is greater
    than the value of expectedLength, return CTAP1_ERR_INVALID_PARAMETER." Mutation: the
    check dropped."""
    key = make_key()
    request = {LB_SET: EMPTY_ARRAY + b"xyz", LB_OFFSET: 0, LB_LENGTH: len(EMPTY_ARRAY)}
    assert key.call(0x0C, request)[0] == ERR.INVALID_PARAMETER


def test_large_blobs_refuses_an_array_whose_checksum_is_wrong() -> None:
    """6.10.2 step 5.j.i: the last 16 bytes must be the left 16 bytes of SHA-256 of the rest,
    else CTAP2_ERR_INTEGRITY_FAILURE, and the stored array stays. Until session 20 only
    python-fido2's device suite pinned it. Mutation: the checksum check dropped."""
    key = make_key()
    damaged = b"\x80" + bytes(16)
    request = {LB_SET: damaged, LB_OFFSET: 0, LB_LENGTH: len(damaged)}
    assert key.call(0x0C, request)[0] == ERR.INTEGRITY_FAILURE
    assert key.call(0x0C, {LB_GET: 100, LB_OFFSET: 0}) == (0, {1: EMPTY_ARRAY})
