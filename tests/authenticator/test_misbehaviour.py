"""Scripted misbehaviour (authenticator.behaviours): for each behaviour, what a python-fido2
client and the relying-party libraries (python-fido2's Fido2Server, py_webauthn) see.

The key runs in-process (keystore -> authenticator -> CTAPHID -> python-fido2). Every test
first shows the normal outcome where that is what makes the misbehaviour visible, so a
behaviour that silently did nothing would fail the test.
"""

from __future__ import annotations

import datetime
import json
import threading
from contextlib import AbstractContextManager
from typing import Any

import pytest
import webauthn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fido2 import cbor
from fido2.attestation.base import UntrustedAttestation
from fido2.client import ClientError, UserInteraction
from fido2.ctap import CtapError
from fido2.ctap1 import ApduError, Ctap1
from fido2.ctap2.base import Ctap2
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import ClientPin, PinProtocolV2
from fido2.hid import CAPABILITY, CTAPHID
from OpenSSL.crypto import X509StoreContextError
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse
from webauthn.helpers.structs import AttestationFormat

from tests.rp import (
    RelyingParty,
    assertion,
    attestation_fmt,
    challenge_of,
    random_user,
    register,
    sign_in,
)
from tests.vkey import Key, running_key
from vfido.api import VirtualKey
from vfido.authenticator.behaviours import (
    CATALOGUE,
    NAMES,
    BehaviourError,
    Behaviours,
    BehaviourSettings,
    b64url,
    corrupt_signed_data,
    misbehaviour_root,
)
from vfido.authenticator.config import Config


def behaving_key(*assignments: str, config: Config | None = None) -> AbstractContextManager[Key]:
    """An in-process key with these behaviours (``NAME`` or ``NAME=VALUE``) from the start."""
    return running_key(config=config, behaviours=Behaviours.from_assignments(assignments))


def webauthn_check(rp: RelyingParty, response: Any, challenge: bytes, current: int) -> Any:
    """py_webauthn's verification, with its counter check against ``current``."""
    return webauthn.verify_authentication_response(
        credential=json.dumps(dict(response)),
        expected_challenge=challenge,
        expected_rp_id=rp.rp_id,
        expected_origin=rp.origin,
        credential_public_key=rp.public_keys[response.raw_id],
        credential_current_sign_count=current,
    )


def ctap_cause(exc: ClientError) -> int:
    cause = exc.cause
    assert isinstance(cause, CtapError), f"no CTAP error behind {exc!r}"
    return int(cause.code)


# --- the Behaviours object ------------------------------------------------------------------


def test_catalogue_covers_every_behaviour_of_the_issue() -> None:
    assert set(NAMES) == {
        "counter-regression",
        "zero-counter",
        "counter-jump",
        "presence-timeout",
        "uv-fail",
        "pin-blocked",
        "slow",
        "wrong-signature",
        "vanished-credential",
        "attestation",
        "omit-user",
        "versions",
        "store-full",
    }
    assert len(CATALOGUE) == len(NAMES)


def test_set_clear_and_values() -> None:
    b = Behaviours()
    assert b.current() == BehaviourSettings() and b.active() == {}
    b.set("counter-jump")
    assert b.current().counter_jump == 1000 and b.current().counter_step() == 1000
    b.set("counter-jump", "7")
    b.set("slow", 250)
    b.set("attestation", "EXPIRED")
    b.set("zero-counter")
    assert b.active() == {
        "zero-counter": None,
        "counter-jump": 7,
        "slow": 250,
        "attestation": "expired",
    }
    b.clear("counter-jump")
    assert b.current().counter_jump is None and b.current().counter_step() == 1
    assert b.current().slow_ms == 250
    b.clear()
    assert b.current() == BehaviourSettings()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("no-such-thing", None, "unknown behaviour"),
        ("zero-counter", "3", "takes no value"),
        ("counter-jump", "many", "integer"),
        ("counter-jump", 0, "between 1"),
        ("counter-jump", True, "integer"),
        ("slow", -1, "between 0"),
        ("presence-timeout", "forever", "seconds"),
        ("presence-timeout", float("nan"), "between 0"),
        ("attestation", None, "needs a value"),
        ("attestation", "forged", "one of"),
        ("versions", "FIDO_2_1", "one of"),
        ("vanished-credential", "!!!", "base64url"),
    ],
)
def test_bad_values_are_refused(name: str, value: Any, message: str) -> None:
    b = Behaviours()
    with pytest.raises(BehaviourError, match=message):
        b.set(name, value)
    assert b.current() == BehaviourSettings()  # nothing half-applied


def test_assignments_and_builtin_uv_requirement() -> None:
    b = Behaviours.from_assignments(["counter-regression=3", "omit-user", "versions=u2f_v2"])
    assert b.current().counter_regression == 3 and b.current().omit_user
    assert b.current().versions == "U2F_V2"
    with pytest.raises(BehaviourError, match="built-in UV"):
        Behaviours.from_assignments(["uv-fail"], builtin_uv=False)
    assert Behaviours.from_assignments(["uv-fail"], builtin_uv=True).current().uv_fail


def test_snapshots_are_swapped_whole_under_concurrent_writers() -> None:
    b = Behaviours()
    seen: list[BehaviourSettings] = []
    stop = threading.Event()

    def writer(n: int) -> None:
        while not stop.is_set():
            b.set("counter-jump", n)
            b.set("slow", n)

    threads = [threading.Thread(target=writer, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    try:
        for _ in range(2000):
            seen.append(b.current())
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert all(isinstance(s, BehaviourSettings) for s in seen)
    assert {s.counter_jump for s in seen} <= {None, 1, 2}


def test_corrupt_signed_data_differs_in_content_not_length() -> None:
    data = bytes(range(40))
    assert corrupt_signed_data(data) != data and len(corrupt_signed_data(data)) == len(data)


# --- counters ----------------------------------------------------------------------------------


def test_counter_regression_is_detected_by_the_relying_party() -> None:
    with behaving_key() as key:
        rp = RelyingParty(root_der=key.root_der)
        register(key.client(), rp)
        for expected in (1, 2, 3, 4, 5):
            assert sign_in(key.client(), rp) == expected
        key.authenticator.behaviours.set("counter-regression", 3)
        state, response, challenge = assertion(key.client(), rp)
        counter = response.response.authenticator_data.counter
        assert counter == 2  # 3 below the highest reported (5): a cloned key
        # The signature is fine: Fido2Server accepts it; its caller's counter check fails.
        rp.server.authenticate_complete(state, rp.credentials, response)
        assert counter <= rp.counters[response.raw_id]
        # py_webauthn checks the counter itself.
        with pytest.raises(InvalidAuthenticationResponse, match="sign count"):
            webauthn_check(rp, response, challenge, rp.counters[response.raw_id])
        # Again: still below (the stored counter did not advance).
        _, again, _ = assertion(key.client(), rp)
        assert again.response.authenticator_data.counter == 2
        key.authenticator.behaviours.clear("counter-regression")
        assert sign_in(key.client(), rp) == 6


@pytest.mark.parametrize("versions", [None, "U2F_V2"])
def test_counter_regression_from_the_start_is_detected_on_the_second_sign_in(
    versions: str | None,
) -> None:
    """Set before the first sign-in (`vfido run --behaviour counter-regression`), the
    behaviour reported 0, 0, 0...: an RP skips the counter check when both counters are 0,
    so no clone was ever detected. Now the first assertion reports 1 and the next falls
    below it, over CTAP2 and over U2F ("U2F requests follow the counter behaviours"; the
    U2F side kept reporting 0 until session 15)."""
    assignments = ["counter-regression"] + ([f"versions={versions}"] if versions else [])
    with behaving_key(*assignments) as key:
        rp = RelyingParty(root_der=key.root_der)
        register(key.client(), rp)
        assert sign_in(key.client(), rp) == 1
        state, response, challenge = assertion(key.client(), rp)
        assert response.response.authenticator_data.counter == 0
        rp.server.authenticate_complete(state, rp.credentials, response)
        with pytest.raises(InvalidAuthenticationResponse, match="sign count"):
            webauthn_check(rp, response, challenge, rp.counters[response.raw_id])


def test_zero_counter_reports_zero_which_rps_accept_as_no_counter() -> None:
    with behaving_key("zero-counter") as key:
        rp = RelyingParty(root_der=key.root_der)
        response = register(key.client(), rp)
        assert response.response.attestation_object.auth_data.counter == 0
        for _ in range(3):
            # Both libraries accept 0 after 0: the RP cannot detect a clone any more.
            assert sign_in(key.client(), rp) == 0
        key.authenticator.behaviours.clear("zero-counter")
        assert sign_in(key.client(), rp) == 1


def test_counter_jump_advances_by_n() -> None:
    with behaving_key("counter-jump=500") as key:
        rp = RelyingParty(root_der=key.root_der)
        register(key.client(), rp)
        assert sign_in(key.client(), rp) == 500
        assert sign_in(key.client(), rp) == 1000  # accepted: larger is fine for an RP
        key.authenticator.behaviours.clear("counter-jump")
        assert sign_in(key.client(), rp) == 1001


# --- user presence and verification -----------------------------------------------------------


class CountingInteraction(UserInteraction):
    def __init__(self, pin: str | None = None) -> None:
        self.prompts = 0
        self.pin = pin

    def prompt_up(self) -> None:
        self.prompts += 1

    def request_pin(self, permissions: Any, rp_id: str | None) -> str | None:
        return self.pin

    def request_uv(self, permissions: Any, rp_id: str | None) -> bool:
        return True


def test_presence_timeout_gives_user_action_timeout_after_upneeded_keepalives() -> None:
    with behaving_key() as key:
        rp = RelyingParty(root_der=key.root_der)
        register(key.client(), rp)  # presence works
        key.authenticator.behaviours.set("presence-timeout", 0.3)
        interaction = CountingInteraction()
        with pytest.raises(ClientError) as info:
            register(key.client(interaction=interaction), RelyingParty(root_der=key.root_der))
        assert info.value.code == ClientError.ERR.TIMEOUT
        assert ctap_cause(info.value) == CtapError.ERR.USER_ACTION_TIMEOUT
        assert interaction.prompts >= 1  # the client was told to ask for a touch
        with pytest.raises(ClientError) as info:
            sign_in(key.client(), rp)
        assert ctap_cause(info.value) == CtapError.ERR.USER_ACTION_TIMEOUT


def test_presence_timeout_holds_for_built_in_uv_too() -> None:
    """Nobody touches the key, and nobody verifies on it either: with built-in UV (the
    toolkit's default, `vfido run --uv`) a registration that verifies the user timed out
    no more than one without it; it registered at once (found by a newcomer's trial)."""
    with behaving_key(config=Config(builtin_uv=True)) as key:
        rp = RelyingParty(root_der=key.root_der)
        key.authenticator.behaviours.set("presence-timeout", 0.3)
        ctap = Ctap2(key.device)
        before = ClientPin(ctap).get_uv_retries()
        with pytest.raises(ClientError) as info:
            register(key.client(interaction=CountingInteraction()), rp, uv="required")
        assert ctap_cause(info.value) == CtapError.ERR.USER_ACTION_TIMEOUT
        assert ClientPin(ctap).get_uv_retries() == before  # no attempt was made
        key.authenticator.behaviours.clear("presence-timeout")
        register(key.client(), rp, uv="required")


def test_uv_fail_fails_builtin_user_verification_and_uses_up_retries() -> None:
    with behaving_key(config=Config(builtin_uv=True)) as key:
        rp = RelyingParty(root_der=key.root_der)
        response = register(key.client(), rp, uv="required")
        assert response.response.attestation_object.auth_data.is_user_verified()
        ctap = Ctap2(key.device)
        before = ClientPin(ctap).get_uv_retries()
        key.authenticator.behaviours.set("uv-fail")
        with pytest.raises(ClientError) as info:
            register(key.client(interaction=CountingInteraction()), rp, uv="required")
        assert ctap_cause(info.value) == CtapError.ERR.UV_INVALID
        assert ClientPin(ctap).get_uv_retries() < before


def test_pin_blocked_reports_no_retries_and_refuses_the_pin() -> None:
    with behaving_key("pin-blocked") as key:
        ctap = Ctap2(key.device)
        assert ctap.info.options["clientPin"] is True
        assert ClientPin(ctap).get_pin_retries()[0] == 0
        rp = RelyingParty(root_der=key.root_der)
        with pytest.raises(ClientError) as info:
            register(key.client(interaction=CountingInteraction("123456")), rp, uv="required")
        assert ctap_cause(info.value) == CtapError.ERR.PIN_BLOCKED
        with pytest.raises(CtapError) as ctap_info:
            ClientPin(ctap).set_pin("123456")
        # 6.5.5.5 step 3: "If a PIN has already been set, ... CTAP2_ERR_PIN_AUTH_INVALID".
        assert ctap_info.value.code == CtapError.ERR.PIN_AUTH_INVALID
        key.authenticator.behaviours.clear("pin-blocked")
        assert Ctap2(key.device).info.options["clientPin"] is False


# --- timing ----------------------------------------------------------------------------------


def test_slow_answers_come_after_processing_keepalives() -> None:
    with behaving_key() as key:
        ctap = Ctap2(key.device)
        statuses: list[int] = []
        key.authenticator.behaviours.set("slow", 600)
        info = ctap.send_cbor(Ctap2.CMD.GET_INFO, on_keepalive=statuses.append)
        assert info[1] == ["U2F_V2", "FIDO_2_0", "FIDO_2_1", "FIDO_2_3"]
        assert statuses and set(statuses) == {1}  # PROCESSING, until the answer came
        # A cancel ends the wait: KEEPALIVE_CANCEL.
        cancel = threading.Event()

        def cancel_on_keepalive(status: int) -> None:
            cancel.set()

        with pytest.raises(CtapError) as err:
            ctap.send_cbor(Ctap2.CMD.GET_INFO, event=cancel, on_keepalive=cancel_on_keepalive)
        assert err.value.code == CtapError.ERR.KEEPALIVE_CANCEL
        key.authenticator.behaviours.clear()
        statuses.clear()
        ctap.send_cbor(Ctap2.CMD.GET_INFO, on_keepalive=statuses.append)
        assert statuses == []


# --- signatures, credentials, users -------------------------------------------------------------


def test_wrong_signature_is_rejected_by_both_rp_libraries() -> None:
    with behaving_key() as key:
        rp = RelyingParty(root_der=key.root_der)
        register(key.client(), rp)
        assert sign_in(key.client(), rp) == 1
        key.authenticator.behaviours.set("wrong-signature")
        state, response, challenge = assertion(key.client(), rp)
        with pytest.raises(ValueError, match="Invalid signature"):
            rp.server.authenticate_complete(state, rp.credentials, response)
        with pytest.raises(InvalidAuthenticationResponse, match="signature"):
            webauthn_check(rp, response, challenge, 1)


def test_vanished_credential_gives_no_credentials_for_it_only() -> None:
    with behaving_key() as key:
        rp = RelyingParty(root_der=key.root_der)
        gone = register(key.client(), rp).raw_id
        other_rp = RelyingParty(root_der=key.root_der)
        register(key.client(), other_rp)
        key.authenticator.behaviours.set("vanished-credential", b64url(gone))
        with pytest.raises(ClientError) as info:
            sign_in(key.client(), rp)
        assert info.value.code == ClientError.ERR.DEVICE_INELIGIBLE
        assert ctap_cause(info.value) == CtapError.ERR.NO_CREDENTIALS
        assert sign_in(key.client(), other_rp) == 1  # the other credential is still there
        # The vanished credential no longer excludes a new registration.
        register(key.client(), rp)
        key.authenticator.behaviours.set("vanished-credential")  # every credential
        with pytest.raises(ClientError):
            sign_in(key.client(), other_rp)
        key.authenticator.behaviours.clear()
        assert sign_in(key.client(), other_rp) == 2


def test_without_the_behaviour_an_excluded_credential_is_refused() -> None:
    with behaving_key() as key:
        rp = RelyingParty(root_der=key.root_der)
        register(key.client(), rp)
        with pytest.raises(ClientError) as info:
            register(key.client(), rp)
        assert ctap_cause(info.value) == CtapError.ERR.CREDENTIAL_EXCLUDED


def test_omit_user_leaves_a_usernameless_sign_in_without_user_handle() -> None:
    with behaving_key() as key:
        rp = RelyingParty(root_der=key.root_der)
        register(key.client(), rp, rk=True)
        _, response, _ = assertion(key.client(), rp, allow=False)
        assert response.response.user_handle is not None  # normally: who signs in
        key.authenticator.behaviours.set("omit-user")
        state, response, _ = assertion(key.client(), rp, allow=False)
        assert response.response.user_handle is None
        # The signature still verifies, but the RP cannot tell which account this is.
        rp.server.authenticate_complete(state, rp.credentials, response)


# --- attestation ---------------------------------------------------------------------------------


def _x5c_leaf(response: Any) -> x509.Certificate:
    att = response.response.attestation_object
    return x509.load_der_x509_certificate(att.att_stmt["x5c"][0])


def test_untrusted_attestation_fails_the_trust_path_to_the_real_root() -> None:
    with behaving_key("attestation=untrusted") as key:
        rp = RelyingParty(root_der=key.root_der)
        with pytest.raises(UntrustedAttestation):
            register(key.client(), rp)
        # py_webauthn (OpenSSL) cannot build a path to the real root either.
        rp_py = RelyingParty(root_der=misbehaviour_root())
        response = register(key.client(), rp_py)  # trusted only under the misbehaviour CA
        assert attestation_fmt(response) == "packed"
        real_root = x509.load_der_x509_certificate(key.root_der)
        assert _x5c_leaf(response).issuer != real_root.subject


def _verify_registration(response: Any, challenge: bytes, root_der: bytes) -> Any:
    pem = x509.load_der_x509_certificate(root_der).public_bytes(serialization.Encoding.PEM)
    return webauthn.verify_registration_response(
        credential=json.dumps(dict(response)),
        expected_challenge=challenge,
        expected_rp_id="example.com",
        expected_origin="https://example.com",
        pem_root_certs_bytes_by_fmt={AttestationFormat.PACKED: [pem]},
    )


def test_expired_attestation_certificate_fails_the_validity_check() -> None:
    with behaving_key("attestation=expired") as key:
        rp = RelyingParty()  # no trust check: see what comes
        options, _ = rp.begin_registration(*random_user(), user_verification="discouraged")
        response = key.client().make_credential(options.public_key)
        leaf = _x5c_leaf(response)
        assert leaf.not_valid_after_utc < datetime.datetime.now(datetime.UTC)
        # Trusting the CA that issued it, only the validity is wrong: OpenSSL says so.
        with pytest.raises(InvalidRegistrationResponse) as info:
            _verify_registration(response, challenge_of(options), misbehaviour_root())
        cause: BaseException | None = info.value
        while cause is not None and not isinstance(cause, X509StoreContextError):
            cause = cause.__cause__ or cause.__context__
        assert isinstance(cause, X509StoreContextError)
        assert "expired" in str(cause)
        # The same key with a valid certificate from that CA passes the same check.
        key.authenticator.behaviours.set("attestation", "untrusted")
        options, _ = rp.begin_registration(*random_user(), user_verification="discouraged")
        response = key.client().make_credential(options.public_key)
        _verify_registration(response, challenge_of(options), misbehaviour_root())


def test_none_attestation() -> None:
    with behaving_key() as key:
        rp = RelyingParty(root_der=key.root_der)
        assert attestation_fmt(register(key.client(), rp)) == "packed"
        key.authenticator.behaviours.set("attestation", "none")
        # CTAP 2.2 section 6.4 (0x16): "none" is implied and MUST be omitted; nothing else
        # is left, and the list MUST NOT be empty: the member is left out.
        assert 0x16 not in Ctap2(key.device).send_cbor(Ctap2.CMD.GET_INFO)
        response = register(key.client(), RelyingParty(attestation="none"))
        att = response.response.attestation_object
        assert att.fmt == "none" and att.att_stmt == {}
        options, _ = RelyingParty().begin_registration(
            *random_user(), user_verification="discouraged"
        )
        response = key.client().make_credential(options.public_key)
        verified = _verify_registration(response, challenge_of(options), key.root_der)
        assert verified.fmt == AttestationFormat.NONE  # an RP that wants attestation gets none


# --- versions ----------------------------------------------------------------------------------


def test_fido_2_0_only() -> None:
    with behaving_key() as key:
        assert Ctap1(key.device).get_version() == "U2F_V2"
        key.authenticator.behaviours.set("versions", "FIDO_2_0")
        info = Ctap2(key.device).info
        assert info.versions == ["FIDO_2_0"]
        assert "credMgmt" not in info.options and "pinUvAuthToken" not in info.options
        assert info.pin_uv_protocols == [1]
        # This channel was told (at its INIT) that U2F works: the key itself refuses.
        with pytest.raises(ApduError) as apdu:
            Ctap1(key.device).get_version()
        assert apdu.value.code == 0x6D00  # SW_INS_NOT_SUPPORTED
        # A CTAP2-only key: CTAPHID_INIT now advertises NMSG (no CTAPHID_MSG), and the
        # transport refuses U2F messages on the re-INITed channel.
        capabilities = key.device.call(CTAPHID.INIT, b"\x01" * 8)[16]
        assert capabilities & CAPABILITY.NMSG and capabilities & CAPABILITY.CBOR
        with pytest.raises(CtapError) as refused:
            Ctap1(key.device).get_version()
        assert refused.value.code == CtapError.ERR.INVALID_COMMAND
        # A CTAP 2.0 key still registers and signs in (with a PIN, protocol 1).
        ClientPin(Ctap2(key.device)).set_pin("123456")
        rp = RelyingParty(root_der=key.root_der)
        register(key.client(interaction=CountingInteraction("123456")), rp, uv="required")
        assert sign_in(key.client(), rp) == 1


def test_fido_2_0_answers_as_a_ctap_2_0_key_does() -> None:
    """ "versions=FIDO_2_0 | a CTAP2-only key: getInfo reports only FIDO_2_0 (PIN protocol 1,
    no 2.1 options)": a CTAP 2.0 key (CTAP 2.0 section 5.4) has six getInfo members, the
    options plat/rk/clientPin/up/uv, hmac-secret, and none of the 2.1 commands. A session 15
    review found uvAcfg, CTAP 2.2 extensions (hmac-secret-mc: PRF at registration) and
    members 0x07-0x16 left, and selection, credMgmt and PIN protocol 2 still served."""
    with behaving_key("versions=FIDO_2_0", config=Config(builtin_uv=True)) as key:
        raw = cbor.decode(key.device.call(CTAPHID.CBOR, b"\x04")[1:])
        assert sorted(raw) == [1, 2, 3, 4, 5, 6]
        assert raw[1] == ["FIDO_2_0"] and raw[2] == ["hmac-secret"] and raw[6] == [1]
        assert set(raw[4]) <= {"plat", "rk", "clientPin", "up", "uv"} and "uv" in raw[4]
        for command in (0x0A, 0x0B, 0x0C, 0x0D):  # credMgmt, selection, largeBlobs, config
            status = key.device.call(CTAPHID.CBOR, bytes([command]))[0]
            assert status == CtapError.ERR.INVALID_COMMAND
        with pytest.raises(CtapError) as protocol:
            ClientPin(Ctap2(key.device), PinProtocolV2()).set_pin("123456")
        assert protocol.value.code == CtapError.ERR.INVALID_PARAMETER
        # Behaviour cleared: the full key again.
        key.authenticator.behaviours.clear("versions")
        assert "FIDO_2_3" in Ctap2(key.device).get_info().versions


@pytest.mark.parametrize("persona", ["ctap21", "ctap21pre"])
def test_fido_2_0_narrows_a_persona_too(persona: str) -> None:
    """ "--behaviour still applies" with a persona: FIDO_2_0 on a CTAP 2.1 persona reported
    the persona's FIDO_2_1 and PIN protocol 2 (FIDO_2_1 without its pinUvAuthToken)."""
    with VirtualKey(persona=persona, behaviours={"versions": "FIDO_2_0"}) as key:
        ctap = Ctap2(key.device)
        info = ctap.get_info()
        assert info.versions == ["FIDO_2_0"]
        assert info.pin_uv_protocols == [1]
        assert "pinUvAuthToken" not in info.options
        # No maxCredentialCountInList in a CTAP 2.0 getInfo, so none enforced (the persona's
        # 8 was, with LIMIT_EXCEEDED for a limit the client was not told: the diff review).
        assert not info.max_creds_in_list
        allow = [{"type": "public-key", "id": bytes([n]) * 32} for n in range(9)]
        with pytest.raises(CtapError) as none:
            ctap.get_assertion("example.com", bytes(32), allow, options={"up": False})
        assert none.value.code == CtapError.ERR.NO_CREDENTIALS


def test_u2f_only_makes_clients_fall_back_to_u2f() -> None:
    with behaving_key("versions=U2F_V2") as key:
        # Like a U2F-only hardware key: no CBOR capability, CTAPHID_CBOR refused.
        assert not key.device.capabilities & CAPABILITY.CBOR
        assert not key.device.capabilities & CAPABILITY.NMSG
        with pytest.raises(ValueError, match="does not support CTAP2"):
            Ctap2(key.device)  # python-fido2 reads the capability
        with pytest.raises(CtapError) as info:
            key.device.call(CTAPHID.CBOR, b"\x04")  # authenticatorGetInfo regardless
        assert info.value.code == CtapError.ERR.INVALID_COMMAND
        rp = RelyingParty(root_der=key.root_der)
        registration = register(key.client(), rp)  # python-fido2 uses CTAP1
        assert attestation_fmt(registration) == "fido-u2f"  # verified up to the real root
        assert sign_in(key.client(), rp) == 1
        # The other behaviours apply to the U2F side too.
        behaviours = key.authenticator.behaviours
        behaviours.set("counter-jump", 10)
        assert sign_in(key.client(), rp) == 11
        behaviours.set("counter-regression", 2)
        state, response, challenge = assertion(key.client(), rp)
        assert response.response.authenticator_data.counter == 9
        with pytest.raises(InvalidAuthenticationResponse, match="sign count"):
            webauthn_check(rp, response, challenge, 11)
        behaviours.clear("counter-regression")
        behaviours.set("wrong-signature")
        state, response, _ = assertion(key.client(), rp)
        with pytest.raises(ValueError, match="Invalid signature"):
            rp.server.authenticate_complete(state, rp.credentials, response)
        behaviours.clear("wrong-signature")
        behaviours.set("vanished-credential")
        with pytest.raises(ClientError) as err:
            sign_in(key.client(), rp)
        assert err.value.code == ClientError.ERR.DEVICE_INELIGIBLE
        behaviours.set("attestation", "untrusted")
        with pytest.raises(UntrustedAttestation):
            register(key.client(), RelyingParty(root_der=key.root_der))


# --- store ------------------------------------------------------------------------------------


def test_store_full_refuses_discoverable_credentials() -> None:
    with behaving_key() as key:
        assert (Ctap2(key.device).info.remaining_disc_creds or 0) > 0
        key.authenticator.behaviours.set("store-full")
        assert Ctap2(key.device).info.remaining_disc_creds == 0
        rp = RelyingParty(root_der=key.root_der)
        with pytest.raises(ClientError) as info:
            register(key.client(), rp, rk=True)
        assert info.value.code == ClientError.ERR.CONFIGURATION_UNSUPPORTED
        assert ctap_cause(info.value) == CtapError.ERR.KEY_STORE_FULL
        assert key.store.count_credentials() == 0
        register(key.client(), rp, rk=False)  # server-side credentials need no room
        assert sign_in(key.client(), rp) == 1


def test_store_full_is_as_full_as_a_store_at_its_capacity() -> None:
    """ "store-full | discoverable credentials refused with KEY_STORE_FULL;
    remainingDiscoverableCredentials 0": like a store at its capacity, which still takes a
    credential replacing one of the same RP and user, and whose credential management
    metadata says what getInfo says (a session 15 review found both different)."""
    with behaving_key() as key:
        rp = RelyingParty(root_der=key.root_der)
        alice = (b"alice", "alice")
        register(key.client(), rp, rk=True, user=alice)
        key.authenticator.behaviours.set("store-full")
        # The same account registered again (an RP that forgot it: no excludeList) replaces
        # the credential: no room needed.
        register(key.client(), RelyingParty(root_der=key.root_der), rk=True, user=alice)
        assert key.store.count_credentials() == 1
        with pytest.raises(ClientError) as info:
            register(key.client(), rp, rk=True, user=(b"bob", "bob"))
        assert ctap_cause(info.value) == CtapError.ERR.KEY_STORE_FULL
        ClientPin(Ctap2(key.device)).set_pin("123456")
        token = ClientPin(Ctap2(key.device)).get_pin_token(
            "123456", ClientPin.PERMISSION.CREDENTIAL_MGMT
        )
        metadata = CredentialManagement(Ctap2(key.device), PinProtocolV2(), token).get_metadata()
        assert metadata[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 1
        assert metadata[CredentialManagement.RESULT.MAX_REMAINING_COUNT] == 0


def test_protocol_names_agree_with_the_transports() -> None:
    """authenticator.device spells transports.handler's protocol names itself (the
    authenticator does not import the transports): they must be the same strings."""
    from vfido.authenticator import device
    from vfido.transports import handler

    assert device._BOTH_PROTOCOLS == handler.BOTH_PROTOCOLS
    assert frozenset({handler.U2F}) == device._U2F_ONLY
    assert frozenset({handler.CTAP2}) == device._CTAP2_ONLY
