"""Spec rules that no test pinned until a session 20 mutation sampling of `authenticator/`.

Each test changes its answer when the rule's one line in vfido is changed (the mutation is
named in the docstring): a flipped comparison, a dropped check. Two rules here were pinned
only by python-fido2's device suite (tests/conformance), which a run without its sdist
skips. Requests are raw CTAP2 maps through ``Authenticator.handle_cbor``.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fido2.ctap import CtapError
from fido2.ctap2 import AttestationResponse
from fido2.ctap2.base import Ctap2
from fido2.ctap2.bio import FPBioEnrollment
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import ClientPin, PinProtocolV2

from tests.ctap2_helpers import (
    CLIENT_DATA_HASH,
    RP_ID,
    Key,
    credential_data,
    descriptor,
    get_assertion_map,
    make_credential_map,
    make_key,
    params,
    rp,
    user,
)
from vfido.authenticator.behaviours import b64url
from vfido.authenticator.config import Config
from vfido.presence import AutoPresence

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
    # A new token used within the limit works: the limit, not the request, refused it.
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


# --- a second round: getNextAssertion, options, attestation, bio enrollment, credStoreState ------


def _discoverable(key: Key, count: int) -> None:
    for n in range(count):
        request = make_credential_map(user=user(bytes([n + 1]) * 8), options={"rk": True})
        assert key.call(0x01, request)[0] == 0


def test_get_next_assertion_keeps_the_uv_the_first_assertion_got() -> None:
    """6.3 authenticatorGetNextAssertion signs with the getAssertion's remembered parameters:
    an assertion made with a token has UV, and so has every next one (an RP that requires
    UV refuses the other accounts otherwise). Mutation: the pending flags lose UV."""
    key, client_pin = _with_pin()
    for n in range(2):
        token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID)
        param = client_pin.protocol.authenticate(token, CLIENT_DATA_HASH)
        request = make_credential_map(
            user=user(bytes([n + 1]) * 8),
            options={"rk": True},
            pin_uv_auth_param=param,
            pin_uv_auth_protocol=2,
        )
        assert key.call(0x01, request)[0] == 0
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.GET_ASSERTION, RP_ID)
    param = client_pin.protocol.authenticate(token, CLIENT_DATA_HASH)
    status, first = key.call(
        0x02, get_assertion_map(pin_uv_auth_param=param, pin_uv_auth_protocol=2)
    )
    assert status == 0 and first[5] == 2
    status, second = key.raw(0x08)
    assert status == 0
    uv_up = 0x05
    assert first[2][32] & uv_up == uv_up and second[2][32] & uv_up == uv_up


def test_each_get_next_assertion_restarts_the_30_second_timer() -> None:
    """6.3: NOT_ALLOWED "If timer since the last call to authenticatorGetAssertion/
    authenticatorGetNextAssertion is greater than 30 seconds", and each call resets the timer:
    calls 20 s apart go on; exactly 30 s is not "greater". Mutations: the timer not restarted;
    ``>`` made ``>=``."""
    key = make_key()
    _discoverable(key, 4)
    assert key.call(0x02, get_assertion_map())[0] == 0
    key.clock.advance(20)
    assert key.raw(0x08)[0] == 0
    key.clock.advance(20)
    assert key.raw(0x08)[0] == 0
    key.clock.advance(30)
    assert key.raw(0x08)[0] == 0
    assert key.raw(0x08)[0] == ERR.NOT_ALLOWED  # four credentials: the last was given
    assert key.call(0x02, get_assertion_map())[0] == 0
    key.clock.advance(30.001)
    assert key.raw(0x08)[0] == ERR.NOT_ALLOWED


@pytest.mark.parametrize("command", [0x01, 0x02])
def test_the_uv_option_is_ignored_beside_a_pin_uv_auth_param(command: int) -> None:
    """makeCredential step 5 / getAssertion step 4 (vfido's step comments): with a
    pinUvAuthParam the "uv" option is treated as false, so a PIN-only key (no built-in UV)
    signs instead of refusing uv with INVALID_OPTION. Mutation: uv kept."""
    key, client_pin = _with_pin()
    if command == 0x02:
        token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID)
        param = client_pin.protocol.authenticate(token, CLIENT_DATA_HASH)
        made = make_credential_map(
            options={"rk": True}, pin_uv_auth_param=param, pin_uv_auth_protocol=2
        )
        assert key.call(0x01, made)[0] == 0
    permission = (
        ClientPin.PERMISSION.MAKE_CREDENTIAL
        if command == 0x01
        else ClientPin.PERMISSION.GET_ASSERTION
    )
    token = client_pin.get_pin_token(PIN, permission, RP_ID)
    param = client_pin.protocol.authenticate(token, CLIENT_DATA_HASH)
    build = make_credential_map if command == 0x01 else get_assertion_map
    request = build(options={"uv": True}, pin_uv_auth_param=param, pin_uv_auth_protocol=2)
    assert key.call(command, request)[0] == 0
    assert key.call(command, build(options={"uv": True}))[0] != 0  # without it: refused


def test_the_exclude_list_counts_a_cred_protect_2_credential_without_uv() -> None:
    """6.1.2 step 12: only a userVerificationRequired (3) credential is passed over without UV;
    a credProtect 2 one excludes like any other. Mutation: ``== 3`` made ``>= 2``."""
    key = make_key()
    for level, expected in ((2, ERR.CREDENTIAL_EXCLUDED), (3, 0)):
        status, made = key.call(0x01, make_credential_map(extensions={"credProtect": level}))
        assert status == 0
        credential_id = bytes(
            AttestationResponse.from_dict(made).auth_data.credential_data.credential_id
        )  # type: ignore[union-attr]
        again = make_credential_map(exclude_list=[descriptor(credential_id)])
        assert key.call(0x01, again)[0] == expected, level


def test_a_vanished_credential_is_not_excluded_either() -> None:
    """behaviours.py, vanished-credential: the key acts as if it never had the credential, so
    "makeCredential does not treat them as excluded". Mutation: the excludeList ignores it."""
    key = make_key()
    made = key.ctap2().make_credential(CLIENT_DATA_HASH, rp(), user(), params())
    credential_id = bytes(credential_data(made).credential_id)
    request = make_credential_map(exclude_list=[descriptor(credential_id)])
    assert key.call(0x01, request)[0] == ERR.CREDENTIAL_EXCLUDED
    key.authenticator.behaviours.set("vanished-credential", b64url(credential_id))
    assert key.call(0x01, request)[0] == 0


def test_the_longest_credential_id_fits_max_credential_id_length() -> None:
    """6.4 maxCredentialIdLength: the longest ID this key issues (RS256 with credProtect,
    hmac-secret and a 32-byte credBlob) must fit, or a platform may leave it out of an
    allowList. Mutation: the size estimate one byte short."""
    key = make_key()
    longest = key.ctap2().get_info().max_cred_id_length
    extensions = {"credProtect": 3, "hmac-secret": True, "credBlob": bytes(32)}
    request = make_credential_map(
        pub_key_cred_params=params(-257), options={"rk": True}, extensions=extensions
    )
    status, made = key.call(0x01, request)
    assert status == 0
    credential_id = AttestationResponse.from_dict(made).auth_data.credential_data.credential_id  # type: ignore[union-attr]
    assert len(credential_id) == longest


def test_ps256_uses_a_salt_as_long_as_the_hash() -> None:
    """RFC 8230 section 2: RSASSA-PSS "salt length is the same length as the hash function
    output". python-fido2 verifies any salt length, so the check here is cryptography's with
    sLen = 32. Mutation: salt 20."""
    key = make_key()
    made = key.ctap2().make_credential(CLIENT_DATA_HASH, rp(), user(), params(-37))
    data = credential_data(made)
    assertion = key.ctap2().get_assertion(
        RP_ID, CLIENT_DATA_HASH, [descriptor(bytes(data.credential_id))]
    )
    public = rsa.RSAPublicNumbers(
        int.from_bytes(data.public_key[-2], "big"), int.from_bytes(data.public_key[-1], "big")
    ).public_key()
    public.verify(
        assertion.signature,
        bytes(assertion.auth_data) + CLIENT_DATA_HASH,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


def test_a_self_attesting_key_asked_for_packed_stays_self_attesting() -> None:
    """docs/toolkit.md, attestation="self": credentials are self-attested. A platform's
    attestationFormatsPreference ["packed"] gets packed self attestation (no x5c), never the
    batch certificate the key was configured not to show. Mutation: "packed" means batch."""
    key = make_key(Config(attestation="self"))
    for preference in (["packed"], None):
        status, made = key.call(
            0x01, make_credential_map(attestation_formats_preference=preference)
        )
        assert status == 0 and made[1] == "packed" and "x5c" not in made[3], preference


def test_the_signature_counter_stops_at_its_32_bits() -> None:
    """authData's signCount has 32 bits (WebAuthn 6.1); the keystore counts further, so the
    assertion's counter stays at 0xFFFFFFFF. Mutation: the cap dropped (an internal error)."""
    key = make_key()
    made = key.ctap2().make_credential(CLIENT_DATA_HASH, rp(), user(), params())
    credential_id = bytes(credential_data(made).credential_id)
    key.authenticator.behaviours.set("counter-jump", 0x7FFFFFFF)
    counters = []
    for _ in range(3):
        status, answer = key.call(0x02, get_assertion_map(allow_list=[descriptor(credential_id)]))
        assert status == 0
        counters.append(int.from_bytes(answer[2][33:37], "big"))
    assert counters == [0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF]


def _fingerprint_key() -> tuple[Key, ClientPin]:
    key = make_key(Config(fingerprint=True), AutoPresence())
    client_pin = ClientPin(key.ctap2())
    client_pin.set_pin(PIN)
    return key, client_pin


def _bio(key: Key, client_pin: ClientPin) -> FPBioEnrollment:
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.BIO_ENROLL)
    return FPBioEnrollment(key.ctap2(), client_pin.protocol, token)


def test_cancel_current_enrollment_ends_it() -> None:
    """6.7.5 cancelCurrentEnrollment "cancels current ongoing enrollment, if any": the next
    sample for its template is INVALID_PARAMETER. Mutation: the enrollment kept."""
    key, client_pin = _fingerprint_key()
    template_id, _, remaining = _bio(key, client_pin).enroll_begin()
    assert remaining > 0
    _bio(key, client_pin).enroll_cancel()
    with pytest.raises(CtapError) as info:
        _bio(key, client_pin).enroll_capture_next(template_id)
    assert info.value.code == ERR.INVALID_PARAMETER


def test_enumerate_enrollments_with_none_is_invalid_option() -> None:
    """6.7 enumerateEnrollments: "If there are no enrollments existing on authenticator, it
    returns CTAP2_ERR_INVALID_OPTION" (python-fido2's enumerate_enrollments() turns that into
    {}, so the raw answer is checked). Mutation: an empty list."""
    key, client_pin = _fingerprint_key()
    with pytest.raises(CtapError) as info:
        _bio(key, client_pin)._call(FPBioEnrollment.CMD.ENUMERATE_ENROLLMENTS, auth=True)
    assert info.value.code == ERR.INVALID_OPTION


def test_cred_store_state_moves_when_a_credential_is_replaced_or_deleted_outside_ctap() -> None:
    """encCredStoreState (docs/conformance.md: "a counter moved by every create, delete or
    update"; authenticator/persistent_token.py: "The count also moves the state when a
    credential is added or deleted outside CTAP"). A replacing makeCredential (same RP and
    user) keeps the count but moves the state; a deletion by the keystore (as `vfido
    credentials delete`) moves it by the count.
    Mutations: the replacement not noted; the count left out of the state."""
    key, client_pin = _with_pin()
    persistent = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.PERSISTENT_CREDENTIAL_MGMT)

    def state() -> bytes:
        return bytes(key.ctap2().get_info().get_cred_store_state(persistent))

    def register() -> None:
        token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID)
        param = client_pin.protocol.authenticate(token, CLIENT_DATA_HASH)
        request = make_credential_map(
            options={"rk": True}, pin_uv_auth_param=param, pin_uv_auth_protocol=2
        )
        assert key.call(0x01, request)[0] == 0

    register()
    before = state()
    register()  # replaces the first: the same RP and user
    assert key.store.count_credentials() == 1
    replaced = state()
    assert replaced != before
    (summary,) = key.store.list_credentials()
    key.store.delete_credential(summary.record.credential_id)
    assert state() != replaced
