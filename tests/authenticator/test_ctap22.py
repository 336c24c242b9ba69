"""CTAP 2.2 features, each driven by python-fido2 (the client they are tested with).

One section per feature: the getInfo members, persistent pinUvAuthTokens (pcmr,
perCredMgmtRO, encIdentifier, encCredStoreState), thirdPartyPayment, pinComplexityPolicy,
uvCountSinceLastPinEntry, hmac-secret-mc, and the CTAP 2.1-PRE credentialMgmtPreview.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.config import Config as Ctap2Config
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.extensions import (
    HmacSecretExtension,
    PaymentCredentialInstrument,
    PaymentCurrencyAmount,
    ThirdPartyPaymentExtension,
)
from fido2.ctap2.pin import ClientPin, PinProtocolV1, PinProtocolV2
from fido2.payment import CollectedClientAdditionalPaymentData, PaymentClientDataCollector
from fido2.server import Fido2Server
from fido2.utils import sha256

from tests.ctap2_helpers import (
    RP_ID,
    Key,
    create_credential,
    credential_data,
    descriptor,
    make_key,
    params,
    rp,
    user,
)
from vfido.authenticator.config import Config
from vfido.authenticator.env import PresenceResult
from vfido.authenticator.errors import CtapStatus
from vfido.authenticator.get_info import MAX_PIN_LENGTH
from vfido.authenticator.pin_policy import complexity_problem
from vfido.presence import AutoPresence

PIN = "31415926"
PCMR = ClientPin.PERMISSION.PERSISTENT_CREDENTIAL_MGMT
CM = ClientPin.PERMISSION.CREDENTIAL_MGMT
PROTOCOLS = [PinProtocolV1, PinProtocolV2]


class PinInteraction(UserInteraction):
    def __init__(self, pin: str = PIN) -> None:
        self.pin = pin

    def request_pin(self, permissions: Any, rp_id: str | None) -> str | None:
        return self.pin


def key_with_pin(config: Config | None = None, pin: str = PIN) -> Key:
    key = make_key(config, AutoPresence() if config and config.builtin_uv else None)
    ClientPin(key.ctap2()).set_pin(pin)
    return key


def token(key: Key, permissions: ClientPin.PERMISSION, protocol: Any = None) -> bytes:
    return ClientPin(key.ctap2(), protocol).get_pin_token(PIN, permissions)


def credman(key: Key, tok: bytes, protocol: Any = None) -> CredentialManagement:
    return CredentialManagement(key.ctap2(), protocol or PinProtocolV2(), tok)


def resident(key: Key, rp_id: str = RP_ID, user_id: bytes = b"user-1") -> bytes:
    """A discoverable credential, made with a PIN token (the key has a PIN)."""
    ctap2 = key.ctap2()
    protocol = PinProtocolV2()
    tok = ClientPin(ctap2, protocol).get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, rp_id)
    cdh = os.urandom(32)
    response = ctap2.make_credential(
        cdh,
        rp(rp_id),
        user(user_id),
        params(),
        options={"rk": True},
        pin_uv_param=protocol.authenticate(tok, cdh),
        pin_uv_protocol=protocol.VERSION,
    )
    return bytes(credential_data(response).credential_id)


# --- getInfo -------------------------------------------------------------------------------


def test_get_info_ctap22_members() -> None:
    key = make_key()
    info = key.ctap2().get_info()
    assert "FIDO_2_3" in info.versions and "FIDO_2_1_PRE" not in info.versions
    assert info.options["perCredMgmtRO"] is True
    assert "credentialMgmtPreview" not in info.options
    assert info.transports_for_reset == ["usb"] == info.transports
    assert info.max_pin_length == MAX_PIN_LENGTH == 63
    assert info.pin_complexity_policy is False
    assert info.pin_complexity_policy_url is None
    assert len(info.enc_identifier) == 32 and len(info.enc_cred_store_state) == 32
    # Built-in UV only: uvCountSinceLastPinEntry.
    assert info.uv_count_since_pin is None
    assert "thirdPartyPayment" in info.extensions
    assert "pinComplexityPolicy" in info.extensions


@pytest.mark.parametrize(
    "config",
    [Config(), Config(ctap21_pre=True), Config(enterprise_attestation=1), Config(builtin_uv=True)],
)
def test_versions_say_fido_2_3_and_never_fido_2_2(config: Config) -> None:
    """CTAP 2.3 section 6.4: "Supported versions are: "FIDO_2_3" for CTAP2.3, "FIDO_2_1" for
    CTAP2.1, "FIDO_2_0" for CTAP2.0, "FIDO_2_1_PRE" for CTAP2.1 Preview features and
    "U2F_V2" for CTAP1/U2F authenticators", and "FIDO_2_2" was never defined and must not
    appear (the FIDO conformance tools' Authr-Generic-1 P-1 wants FIDO_2_3)."""
    versions = make_key(config, AutoPresence()).ctap2().get_info().versions
    assert versions[-2:] == ["FIDO_2_1", "FIDO_2_3"] and "FIDO_2_2" not in versions
    assert set(versions) <= {"U2F_V2", "FIDO_2_0", "FIDO_2_1_PRE", "FIDO_2_1", "FIDO_2_3"}


@pytest.mark.parametrize("enterprise", [0, 1])
@pytest.mark.parametrize("sub_command", [0x01, 0x02, 0x03, 0x04, 0xFF])
def test_authenticator_config_commands_are_the_subcommands_config_answers(
    enterprise: int, sub_command: int
) -> None:
    """CTAP 2.3 getInfo authenticatorConfigCommands (0x1F): the subcommands the key
    supports. 6.11.1 / 6.11.2 / 6.11.4: the member "MUST contain" 0x01 / 0x02 / 0x03 when
    the subcommand is supported; 6.11 step 1 refuses any other with INVALID_PARAMETER. On a
    key without a PIN every supported one runs without a token (step 2)."""
    key = make_key(Config(enterprise_attestation=enterprise))
    listed = key.ctap2().get_info().authenticator_config_commands
    assert listed == ([1, 2, 3] if enterprise else [2, 3])
    status, _ = key.call(0x0D, {1: sub_command})
    if sub_command in listed:
        assert status == CtapStatus.OK
    else:
        assert status == CtapStatus.INVALID_PARAMETER


def test_enc_identifier_changes_every_get_info() -> None:
    # python-fido2 device suite test_enc_identifier_changes: a fresh IV each time.
    key = make_key()
    assert key.ctap2().get_info().enc_identifier != key.ctap2().get_info().enc_identifier


def test_max_pin_length_is_what_set_pin_accepts() -> None:
    key = make_key()
    ClientPin(key.ctap2()).set_pin("7" * 62 + "1")  # 63 characters
    with pytest.raises(CtapError, match="PIN_POLICY_VIOLATION"):
        ClientPin(key.ctap2()).change_pin("7" * 62 + "1", "7" * 63 + "1")


def test_behaviour_fido_2_0_drops_ctap22_members() -> None:
    key = make_key()
    key.authenticator.behaviours.set("versions", "FIDO_2_0")
    info = key.ctap2().get_info()
    assert info.versions == ["FIDO_2_0"]
    assert info.enc_identifier is None and info.transports_for_reset == []
    assert "perCredMgmtRO" not in info.options


# --- persistent pinUvAuthToken ------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_persistent_token_reads_credential_management(protocol: Any) -> None:
    # As python-fido2's device suite test_read_only_management.
    key = key_with_pin()
    ppuat = token(key, PCMR, protocol())
    info = key.ctap2().get_info()
    ident = info.get_identifier(ppuat)
    state = info.get_cred_store_state(ppuat)
    assert ident is not None and len(ident) == 16 and state is not None

    cred_id = resident(key)
    state_after_create = key.ctap2().get_info().get_cred_store_state(ppuat)
    assert state_after_create != state

    for power_cycle in (False, True):
        if power_cycle:
            key.authenticator.power_cycle()
        cm = credman(key, ppuat, protocol())
        assert cm.get_metadata()[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 1
        rps = cm.enumerate_rps()
        assert [r[CredentialManagement.RESULT.RP]["id"] for r in rps] == [RP_ID]
        creds = cm.enumerate_creds(sha256(RP_ID.encode()))
        assert creds[0][CredentialManagement.RESULT.CREDENTIAL_ID]["id"] == cred_id
        # Read-only: no update, no delete.
        with pytest.raises(CtapError, match="PIN_AUTH_INVALID"):
            cm.update_user_info(descriptor(cred_id), {"id": b"user-1", "name": "x"})
        with pytest.raises(CtapError, match="PIN_AUTH_INVALID"):
            cm.delete_cred(descriptor(cred_id))
        info = key.ctap2().get_info()
        assert info.get_cred_store_state(ppuat) == state_after_create
        assert info.get_identifier(ppuat) == ident

    # A cm token deletes; the state moves again.
    credman(key, token(key, CM)).delete_cred(descriptor(cred_id))
    assert key.ctap2().get_info().get_cred_store_state(ppuat) not in (state, state_after_create)


def test_cred_store_state_follows_updates() -> None:
    key = key_with_pin()
    ppuat = token(key, PCMR)
    cred_id = resident(key)
    before = key.ctap2().get_info().get_cred_store_state(ppuat)
    credman(key, token(key, CM)).update_user_info(
        descriptor(cred_id), {"id": b"user-1", "name": "renamed"}
    )
    assert key.ctap2().get_info().get_cred_store_state(ppuat) != before


def test_persistent_token_is_granted_alone() -> None:
    key = key_with_pin()
    with pytest.raises(CtapError, match="UNAUTHORIZED_PERMISSION"):
        token(key, PCMR | CM)


def test_persistent_token_cannot_make_credentials() -> None:
    key = key_with_pin()
    ppuat = token(key, PCMR)
    cdh = os.urandom(32)
    with pytest.raises(CtapError, match="PIN_AUTH_INVALID"):
        key.ctap2().make_credential(
            cdh,
            rp(),
            user(),
            params(),
            pin_uv_param=PinProtocolV2().authenticate(ppuat, cdh),
            pin_uv_protocol=2,
        )


def test_persistent_token_keeps_the_regular_token() -> None:
    key = key_with_pin()
    cm_token = token(key, CM)
    token(key, PCMR)
    assert credman(key, cm_token).get_metadata()[1] == 0


def test_change_pin_resets_the_persistent_token() -> None:
    key = key_with_pin()
    ppuat = token(key, PCMR)
    ident = key.ctap2().get_info().get_identifier(ppuat)
    ClientPin(key.ctap2()).change_pin(PIN, "27182818")
    with pytest.raises(CtapError, match="PIN_AUTH_INVALID"):
        credman(key, ppuat).get_metadata()
    # The old token no longer decrypts the identifier; a new one does, to the same value.
    assert key.ctap2().get_info().get_identifier(ppuat) != ident
    fresh = ClientPin(key.ctap2()).get_pin_token("27182818", PCMR)
    assert fresh != ppuat
    assert key.ctap2().get_info().get_identifier(fresh) == ident


def test_forced_pin_change_resets_the_persistent_token() -> None:
    key = key_with_pin()
    ppuat = token(key, PCMR)
    config_token = token(key, ClientPin.PERMISSION.AUTHENTICATOR_CFG)
    Ctap2Config(key.ctap2(), PinProtocolV2(), config_token).set_min_pin_length(
        force_change_pin=True
    )
    with pytest.raises(CtapError, match="PIN_AUTH_INVALID"):
        credman(key, ppuat).get_metadata()


def test_reset_changes_the_identifier() -> None:
    key = key_with_pin()
    ident = key.ctap2().get_info().get_identifier(token(key, PCMR))
    key.authenticator.power_cycle()
    key.ctap2().reset()
    ClientPin(key.ctap2()).set_pin(PIN)
    assert key.ctap2().get_info().get_identifier(token(key, PCMR)) != ident


# --- thirdPartyPayment --------------------------------------------------------------------


def payment_client(key: Key) -> Fido2Client:
    return Fido2Client(
        key.device,
        client_data_collector=PaymentClientDataCollector("https://example.com"),
        user_interaction=PinInteraction(),
        extensions=[ThirdPartyPaymentExtension()],
    )


def test_third_party_payment() -> None:
    # As python-fido2's device suite test_payment_extension.
    key = key_with_pin()
    server = Fido2Server({"id": RP_ID, "name": "Example RP"})
    options, state = server.register_begin(
        {"id": b"user_id", "name": "A. User"},
        resident_key_requirement="required",
        user_verification="required",
        authenticator_attachment="cross-platform",
    )
    client = payment_client(key)
    result = client.make_credential(
        {**options["publicKey"], "extensions": {"payment": {"isPayment": True}}}
    )
    auth_data = server.register_complete(state, result)
    assert auth_data.extensions == {"thirdPartyPayment": True}

    creds = credman(key, token(key, CM)).enumerate_creds(sha256(RP_ID.encode()))
    assert creds[0][CredentialManagement.RESULT.THIRD_PARTY_PAYMENT] is True

    request, state = server.authenticate_begin(
        [auth_data.credential_data], user_verification="required"
    )
    payment = CollectedClientAdditionalPaymentData(
        rp_id=RP_ID,
        top_origin="https://top.example.com",
        payee_name="Mr. Payee",
        payee_origin="https://payee.example.com",
        total=PaymentCurrencyAmount(currency="USD", value="1.00"),
        instrument=PaymentCredentialInstrument(
            display_name="My Payment", icon="https://example.com/icon.png"
        ),
    )
    response = client.get_assertion(
        {**request["publicKey"], "extensions": {"payment": dict(payment, isPayment=True)}}
    ).get_response(0)
    assert response.response.authenticator_data.extensions == {"thirdPartyPayment": True}
    assert response.response.client_data.type == "payment.get"


def test_third_party_payment_false_for_other_credentials() -> None:
    key = make_key()
    cred_id = create_credential(key.ctap2(), RP_ID, rk=True)
    response = key.ctap2().get_assertion(
        RP_ID, os.urandom(32), [descriptor(cred_id)], extensions={"thirdPartyPayment": True}
    )
    assert response.auth_data.extensions == {"thirdPartyPayment": False}
    ClientPin(key.ctap2()).set_pin(PIN)
    creds = credman(key, token(key, CM)).enumerate_creds(sha256(RP_ID.encode()))
    # Listed as false, as getAssertion answers it: the key has the extension, and this
    # credential was not made with it (a conformance review found it left out; the FIDO
    # tools' thirdPartyPayment check expects false).
    assert creds[0][CredentialManagement.RESULT.THIRD_PARTY_PAYMENT] is False


# --- pinComplexityPolicy ------------------------------------------------------------------


@pytest.mark.parametrize(
    "pin", ["0000", "aaaaaa", "1234", "98765", "abcd", "1212", "123123", "abab"]
)
def test_complexity_policy_refuses_trivial_pins(pin: str) -> None:
    assert complexity_problem(pin) is not None
    key = make_key(Config(pin_complexity_policy=True))
    with pytest.raises(CtapError, match="PIN_POLICY_VIOLATION"):
        ClientPin(key.ctap2()).set_pin(pin)


@pytest.mark.parametrize("pin", ["4719", "1235", "11223", "31415926", "correct horse"])
def test_complexity_policy_accepts_others(pin: str) -> None:
    assert complexity_problem(pin) is None
    key = make_key(Config(pin_complexity_policy=True))
    ClientPin(key.ctap2()).set_pin(pin)
    assert key.ctap2().get_info().pin_complexity_policy is True


def test_complexity_policy_url() -> None:
    url = "https://example.com/pin-policy"
    key = make_key(Config(pin_complexity_policy=True, pin_complexity_policy_url=url))
    assert key.ctap2().get_info().pin_complexity_policy_url == url.encode()
    with pytest.raises(ValueError, match="pin_complexity_policy_url"):
        Config(pin_complexity_policy_url="")


def test_platform_turns_the_policy_on() -> None:
    key = key_with_pin(pin="1234")
    assert key.ctap2().get_info().pin_complexity_policy is False
    config_token = ClientPin(key.ctap2()).get_pin_token(
        "1234", ClientPin.PERMISSION.AUTHENTICATOR_CFG
    )
    Ctap2Config(key.ctap2(), PinProtocolV2(), config_token).set_min_pin_length(
        rp_ids=[RP_ID], pin_complexity_policy=True
    )
    assert key.ctap2().get_info().pin_complexity_policy is True
    with pytest.raises(CtapError, match="PIN_POLICY_VIOLATION"):
        ClientPin(key.ctap2()).change_pin("1234", "5678")
    ClientPin(key.ctap2()).change_pin("1234", "5691")
    # The pinComplexityPolicy extension, for an RP allowed to see the PIN policy.
    mc_token = ClientPin(key.ctap2()).get_pin_token("5691", ClientPin.PERMISSION.MAKE_CREDENTIAL)
    cdh = os.urandom(32)
    response = key.ctap2().make_credential(
        cdh,
        rp(),
        user(),
        params(),
        extensions={"pinComplexityPolicy": True},
        pin_uv_param=PinProtocolV2().authenticate(mc_token, cdh),
        pin_uv_protocol=2,
    )
    assert response.auth_data.extensions == {"pinComplexityPolicy": True}
    # Reset turns it off again.
    key.authenticator.power_cycle()
    key.ctap2().reset()
    assert key.ctap2().get_info().pin_complexity_policy is False


# --- uvCountSinceLastPinEntry -------------------------------------------------------------


def test_uv_count_since_last_pin_entry() -> None:
    key = key_with_pin(Config(builtin_uv=True))
    assert key.ctap2().get_info().uv_count_since_pin == 0
    for expected in (1, 2):
        ClientPin(key.ctap2()).get_uv_token(ClientPin.PERMISSION.GET_ASSERTION, RP_ID)
        assert key.ctap2().get_info().uv_count_since_pin == expected
    token(key, ClientPin.PERMISSION.GET_ASSERTION)
    assert key.ctap2().get_info().uv_count_since_pin == 0


class _ScriptedUv(AutoPresence):
    """Built-in UV answering ``answer`` (DENIED: a finger the sensor misreads)."""

    answer = PresenceResult.DENIED

    def verify_user(self, request: Any, context: Any, timeout: float) -> PresenceResult:
        return self.answer


def test_uv_count_since_last_pin_entry_counts_failed_attempts() -> None:
    """CTAP 2.2 section 6.4 (0x17): "the number of internal User Verification operations
    since the last pin entry including all failed attempts" (the platform asks for the PIN
    again after several; a sensor that keeps misreading must bring that sooner, not later)."""
    verifier = _ScriptedUv()
    key = make_key(Config(builtin_uv=True), verifier)
    ClientPin(key.ctap2()).set_pin(PIN)
    token(key, ClientPin.PERMISSION.GET_ASSERTION)  # the last PIN entry
    for _ in range(2):
        with pytest.raises(CtapError) as err:
            ClientPin(key.ctap2()).get_uv_token(ClientPin.PERMISSION.GET_ASSERTION, RP_ID)
        assert err.value.code == CtapError.ERR.UV_INVALID
    assert key.ctap2().get_info().uv_count_since_pin == 2
    verifier.answer = PresenceResult.TIMEOUT  # no finger at all: no operation, not counted
    with pytest.raises(CtapError) as err:
        ClientPin(key.ctap2()).get_uv_token(ClientPin.PERMISSION.GET_ASSERTION, RP_ID)
    assert err.value.code == CtapError.ERR.USER_ACTION_TIMEOUT
    assert key.ctap2().get_info().uv_count_since_pin == 2
    assert ClientPin(key.ctap2()).get_uv_retries() == 6
    verifier.answer = PresenceResult.GRANTED
    ClientPin(key.ctap2()).get_uv_token(ClientPin.PERMISSION.GET_ASSERTION, RP_ID)
    assert key.ctap2().get_info().uv_count_since_pin == 3


# --- hmac-secret-mc -------------------------------------------------------------------------


@pytest.mark.parametrize("rk", [False, True])
@pytest.mark.parametrize("pin", [False, True])
def test_hmac_secret_mc_matches_the_assertion(rk: bool, pin: bool) -> None:
    """PRF at creation (hmac-secret-mc) and at sign-in (hmac-secret) give the same output,
    with and without a PIN (UV), for discoverable and server-side credentials."""
    key = key_with_pin() if pin else make_key()
    client = Fido2Client(
        key.device,
        client_data_collector=DefaultClientDataCollector("https://example.com"),
        user_interaction=PinInteraction(),
        extensions=[HmacSecretExtension(allow_hmac_secret=True)],
    )
    server = Fido2Server({"id": RP_ID, "name": "Example RP"})
    uv = "required" if pin else "discouraged"
    salt = os.urandom(32)
    options, state = server.register_begin(
        {"id": os.urandom(8), "name": "u"},
        resident_key_requirement="required" if rk else "discouraged",
        user_verification=uv,
    )
    created = client.make_credential(
        {**options["publicKey"], "extensions": {"prf": {"eval": {"first": salt}}}}
    )
    auth_data = server.register_complete(state, created)
    first = created.client_extension_results["prf"]["results"]["first"]
    request, state = server.authenticate_begin([auth_data.credential_data], user_verification=uv)
    asserted = client.get_assertion(
        {**request["publicKey"], "extensions": {"prf": {"eval": {"first": salt}}}}
    ).get_response(0)
    assert asserted.client_extension_results["prf"]["results"]["first"] == first


# --- credentialMgmtPreview (CTAP 2.1-PRE) -----------------------------------------------------


def preview_only(ctap2: Ctap2) -> Ctap2:
    """``ctap2`` as a 2.1-PRE platform sees the key: no credMgmt option, so python-fido2 sends
    credentialMgmtPreview (0x41)."""
    options = {k: v for k, v in ctap2.info.options.items() if k != "credMgmt"}
    ctap2._info = dataclasses.replace(ctap2.info, options=options)
    return ctap2


def test_credential_management_preview() -> None:
    key = key_with_pin(Config(ctap21_pre=True))
    info = key.ctap2().get_info()
    assert info.versions == ["U2F_V2", "FIDO_2_0", "FIDO_2_1_PRE", "FIDO_2_1", "FIDO_2_3"]
    assert info.options["credentialMgmtPreview"] is True
    cred_id = resident(key)
    ctap2 = preview_only(key.ctap2())
    # A 2.1-PRE platform authorizes it with getPinToken's token (no permissions).
    legacy = ClientPin(ctap2, PinProtocolV1()).get_pin_token(PIN)
    cm = CredentialManagement(ctap2, PinProtocolV1(), legacy)
    assert cm.get_metadata()[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 1
    assert len(cm.enumerate_rps()) == 1
    creds = cm.enumerate_creds(sha256(RP_ID.encode()))
    assert creds[0][CredentialManagement.RESULT.CREDENTIAL_ID]["id"] == cred_id
    # updateUserInformation (0x07) is not part of the preview.
    with pytest.raises(CtapError, match="INVALID_SUBCOMMAND"):
        ctap2.send_cbor(0x41, {1: 0x07})
    cm.delete_cred(descriptor(cred_id))
    assert cm.get_metadata()[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 0


def test_a_2_1_pre_keys_get_pin_token_token_authorizes_the_preview_command_only() -> None:
    """CTAP 2.1 section 6.5.5.7.1 (getPinToken): the token gets "the mc and ga permissions";
    each subcommand of authenticatorCredentialManagement (6.8.2-6.8.6): "If the
    pinUvAuthToken does not have the cm permission, return CTAP2_ERR_PIN_AUTH_INVALID."
    A 2.1-PRE key also lets getPinToken's token authorize credentialMgmtPreview (0x41), as
    its platforms do; it granted cm on 0x0A too, so that token could delete and rename
    credentials through the 2.1 command (an outside review; the FIDO tools' P-31 case)."""
    key = key_with_pin(Config(ctap21_pre=True))
    cred_id = resident(key)
    ctap2 = key.ctap2()
    legacy = ClientPin(ctap2, PinProtocolV1()).get_pin_token(PIN)
    full = CredentialManagement(ctap2, PinProtocolV1(), legacy)  # 2.1: command 0x0A
    with pytest.raises(CtapError, match="PIN_AUTH_INVALID"):
        full.get_metadata()
    with pytest.raises(CtapError, match="PIN_AUTH_INVALID"):
        full.delete_cred(descriptor(cred_id))
    with pytest.raises(CtapError, match="PIN_AUTH_INVALID"):
        full.update_user_info(descriptor(cred_id), {"id": b"user-1", "name": "renamed"})
    preview = CredentialManagement(preview_only(key.ctap2()), PinProtocolV1(), legacy)
    assert preview.get_metadata()[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 1
    # A token asked for with cm serves both.
    token = ClientPin(key.ctap2()).get_pin_token(PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    assert CredentialManagement(key.ctap2(), PinProtocolV2(), token).get_metadata()


def test_any_request_but_the_enumerations_getnext_ends_it() -> None:
    """The module's rule, "any command other than the GetNext ones ends an enumeration", had
    three holes (an outside review): the other enumeration's GetNext, and a 0x0A request
    without a subCommand or with one of the wrong type, answered their error and left the
    enumeration going."""
    key = key_with_pin()
    for n in range(3):
        resident(key, rp_id=f"rp{n}.example")
    ctap2 = key.ctap2()
    token = ClientPin(ctap2).get_pin_token(PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    cm = CredentialManagement(ctap2, PinProtocolV2(), token)
    get_next_rp = {1: CredentialManagement.CMD.ENUMERATE_RPS_NEXT}
    for interloper, error in [
        ({1: CredentialManagement.CMD.ENUMERATE_CREDS_NEXT}, "NOT_ALLOWED"),
        ({2: {}}, "MISSING_PARAMETER"),
        ({1: "x"}, "CBOR_UNEXPECTED_TYPE"),
    ]:
        cm._call(CredentialManagement.CMD.ENUMERATE_RPS_BEGIN)
        assert ctap2.send_cbor(0x0A, get_next_rp)  # going
        with pytest.raises(CtapError, match=error):
            ctap2.send_cbor(0x0A, interloper)
        with pytest.raises(CtapError, match="NOT_ALLOWED"):
            ctap2.send_cbor(0x0A, get_next_rp)


def test_a_preview_tokens_enumeration_continues_on_the_preview_command_only() -> None:
    """An enumeration begun on 0x41 with getPinToken's token went on over 0x0A's GetNext,
    where that token has no cm (a diff review)."""
    key = key_with_pin(Config(ctap21_pre=True))
    for n in range(3):
        resident(key, rp_id=f"rp{n}.example")
    ctap2 = preview_only(key.ctap2())  # one channel: an enumeration is bound to it
    legacy = ClientPin(ctap2, PinProtocolV1()).get_pin_token(PIN)
    preview = CredentialManagement(ctap2, PinProtocolV1(), legacy)
    get_next_rp = {1: CredentialManagement.CMD.ENUMERATE_RPS_NEXT}
    preview._call(CredentialManagement.CMD.ENUMERATE_RPS_BEGIN)
    assert ctap2.send_cbor(0x41, get_next_rp)  # on the preview command: going
    with pytest.raises(CtapError, match="NOT_ALLOWED"):
        ctap2.send_cbor(0x0A, get_next_rp)
    with pytest.raises(CtapError, match="NOT_ALLOWED"):  # and it ended
        ctap2.send_cbor(0x41, get_next_rp)


def test_requests_refused_before_their_subcommand_runs_end_an_enumeration_too() -> None:
    """updateUserInformation on 0x41 (not part of the preview) and 0x41 on a key without
    2.1-PRE (an unknown command there) answered their error and left an enumeration going
    (a diff review)."""
    for config, interloper, error in [
        (Config(ctap21_pre=True), (0x41, {1: 0x07}), "INVALID_SUBCOMMAND"),
        (Config(), (0x41, {1: 0x04}), "INVALID_COMMAND"),
    ]:
        key = key_with_pin(config)
        for n in range(3):
            resident(key, rp_id=f"rp{n}.example")
        ctap2 = key.ctap2()
        token = ClientPin(ctap2).get_pin_token(PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
        CredentialManagement(ctap2, PinProtocolV2(), token)._call(
            CredentialManagement.CMD.ENUMERATE_RPS_BEGIN
        )
        get_next_rp = {1: CredentialManagement.CMD.ENUMERATE_RPS_NEXT}
        assert ctap2.send_cbor(0x0A, get_next_rp)
        with pytest.raises(CtapError, match=error):
            ctap2.send_cbor(*interloper)
        with pytest.raises(CtapError, match="NOT_ALLOWED"):
            ctap2.send_cbor(0x0A, get_next_rp)


@pytest.mark.parametrize("interloper", ["empty request", "oversized request", "refused U2F"])
def test_requests_refused_before_dispatch_end_a_pending_get_next_assertion(
    interloper: str,
) -> None:
    """Section 6.3: only consecutive getNextAssertion calls continue a getAssertion. An empty
    or oversized request, and a U2F message to a key without U2F, were answered with their
    error before the pending-state rule ran, and the next getNextAssertion still worked (a
    review)."""
    from vfido.authenticator.env import NullContext

    key = key_with_pin()
    for n in range(3):
        resident(key, user_id=f"user-{n}".encode())
    ctap2 = key.ctap2()
    first = ctap2.get_assertion(RP_ID, os.urandom(32))
    assert first.number_of_credentials == 3
    assert ctap2.get_next_assertion()  # going
    device = key.authenticator
    if interloper == "empty request":
        assert device.handle_cbor(b"", NullContext()) == bytes([0x03])  # INVALID_LENGTH
    elif interloper == "oversized request":
        assert device.handle_cbor(b"\x08" + bytes(8000), NullContext()) == bytes([0x39])
    else:
        device.behaviours.set("versions", "FIDO_2_0")
        assert device.handle_msg(bytes.fromhex("00030000"), NullContext()) == bytes.fromhex("6d00")
        device.behaviours.clear("versions")
    with pytest.raises(CtapError, match="NOT_ALLOWED"):
        ctap2.get_next_assertion()


def test_preview_is_off_by_default() -> None:
    key = key_with_pin()
    with pytest.raises(CtapError, match="INVALID_COMMAND"):
        key.ctap2().send_cbor(0x41, {1: 1})
    # ... and getPinToken's token grants no credential management.
    legacy = ClientPin(key.ctap2(), PinProtocolV1()).get_pin_token(PIN)
    with pytest.raises(CtapError, match="PIN_AUTH_INVALID"):
        CredentialManagement(key.ctap2(), PinProtocolV1(), legacy).get_metadata()


def test_virtual_key_and_cli_take_the_flag() -> None:
    from vfido.api import VirtualKey
    from vfido.cli import build_parser

    assert VirtualKey(ctap21_pre=True).config.ctap21_pre is True
    assert VirtualKey().config.ctap21_pre is False
    args = build_parser().parse_args(["run", "--ctap21-pre"])
    assert args.ctap21_pre is True
