"""Personas (#19): ``vfido run --persona NAME`` / ``VirtualKey(persona=NAME)`` answer like a
model class of key. For each persona python-fido2 sees exactly the profile's getInfo, a
registration and a sign-in work the way that model class works (both checked by
python-fido2's Fido2Server and py_webauthn, attestation trust path included), and each limit
the profile sets holds."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import cbor2
import pytest
from fido2.client import Fido2Client
from fido2.ctap import CtapError
from fido2.ctap1 import Ctap1
from fido2.ctap2 import CredentialManagement, Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV1, PinProtocolV2
from fido2.hid import CAPABILITY, CTAPHID
from fido2.webauthn import UserVerificationRequirement

from tests.ctap1_helpers import extended_apdu
from tests.ctap2_helpers import raw_set_pin
from tests.ctaphid_helpers import core_call, core_init, decode_messages
from tests.rp import RelyingParty, attestation_fmt, register, sign_in
from tests.service_helpers import udp_service, vfido
from vfido import personas
from vfido.api import VirtualKey
from vfido.personas import PersonaError, expected_info, load, parse
from vfido.transports.ctaphid import Capability, CtapHidCore, Request
from vfido.transports.ctaphid import Command as HidCommand

CTAP2_PERSONAS = ("ctap20", "ctap21pre", "ctap21")
ALL_PERSONAS = ("ctap20", "ctap21", "ctap21pre", "u2f")
CTAP21_COMMANDS = (0x09, 0x0A, 0x0B, 0x0C, 0x0D)
CLIENT_DATA_HASH = bytes(32)
RP = {"id": "example.com", "name": "Example"}


def raw(device: Any, command: int, params: dict[int, Any] | None = None) -> tuple[int, Any]:
    """(status, decoded response) of one CTAP2 command sent as CTAPHID_CBOR."""
    payload = bytes([command]) + (cbor2.dumps(params, canonical=True) if params else b"")
    answer = device.call(CTAPHID.CBOR, payload)
    return answer[0], cbor2.loads(answer[1:]) if len(answer) > 1 else None


def make_rk(ctap2: Ctap2, n: int, **kwargs: Any) -> Any:
    return ctap2.make_credential(
        CLIENT_DATA_HASH,
        RP,
        {"id": n.to_bytes(4, "big"), "name": f"user{n}"},
        [{"type": "public-key", "alg": -7}],
        options={"rk": True},
        **kwargs,
    )


def test_the_shipped_personas_load_and_are_listed() -> None:
    assert personas.names() == ALL_PERSONAS
    assert [name for name, _ in personas.summaries()] == list(ALL_PERSONAS)
    for name in ALL_PERSONAS:
        assert load(name).name == name


# --- getInfo: exactly the profile's --------------------------------------------------------


@pytest.mark.parametrize("name", CTAP2_PERSONAS)
def test_python_fido2_sees_exactly_the_profiles_getinfo(name: str) -> None:
    persona = load(name)
    profile = persona.get_info
    assert profile is not None
    with VirtualKey(persona=name) as key:
        status, answer = raw(key.device, 0x04)
        assert status == 0
        assert answer == expected_info(persona)  # every member, and no other
        info = Ctap2(key.device).get_info()
        assert info.versions == profile["versions"]
        assert info.extensions == profile.get("extensions", [])
        assert str(info.aaguid) == profile["aaguid"]
        assert dict(info.options) == profile["options"]
        assert info.max_msg_size == profile["maxMsgSize"]
        assert info.pin_uv_protocols == profile["pinUvAuthProtocols"]
        assert info.max_creds_in_list == profile.get("maxCredentialCountInList", 0)
        assert info.max_cred_id_length == profile.get("maxCredentialIdLength", 0)
        assert info.transports == profile.get("transports", [])
        assert [a["alg"] for a in info.algorithms or []] == profile.get("algorithms", [])
        assert info.remaining_disc_creds == profile.get("remainingDiscoverableCredentials")
        assert info.firmware_version == profile.get("firmwareVersion", 0)
        assert key.device.capabilities & CAPABILITY.CBOR
        assert not key.device.capabilities & CAPABILITY.NMSG  # every one speaks U2F too


def test_the_u2f_persona_has_no_cbor_capability_and_refuses_ctap2() -> None:
    with VirtualKey(persona="u2f") as key:
        assert not key.device.capabilities & CAPABILITY.CBOR
        assert not key.device.capabilities & CAPABILITY.NMSG
        with pytest.raises(CtapError) as refused:  # CTAPHID ERR_INVALID_CMD, as a U2F key
            key.device.call(CTAPHID.CBOR, b"\x04")
        assert refused.value.code == CtapError.ERR.INVALID_COMMAND
        with pytest.raises(ValueError):
            Ctap2(key.device)
        assert Ctap1(key.device).get_version() == "U2F_V2"


# --- a registration and a sign-in, the way the model class does them --------------------


@pytest.mark.parametrize("name", ALL_PERSONAS)
def test_registration_and_sign_in_verified_by_the_relying_party(name: str) -> None:
    persona = load(name)
    with VirtualKey(persona=name) as key:
        client = key.client()
        rp = RelyingParty(root_der=key.attestation_root)
        response = register(client, rp)
        assert sign_in(client, rp) == 1 and sign_in(client, rp) == 2
        credential = rp.credentials[0]
        if name == "u2f":
            # python-fido2 fell back to CTAP1: U2F attestation, the all-zero AAGUID, ES256.
            assert attestation_fmt(response) == "fido-u2f"
            assert bytes(credential.aaguid) == bytes(16)
            assert credential.public_key[3] == -7
        else:
            assert attestation_fmt(response) == "packed"
            assert bytes(credential.aaguid) == persona.aaguid
            max_id = persona.config.model.max_credential_id_length  # type: ignore[union-attr]
            assert len(credential.credential_id) <= (max_id or 1 << 16)


@pytest.mark.parametrize("name", CTAP2_PERSONAS)
def test_discoverable_credential_sign_in_without_allow_list(name: str) -> None:
    with VirtualKey(persona=name) as key:
        client = key.client()
        rp = RelyingParty(root_der=key.attestation_root)
        register(client, rp, rk=True)
        assert sign_in(client, rp, allow=False) == 1


# --- commands: a CTAP 2.0 key knows no CTAP 2.1 command -----------------------------------


def test_ctap20_answers_invalid_command_to_every_ctap21_command() -> None:
    with VirtualKey(persona="ctap20") as key:
        for command in (*CTAP21_COMMANDS, 0x40, 0x41):
            assert raw(key.device, command, {1: 1})[0] == CtapError.ERR.INVALID_COMMAND
        assert Ctap1(key.device).get_version() == "U2F_V2"


def test_ctap21pre_has_the_preview_credential_management_only() -> None:
    with VirtualKey(persona="ctap21pre", pin="12345678") as key:
        for command in CTAP21_COMMANDS:
            assert raw(key.device, command, {1: 1})[0] == CtapError.ERR.INVALID_COMMAND
        ctap2 = Ctap2(key.device)
        client_pin = ClientPin(ctap2)
        assert isinstance(client_pin.protocol, PinProtocolV1)
        token = client_pin.get_pin_token("12345678")  # getPINToken: no permissions in 2.1-PRE
        credman = CredentialManagement(ctap2, client_pin.protocol, token)
        assert credman.get_metadata()[CredentialManagement.RESULT.MAX_REMAINING_COUNT] == 25
        # A key without CTAP 2.2's thirdPartyPayment lists no 0x0C for its credentials.
        rp = RelyingParty()
        register(key.client(rp.origin), rp, rk=True)
        token = client_pin.get_pin_token("12345678")  # the client's own token replaced it
        credman = CredentialManagement(ctap2, client_pin.protocol, token)
        (listed,) = credman.enumerate_creds(hashlib.sha256(rp.rp_id.encode()).digest())
        assert CredentialManagement.RESULT.THIRD_PARTY_PAYMENT not in listed


def test_ctap21_has_the_ctap21_commands_and_not_the_preview() -> None:
    with VirtualKey(persona="ctap21") as key:
        assert raw(key.device, 0x41, {1: 1})[0] == CtapError.ERR.INVALID_COMMAND
        for command in CTAP21_COMMANDS[1:]:  # no bioEnrollment: no fingerprint sensor
            assert raw(key.device, command, {1: 1})[0] != CtapError.ERR.INVALID_COMMAND
        assert raw(key.device, 0x09, {1: 1})[0] == CtapError.ERR.INVALID_COMMAND


@pytest.mark.parametrize("name", ("ctap20", "ctap21pre"))
def test_pin_protocol_one_only_and_no_permission_tokens(name: str) -> None:
    with VirtualKey(persona=name) as key:
        ctap2 = Ctap2(key.device)
        assert isinstance(ClientPin(ctap2).protocol, PinProtocolV1)
        with pytest.raises(CtapError) as refused:  # not in pinUvAuthProtocols
            ClientPin(ctap2, PinProtocolV2()).get_pin_retries()
        assert refused.value.code == CtapError.ERR.INVALID_PARAMETER
        status, _ = raw(key.device, 0x06, {1: 1, 2: 0x09})  # getPinUvAuthTokenUsingPin...
        assert status == CtapError.ERR.INVALID_SUBCOMMAND


@pytest.mark.parametrize("name", ("ctap20", "ctap21pre"))
def test_a_pin_protocol_is_read_only_beside_a_pin_uv_auth_param(name: str) -> None:
    """makeCredential / getAssertion step 2 reads pinUvAuthProtocol only "If the
    pinUvAuthParam parameter is present", after step 1's zero-length probe. A protocol-1
    persona answered INVALID_PARAMETER to protocol 2 without a pinUvAuthParam, and to the
    probe (an outside review, session 21); a 2.1 key answers both as the spec says."""
    mc = {
        1: CLIENT_DATA_HASH,
        2: RP,
        3: {"id": b"u", "name": "u"},
        4: [{"type": "public-key", "alg": -7}],
    }
    with VirtualKey(persona=name) as key:
        assert raw(key.device, 0x01, {**mc, 9: 2})[0] == 0
        assert raw(key.device, 0x01, {**mc, 8: b"", 9: 2})[0] == CtapError.ERR.PIN_NOT_SET
        ga = {1: "example.com", 2: CLIENT_DATA_HASH, 7: 2}
        # past step 2, to the lookup (the credential made is not discoverable)
        assert raw(key.device, 0x02, ga)[0] == CtapError.ERR.NO_CREDENTIALS
        status, _ = raw(key.device, 0x01, {**mc, 8: bytes(16), 9: 2})  # present: checked
        assert status == CtapError.ERR.INVALID_PARAMETER
        status, _ = raw(key.device, 0x02, {**ga, 6: bytes(16)})
        assert status == CtapError.ERR.INVALID_PARAMETER


@pytest.mark.parametrize(
    ("persona", "behaviours", "refused"),
    [
        ("ctap20", {}, True),
        ("ctap21pre", {}, True),
        (None, {"versions": "FIDO_2_0"}, True),
        ("ctap21", {}, False),
        (None, {}, False),
    ],
    ids=["ctap20", "ctap21pre", "versions=FIDO_2_0", "ctap21", "ctap22"],
)
def test_a_key_without_make_cred_uv_not_rqd_wants_the_pin_for_every_credential(
    persona: str | None, behaviours: dict[str, str], refused: bool
) -> None:
    """CTAP 2.0 makeCredential step 6: "If pinAuth parameter is not present and clientPin
    been set on the authenticator, return CTAP2_ERR_PIN_REQUIRED error"; CTAP 2.1 step 8,
    where makeCredUvNotRqd "is present with the value false or is absent": the same code
    (PUAT_REQUIRED). A CTAP 2.0 and a 2.1-PRE key, whose getInfo has no makeCredUvNotRqd,
    made a server-side credential without the PIN (a persona review); a 2.1 or 2.2 key,
    which reports it true, does."""
    with VirtualKey(persona=persona, behaviours=behaviours) as key:
        ctap2 = Ctap2(key.device)
        ClientPin(ctap2).set_pin("1234")
        reported = ctap2.get_info().options.get("makeCredUvNotRqd")
        assert reported is (None if refused else True)
        args = (
            CLIENT_DATA_HASH,
            RP,
            {"id": b"u", "name": "u"},
            [{"type": "public-key", "alg": -7}],
        )
        if refused:
            with pytest.raises(CtapError) as info:
                ctap2.make_credential(*args)
            assert info.value.code == CtapError.ERR.PUAT_REQUIRED  # 0x36, 2.0's PIN_REQUIRED
        else:
            assert ctap2.make_credential(*args).auth_data.flags & 0x01  # UP, no UV needed


@pytest.mark.parametrize("persona", [*CTAP2_PERSONAS, None])
def test_an_attestation_formats_preference_is_a_ctap22_parameter(persona: str | None) -> None:
    """makeCredential's attestationFormatsPreference (0x0B) is CTAP 2.2's: a key whose getInfo
    reports no attestationFormats does not know it and ignores it, as a parameter it does not
    know. Every persona honoured it (a persona review); the CTAP 2.2 key still does."""
    with VirtualKey(persona=persona) as key:
        params = {
            1: CLIENT_DATA_HASH,
            2: RP,
            3: {"id": b"u", "name": "u"},
            4: [{"type": "public-key", "alg": -7}],
            0x0B: ["none"],
        }
        status, answer = raw(key.device, 0x01, params)
        assert status == 0, status
        assert answer[1] == ("none" if persona is None else "packed")


@pytest.mark.parametrize("persona", ["ctap21", None])
def test_pcmr_is_a_ctap22_permission(persona: str | None) -> None:
    """The pcmr permission (0x40) is CTAP 2.2's: to a 2.1 key it is an undefined bit, ignored
    (6.5.5.7.2), so a token asked for it alone can do nothing. The ctap21 persona, whose
    getInfo has no perCredMgmtRO, granted it and enumerated credentials with it (a persona
    review); the CTAP 2.2 key does."""
    with VirtualKey(persona=persona) as key:
        ctap2 = Ctap2(key.device)
        ClientPin(ctap2).set_pin("1234")
        pcmr = ClientPin.PERMISSION.PERSISTENT_CREDENTIAL_MGMT
        token = ClientPin(ctap2).get_pin_token("1234", pcmr)
        protocol = ClientPin(ctap2).protocol
        credman = CredentialManagement(ctap2, protocol, token)
        if persona is None:
            assert credman.get_metadata()[1] == 0  # no discoverable credentials yet
        else:
            with pytest.raises(CtapError) as refused:
                credman.get_metadata()
            assert refused.value.code in (
                CtapError.ERR.PIN_AUTH_INVALID,
                CtapError.ERR.UNAUTHORIZED_PERMISSION,
            )


def test_a_ctap21_key_ignores_the_pin_complexity_policy_parameter() -> None:
    """setMinPINLength's pinComplexityPolicy (0x04) is CTAP 2.2's: the ctap21 persona, whose
    getInfo has no pinComplexityPolicy member, turned the policy on and then refused PINs
    for a reason a 2.1 platform cannot tell its user (a persona review)."""
    from fido2.ctap2.config import Config as Ctap2Config

    with VirtualKey(persona="ctap21") as key:
        ctap2 = Ctap2(key.device)
        ClientPin(ctap2).set_pin("1234")
        token = ClientPin(ctap2).get_pin_token("1234", ClientPin.PERMISSION.AUTHENTICATOR_CFG)
        protocol = ClientPin(ctap2).protocol
        config = Ctap2Config(ctap2, protocol, token)  # python-fido2 would not send it: sent raw
        config._call(Ctap2Config.CMD.SET_MIN_PIN_LENGTH, {0x04: True})
        ClientPin(ctap2).change_pin("1234", "1111")  # trivial: the policy would refuse it
        assert ctap2.get_info().pin_complexity_policy is None


def test_a_ctap20_key_with_built_in_uv_and_no_pin_asks_for_nothing() -> None:
    """CTAP 2.0 refuses a makeCredential without pinAuth only when "clientPin been set on the
    authenticator" (step 6): built-in UV alone, without a PIN, refuses nothing, for a
    server-side or a discoverable credential (a diff review: the 2.1 rule, UV for any
    UV-protected key, had come along with the makeCredUvNotRqd one)."""
    with VirtualKey(uv=True, behaviours={"versions": "FIDO_2_0"}) as key:
        ctap2 = Ctap2(key.device)
        assert ctap2.get_info().options.get("uv") is True
        for rk in (False, True):
            made = ctap2.make_credential(
                CLIENT_DATA_HASH,
                RP,
                {"id": bytes([rk]), "name": "u"},
                [{"type": "public-key", "alg": -7}],
                options={"rk": rk},
            )
            assert made.auth_data.flags & 0x05 == 0x01  # UP, not UV


def test_what_a_full_key_stored_binds_no_ctap21_persona(tmp_path: Path) -> None:
    """A keystore the CTAP 2.2 key used, opened as the ctap21 persona: the pinComplexityPolicy
    the full key turned on is not enforced, and the persistent (pcmr) token it handed out
    authorizes nothing (a diff review: both still worked, read from the keystore)."""
    from fido2.ctap2.config import Config as Ctap2Config

    keystore = {"keystore": tmp_path / "ks", "passphrase": "a passphrase"}
    pcmr = ClientPin.PERMISSION.PERSISTENT_CREDENTIAL_MGMT
    with VirtualKey(create=True, **keystore) as key:  # type: ignore[arg-type]
        ctap2 = Ctap2(key.device)
        ClientPin(ctap2).set_pin("4719")
        cfg = ClientPin(ctap2).get_pin_token("4719", ClientPin.PERMISSION.AUTHENTICATOR_CFG)
        Ctap2Config(ctap2, ClientPin(ctap2).protocol, cfg).set_min_pin_length(
            pin_complexity_policy=True
        )
        persistent = ClientPin(ctap2).get_pin_token("4719", pcmr)
        protocol = ClientPin(ctap2).protocol
        assert CredentialManagement(ctap2, protocol, persistent).get_metadata()[1] == 0
    with VirtualKey(persona="ctap21", **keystore) as key:  # type: ignore[arg-type]
        ctap2 = Ctap2(key.device)
        with pytest.raises(CtapError) as refused:
            CredentialManagement(ctap2, ClientPin(ctap2).protocol, persistent).get_metadata()
        assert refused.value.code == CtapError.ERR.PIN_AUTH_INVALID
        ClientPin(ctap2).change_pin("4719", "1111")  # trivial: the 2.2 policy would refuse it


def test_a_ctap20_key_ignores_enterprise_attestation() -> None:
    """enterpriseAttestation (0x0A) is CTAP 2.1's: a CTAP 2.0 key does not know it and ignores
    it (a diff review: it answered INVALID_PARAMETER, as a 2.1 key without it does)."""
    for kwargs in ({"persona": "ctap20"}, {"behaviours": {"versions": "FIDO_2_0"}, "uv": False}):
        with VirtualKey(**kwargs) as key:  # type: ignore[arg-type]
            params = {
                1: CLIENT_DATA_HASH,
                2: RP,
                3: {"id": b"u", "name": "u"},
                4: [{"type": "public-key", "alg": -7}],
                0x0A: 1,
            }
            status, answer = raw(key.device, 0x01, params)
            assert status == 0, (kwargs, status)
            assert answer.get(4) is None  # epAtt: no enterprise attestation


# --- limits: one test per limit -----------------------------------------------------------


@pytest.mark.parametrize("name", CTAP2_PERSONAS)
def test_the_26th_discoverable_credential_gets_key_store_full(name: str) -> None:
    reported = "remainingDiscoverableCredentials" in (load(name).get_info or {})
    with VirtualKey(persona=name) as key:
        ctap2 = Ctap2(key.device)
        for n in range(25):
            make_rk(ctap2, n)
            if reported:
                assert ctap2.get_info().remaining_disc_creds == 24 - n
        with pytest.raises(CtapError) as full:
            make_rk(ctap2, 25)
        assert full.value.code == CtapError.ERR.KEY_STORE_FULL
        assert len(key.credentials()) == 25


@pytest.mark.parametrize("name", ("ctap21pre", "ctap21"))
def test_lists_longer_than_max_credential_count_in_list_are_refused(name: str) -> None:
    with VirtualKey(persona=name) as key:
        limit = Ctap2(key.device).get_info().max_creds_in_list
        assert limit == 8
        bogus = [{"type": "public-key", "id": os.urandom(48)} for _ in range(limit + 1)]
        get = {1: "example.com", 2: CLIENT_DATA_HASH}
        assert raw(key.device, 0x02, {**get, 3: bogus[:limit]})[0] == CtapError.ERR.NO_CREDENTIALS
        assert raw(key.device, 0x02, {**get, 3: bogus})[0] == CtapError.ERR.LIMIT_EXCEEDED
        make = {1: CLIENT_DATA_HASH, 2: RP, 3: {"id": b"u"}, 4: [{"type": "public-key", "alg": -7}]}
        assert raw(key.device, 0x01, {**make, 5: bogus})[0] == CtapError.ERR.LIMIT_EXCEEDED
        # A client that reads the limit splits a longer allowList: python-fido2 signs in.
        client = key.client()
        rp = RelyingParty(root_der=key.attestation_root)
        register(client, rp)
        options, state = rp.server.authenticate_begin(
            rp.credentials, user_verification=UserVerificationRequirement.DISCOURAGED
        )
        real = options.public_key.allow_credentials[0]
        others = [dataclasses.replace(real, id=os.urandom(64)) for _ in range(2 * limit)]
        request = dataclasses.replace(options.public_key, allow_credentials=[*others, real])
        result = client.get_assertion(request)
        rp.server.authenticate_complete(state, rp.credentials, result.get_response(0))


@pytest.mark.parametrize("name", ("ctap21pre", "ctap21"))
def test_listed_ids_longer_than_max_credential_id_length_are_refused(name: str) -> None:
    with VirtualKey(persona=name) as key:
        limit = Ctap2(key.device).get_info().max_cred_id_length
        get = {1: "example.com", 2: CLIENT_DATA_HASH}
        fits = [{"type": "public-key", "id": os.urandom(limit)}]
        assert raw(key.device, 0x02, {**get, 3: fits})[0] == CtapError.ERR.NO_CREDENTIALS
        longer = [{"type": "public-key", "id": os.urandom(limit + 1)}]
        assert raw(key.device, 0x02, {**get, 3: longer})[0] == CtapError.ERR.LIMIT_EXCEEDED
        make = {1: CLIENT_DATA_HASH, 2: RP, 3: {"id": b"u"}, 4: [{"type": "public-key", "alg": -7}]}
        assert raw(key.device, 0x01, {**make, 5: longer})[0] == CtapError.ERR.LIMIT_EXCEEDED


def test_a_key_that_does_not_report_the_list_limit_does_not_enforce_one() -> None:
    with VirtualKey(persona="ctap20") as key:
        bogus = [{"type": "public-key", "id": os.urandom(16)} for _ in range(20)]  # > 8
        status, _ = raw(key.device, 0x02, {1: "example.com", 2: CLIENT_DATA_HASH, 3: bogus})
        assert status == CtapError.ERR.NO_CREDENTIALS


@pytest.mark.parametrize("name", CTAP2_PERSONAS)
def test_requests_longer_than_max_msg_size_are_refused(name: str) -> None:
    with VirtualKey(persona=name) as key:
        limit = Ctap2(key.device).get_info().max_msg_size
        assert limit == load(name).config.max_msg_size < 7609
        at_limit = key.device.call(CTAPHID.CBOR, b"\x01" + bytes(limit - 1))
        assert at_limit[0] != CtapError.ERR.REQUEST_TOO_LARGE  # (not CBOR: refused otherwise)
        over = key.device.call(CTAPHID.CBOR, b"\x01" + bytes(limit))
        assert over[0] == CtapError.ERR.REQUEST_TOO_LARGE


@pytest.mark.parametrize("name", ("ctap21pre", "ctap21"))  # ctap20 does not report one
def test_credential_ids_fit_max_credential_id_length(name: str) -> None:
    persona = load(name)
    assert persona.config.model is not None
    limit = persona.config.model.max_credential_id_length
    assert limit == 128
    assert personas.longest_credential_id(persona.config) <= limit
    with VirtualKey(persona=name) as key:
        ctap2 = Ctap2(key.device)
        extensions = (
            {"credBlob": bytes(32)} if "credBlob" in persona.config.model.extensions else {}
        )  # type: ignore[union-attr]
        for alg in persona.config.algorithms:
            made = ctap2.make_credential(
                CLIENT_DATA_HASH,
                RP,
                {"id": b"u", "name": "u"},
                [{"type": "public-key", "alg": alg}],
                extensions=extensions,
                options={"rk": True},
            )
            assert len(made.auth_data.credential_data.credential_id) <= limit


@pytest.mark.parametrize("name", ("ctap20", "ctap21"))
def test_pin_length_rules(name: str) -> None:
    with VirtualKey(persona=name) as key:
        ctap2 = Ctap2(key.device)
        client_pin = ClientPin(ctap2)
        with pytest.raises(CtapError) as short:
            raw_set_pin(client_pin, b"123".ljust(64, b"\0"))  # minPINLength 4
        assert short.value.code == CtapError.ERR.PIN_POLICY_VIOLATION
        with pytest.raises(CtapError) as long:
            raw_set_pin(client_pin, b"1" * 64)  # at most 63 bytes (no terminating zero)
        assert long.value.code == CtapError.ERR.PIN_POLICY_VIOLATION
        assert ctap2.get_info().options["clientPin"] is False
        client_pin.set_pin("1234")
        assert ctap2.get_info().options["clientPin"] is True


@pytest.mark.parametrize("name", CTAP2_PERSONAS)
def test_algorithms_outside_the_profile_are_unsupported(name: str) -> None:
    with VirtualKey(persona=name) as key:
        with pytest.raises(CtapError) as refused:
            Ctap2(key.device).make_credential(
                CLIENT_DATA_HASH, RP, {"id": b"u"}, [{"type": "public-key", "alg": -257}]
            )
        assert refused.value.code == CtapError.ERR.UNSUPPORTED_ALGORITHM


@pytest.mark.parametrize(("name", "answered"), [("ctap20", False), ("ctap21", True)])
def test_extensions_outside_the_profile_are_ignored(name: str, answered: bool) -> None:
    with VirtualKey(persona=name) as key:
        made = Ctap2(key.device).make_credential(
            CLIENT_DATA_HASH,
            RP,
            {"id": b"u"},
            [{"type": "public-key", "alg": -7}],
            extensions={"credProtect": 2, "hmac-secret": True},
        )
        outputs = made.auth_data.extensions or {}
        assert ("credProtect" in outputs) is answered  # CTAP 2.0 key: ignored
        assert outputs["hmac-secret"] is True  # in every CTAP2 profile


# --- profiles are checked on load ---------------------------------------------------------


def profile(name: str) -> dict[str, Any]:
    import importlib.resources
    import tomllib

    text = importlib.resources.files("vfido.personas").joinpath(f"{name}.toml").read_text()
    return tomllib.loads(text)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["getInfo"].update(minPINLength=6), "minPINLength = 6, but a vfido key"),
        (lambda d: d["getInfo"].update(maxCredentialIdLength=64), "less than the 106 bytes"),
        (lambda d: d["getInfo"].update(fooBar=1), "unknown members fooBar"),
        (lambda d: d["getInfo"].update(certifications={}), "certifications: vfido cannot"),
        (lambda d: d["getInfo"]["extensions"].append("noSuch"), "does not implement: noSuch"),
        (lambda d: d.update(protocols=["ctap2"]), "U2F_V2 exactly when protocols lists u2f"),
        (lambda d: d.update(limits={"algorithms": [-7]}), "algorithms in both"),
        (lambda d: d.update(limits={"pinRules": 1}), "limits: unknown pinRules"),
        (lambda d: d["getInfo"].update(aaguid="nope"), "aaguid must be a UUID"),
        (lambda d: d.update(colour="red"), "unknown entries colour"),
        (lambda d: d["getInfo"].update(maxMsgSize=512), "max_msg_size must be an integer >= 1024"),
    ],
)
def test_a_bad_profile_is_one_clear_line(change: Any, message: str) -> None:
    data = profile("ctap21")
    change(data)
    with pytest.raises(PersonaError) as bad:
        parse("ctap21", data)
    assert str(bad.value).startswith("persona ctap21: ") and message in str(bad.value)
    assert "\n" not in str(bad.value)


def test_an_unknown_persona_lists_the_known_ones() -> None:
    for name in ("nope", "../ctap21", "CTAP21", ""):
        with pytest.raises(PersonaError, match=r"known: ctap20, ctap21, ctap21pre, u2f$"):
            load(name)
    with pytest.raises(PersonaError):
        VirtualKey(persona="nope")


# --- the command line ---------------------------------------------------------------------


def test_vfido_personas_lists_and_shows() -> None:
    listed = vfido(["personas"], passphrase=None)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == list(ALL_PERSONAS)
    shown = vfido(["personas", "ctap21"], passphrase=None)
    assert shown.returncode == 0 and '"remainingDiscoverableCredentials": 25' in shown.stdout
    bad = vfido(["personas", "nope"], passphrase=None)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr == (
        "vfido: error: unknown persona 'nope'; known: ctap20, ctap21, ctap21pre, u2f\n"
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--persona", "nope"], "unknown persona 'nope'; known: ctap20, ctap21, ctap21pre, u2f"),
        (["--persona", "ctap20", "--mldsa"], "--persona ctap20 fixes what the key is"),
        (["--persona", "u2f", "--max-resident-credentials", "5"], "leave out --max-resident"),
    ],
)
def test_vfido_run_refuses_a_bad_persona_in_one_line(args: list[str], error: str) -> None:
    result = vfido(["run", "--ephemeral", "--transport", "udp", *args], passphrase=None)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and error in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("setting", ["uv", "mldsa", "fingerprint", "ctap21_pre"])
def test_virtual_key_refuses_what_a_persona_fixes_as_vfido_run_does(setting: str) -> None:
    """docs/toolkit.md: "Flags that change what the key is (--uv, --mldsa, --ctap21-pre,
    --fingerprint, ...) are refused with a persona". VirtualKey(persona=..., uv=True) used to
    build a ctap21 key with built-in UV its getInfo did not report (a session 15 review:
    discoverable registrations then failed with OPERATION_DENIED)."""
    with pytest.raises(
        ValueError, match=f"persona 'ctap21' fixes what the key is: leave out {setting}="
    ):
        VirtualKey(persona="ctap21", **{setting: True})
    VirtualKey(persona="ctap21", pin="1234")  # what does not change the model is fine
    VirtualKey(persona="ctap21", **{setting: False})  # nor what the persona is already


@pytest.mark.parametrize("name", ("u2f", "ctap21"))
def test_vfido_run_persona_serves_the_model(name: str) -> None:
    args = ["--ephemeral", "--persona", name]
    with udp_service(args, passphrase=None) as service, service.client() as client:
        rp = RelyingParty()  # no trust anchor at hand: attestation checked for form only
        response = register(client, rp)
        assert sign_in(client, rp) == 1
        if name == "u2f":
            assert attestation_fmt(response) == "fido-u2f"
        else:
            assert client.info.versions == ["U2F_V2", "FIDO_2_0", "FIDO_2_1"]
            assert client.info.remaining_disc_creds == 25


def test_fido2_client_on_the_u2f_persona_uses_ctap1() -> None:
    with VirtualKey(persona="u2f") as key:
        client: Fido2Client = key.client()
        assert "U2F_V2" in client.info.versions and "FIDO_2_0" not in client.info.versions


@pytest.mark.parametrize(
    ("flags", "keepalives"),
    [(Capability.WINK, False), (Capability.WINK | Capability.CBOR, True)],
)
def test_a_u2f_only_key_sends_no_keepalive(flags: int, keepalives: bool) -> None:
    """U2FHID has no CTAPHID_KEEPALIVE. In the guest, a U2F REGISTER of the u2f persona that
    took longer than the 80 ms keepalive interval sent one, Chromium took it as a device error
    ("Unknown CTAPHID command: 59 01") and create() never finished. A channel INITed without
    the CBOR capability gets none; one with CBOR keeps them."""
    core = CtapHidCore(capabilities=flags)
    channel = core_init(core)
    (request,) = core_call(core, channel, HidCommand.MSG, extended_apdu(0x01, 0x03, bytes(64)))
    assert isinstance(request, Request)
    assert bool(core.keepalive(request.transaction, 1)) is keepalives
    (response,) = decode_messages(core.respond(request.transaction, b"\x90\x00"))
    assert response.command == HidCommand.MSG


def test_a_seeded_key_keeps_the_personas_aaguid() -> None:
    """Regression: ``VirtualKey(seed=..., persona=...)`` built its seeded keystore without the
    persona's AAGUID (the identity came from the seed alone)."""
    persona = load("ctap21")
    assert persona.aaguid is not None
    with VirtualKey(persona="ctap21", seed="golden") as key:
        assert key.store.identity().aaguid == persona.aaguid
