"""Deviations from the CTAP text that python-fido2's device suite does not exercise, found
by a review of the spec's steps against the key (session 12). Each test failed on the code
before its fix. Quotes are from "Client to Authenticator Protocol" 2.1 (section numbers as
in 2.1/2.2) unless a test says otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from fido2 import cbor as fido_cbor
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import ClientPin, PinProtocolV2
from fido2.webauthn import AuthenticatorData

from tests.ctap2_helpers import (
    CLIENT_DATA_HASH,
    RP_ID,
    Key,
    ScriptedPresence,
    descriptor,
    get_assertion_map,
    make_credential_map,
    make_key,
)
from vfido.authenticator.config import Config
from vfido.authenticator.env import PresenceKind, PresenceRequest, PresenceResult, RequestContext
from vfido.authenticator.errors import CtapStatus
from vfido.authenticator.pin_token import USER_PRESENT_TIME_LIMIT

PIN = "12345678"
P = ClientPin.PERMISSION


@dataclass
class Recorder:
    """Presence and built-in UV that grant at once and note what the user was asked."""

    asked: list[tuple[str, PresenceKind]] = field(default_factory=list)

    def request_presence(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        self.asked.append(("touch", request.kind))
        return PresenceResult.GRANTED

    def verify_user(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        self.asked.append(("uv", request.kind))
        return PresenceResult.GRANTED


def uv_key(**config: Any) -> tuple[Key, Recorder]:
    recorder = Recorder()
    return make_key(Config(builtin_uv=True, **config), presence=recorder), recorder


def auth_data(body: dict[int, Any]) -> AuthenticatorData:
    return AuthenticatorData(body[2])


def token_param(token: bytes) -> dict[str, Any]:
    """A request's pinUvAuthParam over CLIENT_DATA_HASH with ``token`` (protocol 2)."""
    return {
        "pin_uv_auth_param": PinProtocolV2().authenticate(token, CLIENT_DATA_HASH),
        "pin_uv_auth_protocol": 2,
    }


def registered(key: Key, **overrides: Any) -> bytes:
    status, body = key.call(0x01, make_credential_map(**overrides))
    assert status == CtapStatus.OK
    data = auth_data(body).credential_data
    assert data is not None
    return bytes(data.credential_id)


# --- makeCredential / getAssertion ---------------------------------------------------------


def test_an_excluded_credential_after_built_in_uv_asks_for_no_second_touch() -> None:
    """6.1.2 step 12.1: userPresentFlagValue is the token's user-present flag (12.1.2), or
    true "if evidence of user interaction was provided as part of Step 11" (12.1.3); only
    when it is false does the key wait for presence (12.1.4); then "terminate this
    procedure and return CTAP2_ERR_CREDENTIAL_EXCLUDED" (12.1.5)."""
    key, recorder = uv_key()
    credential_id = registered(key, options={"uv": True})
    recorder.asked.clear()
    status, _ = key.call(
        0x01, make_credential_map(options={"uv": True}, exclude_list=[descriptor(credential_id)])
    )
    assert status == CtapStatus.CREDENTIAL_EXCLUDED
    assert recorder.asked == [("uv", PresenceKind.REGISTER)]  # no touch after the UV
    # A token from built-in UV carries the user's presence (beginUsingPinUvAuthToken(true)).
    client_pin = ClientPin(key.ctap2(), PinProtocolV2())
    token = client_pin.get_uv_token(P.MAKE_CREDENTIAL, RP_ID)
    recorder.asked.clear()
    status, _ = key.call(
        0x01,
        make_credential_map(
            exclude_list=[descriptor(credential_id)],
            **token_param(token),
        ),
    )
    assert status == CtapStatus.CREDENTIAL_EXCLUDED and recorder.asked == []
    # Without UV evidence the key still waits for a touch before saying so (12.1.4).
    status, _ = key.call(0x01, make_credential_map(exclude_list=[descriptor(credential_id)]))
    assert status == CtapStatus.CREDENTIAL_EXCLUDED
    assert recorder.asked == [("touch", PresenceKind.EXCLUDED)]


def test_built_in_uv_asks_to_register_for_makecredential_and_to_sign_in_for_getassertion() -> None:
    """The user is told what the verification is for (a notification said "sign in" while
    a site registered a credential)."""
    key, recorder = uv_key()
    credential_id = registered(key, options={"uv": True})
    status, _ = key.call(
        0x02, get_assertion_map(allow_list=[descriptor(credential_id)], options={"uv": True})
    )
    assert status == CtapStatus.OK
    assert recorder.asked == [("uv", PresenceKind.REGISTER), ("uv", PresenceKind.AUTHENTICATE)]


def test_getassertion_with_built_in_uv_sets_up_even_when_up_is_false() -> None:
    """6.2.2 step 8: "If evidence of user interaction was provided as part of Step 6.2
    (i.e., by invoking performBuiltInUv()): Set the "up" bit to true in the response."
    The step has no condition on the "up" option: the user did interact."""
    key, recorder = uv_key()
    credential_id = registered(key, options={"uv": True})
    recorder.asked.clear()
    status, body = key.call(
        0x02,
        get_assertion_map(
            allow_list=[descriptor(credential_id)], options={"up": False, "uv": True}
        ),
    )
    assert status == CtapStatus.OK
    data = auth_data(body)
    assert data.is_user_present() and data.is_user_verified()
    assert recorder.asked == [("uv", PresenceKind.AUTHENTICATE)]
    # A silent probe without UV stays silent and UP-less.
    status, body = key.call(
        0x02, get_assertion_map(allow_list=[descriptor(credential_id)], options={"up": False})
    )
    assert status == CtapStatus.OK and not auth_data(body).is_user_present()


def test_user_presence_from_a_uv_token_lasts_the_user_present_time_limit() -> None:
    """6.5.2.1: "A user present time limit defining the length of time the user is
    considered "present", as represented by the userPresent flag, after user presence is
    collected. The user present time limit defaults to the same default maximum
    per-transport values as the initial usage time limit" (30 s): after it, a token from
    built-in UV no longer stands in for a touch."""
    key, recorder = uv_key()
    credential_id = registered(key, options={"uv": True})
    client_pin = ClientPin(key.ctap2(), PinProtocolV2())
    token = client_pin.get_uv_token(P.GET_ASSERTION | P.CREDENTIAL_MGMT, RP_ID)
    # Use the token within its initial usage time (so it stays in use), then wait.
    key.clock.advance(10)
    CredentialManagement(key.ctap2(), client_pin.protocol, token).enumerate_creds(
        hashlib.sha256(RP_ID.encode()).digest()
    )
    key.clock.advance(USER_PRESENT_TIME_LIMIT)
    recorder.asked.clear()
    status, body = key.call(
        0x02,
        get_assertion_map(
            allow_list=[descriptor(credential_id)],
            **token_param(token),
        ),
    )
    assert status == CtapStatus.OK and auth_data(body).is_user_verified()
    assert recorder.asked == [("touch", PresenceKind.AUTHENTICATE)]


@pytest.mark.parametrize("hmac_secret", [None, False])
def test_hmac_secret_mc_without_hmac_secret_is_missing_parameter(hmac_secret: bool | None) -> None:
    """CTAP 2.2 section 12.8: "the hmac-secret extension MUST also be present with the value
    of hmac-secret set to true", and authenticators "MUST return
    CTAP2_ERR_MISSING_PARAMETER when they receive this extension without the hmac-secret
    extension". Session 14 answered hmac-secret-mc alone (even beside "hmac-secret": false)
    and gave the credential a secret nobody asked for (a session 15 review)."""
    key = make_key()
    protocol = PinProtocolV2()
    platform_key, shared = protocol.encapsulate(
        key.ctap2().client_pin(2, ClientPin.CMD.GET_KEY_AGREEMENT)[1]
    )
    salt_enc = protocol.encrypt(shared, b"s" * 32)
    mc_input = {1: platform_key, 2: salt_enc, 3: protocol.authenticate(shared, salt_enc), 4: 2}
    extensions: dict[str, Any] = {"hmac-secret-mc": mc_input}
    if hmac_secret is not None:
        extensions["hmac-secret"] = hmac_secret
    status, _ = key.call(0x01, make_credential_map(extensions=extensions))
    assert status == CtapStatus.MISSING_PARAMETER
    assert key.store.count_credentials() == 0
    # With "hmac-secret": true beside it: both outputs.
    status, body = key.call(
        0x01, make_credential_map(extensions={**extensions, "hmac-secret": True})
    )
    assert status == CtapStatus.OK
    assert sorted(auth_data(body).extensions or {}) == ["hmac-secret", "hmac-secret-mc"]


def _hmac_secret_input(key: Key, salts: bytes) -> dict[int, Any]:
    """A getAssertion hmac-secret input (protocol 2) carrying ``salts``."""
    protocol = PinProtocolV2()
    platform_key, shared = protocol.encapsulate(
        key.ctap2().client_pin(2, ClientPin.CMD.GET_KEY_AGREEMENT)[1]
    )
    salt_enc = protocol.encrypt(shared, salts)
    return {1: platform_key, 2: salt_enc, 3: protocol.authenticate(shared, salt_enc), 4: 2}


def test_hmac_secret_on_a_silent_assertion_is_unsupported_option() -> None:
    """Section 12.5, hmac-secret, getAssertion: "If "up" is set to false, authenticator
    returns CTAP2_ERR_UNSUPPORTED_OPTION." A silent assertion must not hand a credential's
    secret (a disk or password-manager key) to software on the host without a touch: not on
    a key without a PIN, and not with a ga token, whose permissions a silent assertion does
    not consume (6.2.2 step 9), so the same token would answer again and again."""
    key, recorder = uv_key()
    silent_id = registered(key, extensions={"hmac-secret": True})
    status, _ = key.call(
        0x02,
        get_assertion_map(
            allow_list=[descriptor(silent_id)],
            options={"up": False},
            extensions={"hmac-secret": _hmac_secret_input(key, b"s" * 32)},
        ),
    )
    assert status == CtapStatus.UNSUPPORTED_OPTION

    pin_key = make_key()
    client_pin = ClientPin(pin_key.ctap2(), PinProtocolV2())
    client_pin.set_pin(PIN)
    token = client_pin.get_pin_token(PIN, P.MAKE_CREDENTIAL, RP_ID)
    credential_id = registered(pin_key, extensions={"hmac-secret": True}, **token_param(token))
    token = client_pin.get_pin_token(PIN, P.GET_ASSERTION, RP_ID)
    for _ in range(2):
        status, _ = pin_key.call(
            0x02,
            get_assertion_map(
                allow_list=[descriptor(credential_id)],
                options={"up": False},
                extensions={"hmac-secret": _hmac_secret_input(pin_key, b"s" * 32)},
                **token_param(token),
            ),
        )
        assert status == CtapStatus.UNSUPPORTED_OPTION
    # The same request with a touch is answered, with the secret.
    status, body = pin_key.call(
        0x02,
        get_assertion_map(
            allow_list=[descriptor(credential_id)],
            extensions={"hmac-secret": _hmac_secret_input(pin_key, b"s" * 32)},
            **token_param(token),
        ),
    )
    assert status == CtapStatus.OK
    assert "hmac-secret" in (auth_data(body).extensions or {})
    # A silent probe without the extension is still answered (platforms' pre-flight).
    status, body = key.call(
        0x02, get_assertion_map(allow_list=[descriptor(silent_id)], options={"up": False})
    )
    assert status == CtapStatus.OK
    assert not auth_data(body).flags & AuthenticatorData.FLAG.UP
    assert recorder.asked == [("touch", PresenceKind.REGISTER)]  # the registration's only


def test_hmac_secret_salts_of_another_length_are_invalid_parameter() -> None:
    """Section 12.5: "The authenticator obtains salt1 and salt2 by calling decrypt(shared
    secret, saltEnc). If the decryption fails, or if the result is not 32 or 64 bytes long,
    return CTAP1_ERR_INVALID_PARAMETER." (CTAP 2.0 keys answered INVALID_LENGTH.)"""
    key = make_key()
    credential_id = registered(key, extensions={"hmac-secret": True})
    for length in (16, 48, 96):
        status, _ = key.call(
            0x02,
            get_assertion_map(
                allow_list=[descriptor(credential_id)],
                extensions={"hmac-secret": _hmac_secret_input(key, b"s" * length)},
            ),
        )
        assert status == CtapStatus.INVALID_PARAMETER, length


def test_a_bad_hmac_secret_input_is_refused_whichever_credential_answers() -> None:
    """Section 12.5, getAssertion: "The authenticator calls verify(shared secret, saltEnc,
    saltAuth). If the verification fails, return CTAP2_ERR_PIN_AUTH_INVALID." -- a step with
    no condition on the credential. It ran only for credentials made with hmac-secret: a
    discoverable lookup could answer the first account and refuse in getNextAssertion, and a
    credential without a secret took any input (a session 15 review). Checked for every
    request now, after presence (step 9) as the spec orders it."""
    key = make_key()
    plain = registered(key, options={"rk": True}, user={"id": b"a", "name": "a"})
    registered(
        key,
        options={"rk": True},
        user={"id": b"b", "name": "b"},
        **{"extensions": {"hmac-secret": True}},
    )
    good = _hmac_secret_input(key, b"s" * 32)
    forged = {**good, 3: bytes(len(good[3]))}
    for allow, hmac_input, code in (
        (None, forged, CtapStatus.PIN_AUTH_INVALID),  # newest (with a secret) answers first
        ([descriptor(plain)], forged, CtapStatus.PIN_AUTH_INVALID),
        ([descriptor(plain)], _hmac_secret_input(key, b"s" * 48), CtapStatus.INVALID_PARAMETER),
    ):
        status, _ = key.call(
            0x02, get_assertion_map(allow_list=allow, extensions={"hmac-secret": hmac_input})
        )
        assert status == code
    status, body = key.call(
        0x02, get_assertion_map(allow_list=[descriptor(plain)], extensions={"hmac-secret": good})
    )
    assert status == CtapStatus.OK and not (auth_data(body).extensions or {})
    # Presence (step 9) comes first: a user who refuses is OPERATION_DENIED, not the input's
    # error (a first version checked the input before asking).
    refusing = make_key(
        presence=ScriptedPresence(answers=[PresenceResult.GRANTED, PresenceResult.DENIED])
    )
    credential = registered(refusing, extensions={"hmac-secret": True})
    good = _hmac_secret_input(refusing, b"s" * 32)
    status, _ = refusing.call(
        0x02,
        get_assertion_map(
            allow_list=[descriptor(credential)],
            extensions={"hmac-secret": {**good, 3: bytes(len(good[3]))}},
        ),
    )
    assert status == CtapStatus.OPERATION_DENIED


# --- clientPIN -------------------------------------------------------------------------------


def test_uv_token_permissions_follow_uvacfg_and_uvbioenroll_and_need_a_configured_uv() -> None:
    """6.5.5.7.3 step 4 refuses acfg when "uvAcfg is false or absent" and be when
    "uvBioEnroll is false or absent"; step 5: "If a built-in user verification method is
    supported but not configured, the authenticator returns CTAP2_ERR_NOT_ALLOWED." The
    key grants both through built-in UV, so getInfo says so."""
    key, _ = uv_key()
    options = key.ctap2().get_info().options
    assert options["uv"] is True and options["uvAcfg"] is True and "uvBioEnroll" not in options
    ClientPin(key.ctap2(), PinProtocolV2()).get_uv_token(P.AUTHENTICATOR_CFG)

    fingerprint = make_key(Config(fingerprint=True), presence=Recorder())
    options = fingerprint.ctap2().get_info().options
    assert options["uv"] is False and options["uvAcfg"] is True and options["uvBioEnroll"]
    status, _ = fingerprint.call(
        0x06,
        {
            1: 2,
            2: ClientPin.CMD.GET_TOKEN_USING_UV,
            3: _platform_key(fingerprint),
            9: int(P.AUTHENTICATOR_CFG),
        },
    )
    assert status == CtapStatus.NOT_ALLOWED  # no finger enrolled yet


def _platform_key(key: Key) -> dict[int, Any]:
    platform_key, _ = PinProtocolV2().encapsulate(
        key.ctap2().client_pin(2, ClientPin.CMD.GET_KEY_AGREEMENT)[1]
    )
    return dict(platform_key)


# --- largeBlobs, credentialManagement ----------------------------------------------------


def test_large_blobs_parameters_follow_the_steps() -> None:
    """6.10.2 step 1: "If offset is not present in the input map, return
    CTAP1_ERR_INVALID_PARAMETER." Step 4.2 (get): "If either of pinUvAuthParam or
    pinUvAuthProtocol are present, return CTAP1_ERR_INVALID_PARAMETER." Step 5.5 (set): "If
    the authenticator is protected by some form of user verification or the alwaysUv
    option ID is present and true: If pinUvAuthParam is absent from the input map, then
    end the operation by returning CTAP2_ERR_PUAT_REQUIRED." """
    key = make_key()
    assert key.call(0x0C, {1: 16})[0] == CtapStatus.INVALID_PARAMETER
    assert key.call(0x0C, {1: 16, 3: 0, 5: bytes(32), 6: 2})[0] == CtapStatus.INVALID_PARAMETER
    assert key.call(0x0C, {1: 16, 3: 0, 6: 2})[0] == CtapStatus.INVALID_PARAMETER
    assert key.call(0x0C, {1: 16, 3: 0})[0] == CtapStatus.OK
    empty = b"\x80" + hashlib.sha256(b"\x80").digest()[:16]
    assert key.call(0x0C, {2: empty, 3: 0, 4: len(empty)})[0] == CtapStatus.OK
    # alwaysUv on a key with no PIN (authenticatorConfig needs no token there).
    assert key.call(0x0D, {1: 0x02})[0] == CtapStatus.OK
    assert key.ctap2().get_info().options["alwaysUv"] is True
    assert key.call(0x0C, {2: empty, 3: 0, 4: len(empty)})[0] == CtapStatus.PUAT_REQUIRED


def test_update_user_information_removes_empty_fields() -> None:
    """6.8.6: "If a field is not present in the passed-in user details, or it is present
    and empty, remove it from the matching credential's PublicKeyCredentialUserEntity." """
    key = make_key()
    client_pin = ClientPin(key.ctap2(), PinProtocolV2())
    client_pin.set_pin(PIN)
    token = client_pin.get_pin_token(PIN, P.MAKE_CREDENTIAL, RP_ID)
    credential_id = registered(
        key,
        options={"rk": True},
        user={"id": b"user-1", "name": "alice", "displayName": "Alice"},
        **token_param(token),
    )

    def update(user: dict[str, Any]) -> int:
        token = client_pin.get_pin_token(PIN, P.CREDENTIAL_MGMT)
        params = {2: {"id": credential_id, "type": "public-key"}, 3: user}
        mac = client_pin.protocol.authenticate(token, b"\x07" + fido_cbor.encode(params))
        return key.call(0x0A, {1: 0x07, 2: params, 3: 2, 4: mac})[0]

    def stored_user() -> dict[str, Any]:
        token = client_pin.get_pin_token(PIN, P.CREDENTIAL_MGMT)
        manager = CredentialManagement(key.ctap2(), client_pin.protocol, token)
        found = manager.enumerate_creds(hashlib.sha256(RP_ID.encode()).digest())
        return dict(found[0][CredentialManagement.RESULT.USER])

    assert update({"id": b"user-1", "name": "bob", "displayName": ""}) == CtapStatus.OK
    assert stored_user() == {"id": b"user-1", "name": "bob"}
    assert update({"id": b"user-1", "name": "", "displayName": ""}) == CtapStatus.OK
    assert stored_user() == {"id": b"user-1"}


def test_a_pinuvauthparam_that_is_not_checked_is_no_token_either() -> None:
    """On a key with no PIN and no (configured) built-in UV, a pinUvAuthParam is not checked
    (6.1.2 step 11 is for a protected key), so it must not stand for a token afterwards
    either: a token still in use from before UV went away carried the user's presence, and
    stood in for the touch."""
    key, recorder = uv_key()
    client_pin = ClientPin(key.ctap2(), PinProtocolV2())
    token = client_pin.get_uv_token(P.MAKE_CREDENTIAL, RP_ID)  # userPresent: true
    # UV no longer configured (a fingerprint key's last finger removed): unprotected now.
    verifier = key.authenticator._client_pin._user_verifier
    verifier.enabled = False  # type: ignore[union-attr]
    assert not key.ctap2().get_info().options.get("uv")
    recorder.asked.clear()
    status, body = key.call(
        0x01,
        make_credential_map(
            **token_param(token),
        ),
    )
    assert status == CtapStatus.OK
    assert recorder.asked == [("touch", PresenceKind.REGISTER)]
    assert not auth_data(body).is_user_verified()


def test_setpin_checks_its_mandatory_parameters_first() -> None:
    """6.5.5.5 step 1 (mandatory parameters, keyAgreement among them) comes before step 3
    (a PIN is set: PIN_AUTH_INVALID)."""
    key = make_key()
    ClientPin(key.ctap2(), PinProtocolV2()).set_pin(PIN)
    status, _ = key.call(0x06, {1: 2, 2: ClientPin.CMD.SET_PIN, 4: bytes(32), 5: bytes(80)})
    assert status == CtapStatus.MISSING_PARAMETER


def test_token_subcommands_check_mandatory_parameters_before_the_protocol() -> None:
    """6.5.5.7.2 / 6.5.5.7.3 step 1 (mandatory parameters: MISSING_PARAMETER) comes before
    step 2 (an unsupported protocol: INVALID_PARAMETER)."""
    key, _ = uv_key()
    ClientPin(key.ctap2(), PinProtocolV2()).set_pin(PIN)
    for sub, extra in (
        (ClientPin.CMD.GET_TOKEN_USING_UV, {3: _platform_key(key)}),  # no permissions
        (ClientPin.CMD.GET_TOKEN_USING_PIN, {3: _platform_key(key), 6: bytes(32)}),
    ):
        status, _ = key.call(0x06, {1: 99, 2: sub, **extra})
        assert status == CtapStatus.MISSING_PARAMETER, sub
