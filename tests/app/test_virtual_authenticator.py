"""The W3C WebDriver virtual-authenticator model on a real key (vfido.virtual_authenticator):
through VirtualKey, the control API (KeyController) and `vfido ctl webauthn`. python-fido2
drives the key over CTAPHID; fido2.server and py_webauthn verify with the public key of the
test's own key pair, never with what the key says about itself."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest
import webauthn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from fido2 import cose
from fido2.client import ClientError
from fido2.ctap2.base import Ctap2
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestedCredentialData,
    AuthenticatorData,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from tests.rp import ORIGIN, RP_ID, challenge_of
from tests.service_helpers import PASSPHRASE, env, vfido
from vfido.api import VirtualKey
from vfido.control import ControlError
from vfido.virtual_authenticator import AuthenticatorOptions, WebAuthnError

CTAP2_OPTIONS: dict[str, Any] = {
    "protocol": "ctap2",
    "transport": "usb",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserConsenting": True,
    "isUserVerified": True,
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pkcs8(key: Any) -> bytes:
    der: bytes = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return der


def stored(credential_id: bytes, public_key: cose.CoseKey) -> AttestedCredentialData:
    return AttestedCredentialData.create(bytes(16), credential_id, public_key)


def sign_in(
    key: VirtualKey, credentials: list[AttestedCredentialData] | None, uv: str = "discouraged"
) -> tuple[Fido2Server, Any, Any, bytes]:
    server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))
    options, state = server.authenticate_begin(
        credentials, user_verification=UserVerificationRequirement(uv)
    )
    response = key.client(ORIGIN).get_assertion(options.public_key).get_response(0)
    return server, state, response, challenge_of(options)


def auth_data(response: Any) -> AuthenticatorData:
    data: AuthenticatorData = response.response.authenticator_data
    return data


# --- Add Credential / Get Credentials ------------------------------------------------------


def test_non_resident_credential_with_its_own_id_signs_what_its_public_key_verifies() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = cose.ES256.from_cryptography_key(private.public_key())
    cred_id = bytes([1, 2, 3, 4])  # as Selenium's own tests choose it
    with VirtualKey.from_webauthn_options(CTAP2_OPTIONS) as key:
        added = key.webauthn_add_credential(
            {
                "credentialId": base64.urlsafe_b64encode(cred_id).decode(),  # padded, as Selenium
                "isResidentCredential": False,
                "rpId": RP_ID,
                "privateKey": base64.urlsafe_b64encode(pkcs8(private)).decode(),
                "signCount": 7,
            }
        )
        assert added["credentialId"] == b64(cred_id)
        assert added["isResidentCredential"] is False and "userHandle" not in added
        server, state, response, challenge = sign_in(key, [stored(cred_id, public)])
        server.authenticate_complete(state, [stored(cred_id, public)], response)
        assert response.raw_id == cred_id  # the browser sees the test's ID
        assert auth_data(response).counter == 8
        webauthn.verify_authentication_response(
            credential=json.dumps(dict(response)),
            expected_challenge=challenge,
            expected_rp_id=RP_ID,
            expected_origin=ORIGIN,
            credential_public_key=cbor2.dumps(dict(public)),
            credential_current_sign_count=7,
        )
        # A server-side credential is not discoverable: a usernameless sign-in finds none.
        with pytest.raises(ClientError):
            sign_in(key, None)
        (listed,) = key.webauthn_get_credentials()
        assert listed["signCount"] == 8 and listed["rpId"] == RP_ID
        # The private key comes back as PKCS#8 and is the same key.
        back = serialization.load_der_private_key(unb64(listed["privateKey"]), None)
        assert isinstance(back, ec.EllipticCurvePrivateKey)
        assert back.private_numbers() == private.private_numbers()


def test_a_non_resident_credential_keeps_the_user_handle_it_was_given() -> None:
    """W3C WebAuthn L3 11.7, Add Credential: the credential source's userHandle is the
    parameters' userHandle, whether resident or not; Get Credentials gives it back and an
    assertion carries it (authenticatorGetAssertion: "selectedCredential.userHandle"). A
    session 20 review found it dropped for a non-resident credential."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = cose.ES256.from_cryptography_key(private.public_key())
    cred_id = b"\x05" * 8
    with VirtualKey.from_webauthn_options(CTAP2_OPTIONS) as key:
        added = key.webauthn_add_credential(
            {
                "credentialId": b64(cred_id),
                "isResidentCredential": False,
                "rpId": RP_ID,
                "privateKey": b64(pkcs8(private)),
                "userHandle": b64(b"alice"),
            }
        )
        assert added["userHandle"] == b64(b"alice")
        (listed,) = key.webauthn_get_credentials()
        assert listed["userHandle"] == b64(b"alice") and listed["isResidentCredential"] is False
        server, state, response, _ = sign_in(key, [stored(cred_id, public)])
        server.authenticate_complete(state, [stored(cred_id, public)], response)
        assert response.response.user_handle == b"alice"
        with pytest.raises(WebAuthnError, match="64 bytes"):
            key.webauthn_add_credential(
                {
                    "credentialId": b64(b"\x06" * 8),
                    "isResidentCredential": False,
                    "rpId": RP_ID,
                    "privateKey": b64(pkcs8(private)),
                    "userHandle": b64(bytes(65)),
                }
            )


def test_a_registered_server_side_credential_has_no_user_handle() -> None:
    """A non-discoverable credential made by a registration stores no user (CTAP 2.1 6.1.2:
    only a discoverable credential keeps user information), so Get Credentials lists it
    without a userHandle and its assertions carry none; only Add Credential gives a
    server-side credential one (docs/toolkit.md)."""
    with VirtualKey.from_webauthn_options(CTAP2_OPTIONS) as key:
        ctap2 = Ctap2(key.device)
        made = ctap2.make_credential(
            bytes(32),
            {"id": RP_ID, "name": "Example"},
            {"id": b"alice", "name": "alice"},
            [{"type": "public-key", "alg": -7}],
        )
        assert made.auth_data.credential_data is not None
        cred_id = made.auth_data.credential_data.credential_id
        (listed,) = key.webauthn_get_credentials()
        assert listed["isResidentCredential"] is False and "userHandle" not in listed
        answer = ctap2.get_assertion(RP_ID, bytes(32), [{"type": "public-key", "id": cred_id}])
        assert answer.user is None


def test_a_kept_user_handle_is_read_back_only_when_well_formed() -> None:
    """The kept record's user handle (field 6, keystore state a backup bundle carries too) is
    1-64 bytes or absent; anything else makes the record unreadable rather than an
    assertion with a malformed user (a session 20 diff review)."""
    from vfido.authenticator.credential_source import ImportedCredentialId

    record = ImportedCredentialId(b"sealed", credential_id=b"id", rp_id=RP_ID)
    assert ImportedCredentialId.from_bytes(record.to_bytes()) == record  # older: no field 6
    kept = dataclasses.replace(record, user_handle=b"alice")
    assert ImportedCredentialId.from_bytes(kept.to_bytes()) == kept
    fields = cbor2.loads(record.to_bytes())
    for bad in (b"", bytes(65), 1, "alice", True):
        assert ImportedCredentialId.from_bytes(cbor2.dumps({**fields, 6: bad})) is None, bad


def test_resident_credential_answers_a_usernameless_sign_in_with_its_user_handle() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    public = cose.EdDSA.from_cryptography_key(private.public_key())
    cred_id = b"\x99" * 16
    with VirtualKey.from_webauthn_options(CTAP2_OPTIONS) as key:
        key.webauthn_add_credential(
            {
                "credentialId": b64(cred_id),
                "isResidentCredential": True,
                "rpId": RP_ID,
                "privateKey": b64(pkcs8(private)),
                "userHandle": b64(b"alice"),
                "signCount": 0,
            }
        )
        server, state, response, _ = sign_in(key, None)
        assert response.raw_id == cred_id
        assert response.response.user_handle == b"alice"
        server.authenticate_complete(state, [stored(cred_id, public)], response)
        (listed,) = key.webauthn_get_credentials()
        assert listed == {
            "credentialId": b64(cred_id),
            "isResidentCredential": True,
            "rpId": RP_ID,
            "privateKey": b64(pkcs8(private)),
            "userHandle": b64(b"alice"),
            "signCount": 1,
            "backupEligibility": False,
            "backupState": False,
        }
        # The same credential through the key's own listing.
        assert [c.credential_id for c in key.credentials()] == [cred_id]


def test_credentials_the_browser_makes_are_listed_when_discoverable() -> None:
    with VirtualKey.from_webauthn_options(CTAP2_OPTIONS) as key:
        server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))
        options, state = server.register_begin(
            PublicKeyCredentialUserEntity(id=b"bob", name="bob"),
            resident_key_requirement=ResidentKeyRequirement.REQUIRED,
        )
        made = key.client(ORIGIN).make_credential(options.public_key)
        data = server.register_complete(state, made)
        (listed,) = key.webauthn_get_credentials()
        assert unb64(listed["credentialId"]) == data.credential_data.credential_id
        assert listed["isResidentCredential"] is True and unb64(listed["userHandle"]) == b"bob"
        # The listed private key is the credential's: its public key is what the RP stored.
        private = serialization.load_der_private_key(unb64(listed["privateKey"]), None)
        assert dict(
            cose.CoseKey.for_alg(data.credential_data.public_key[3]).from_cryptography_key(
                private.public_key()  # type: ignore[union-attr]
            )
        ) == dict(data.credential_data.public_key)


def test_bad_credential_parameters_are_invalid_arguments() -> None:
    private = b64(pkcs8(ec.generate_private_key(ec.SECP256R1())))
    good = {"credentialId": "AQID", "isResidentCredential": False, "rpId": RP_ID}
    options = {**CTAP2_OPTIONS, "hasResidentKey": False}
    with VirtualKey.from_webauthn_options(options) as key:
        for params in (
            {**good, "privateKey": "not base64!"},
            {**good, "privateKey": b64(b"not a key")},
            {**good, "privateKey": private, "credentialId": ""},
            {**good, "privateKey": private, "isResidentCredential": "yes"},
            {**good, "privateKey": private, "signCount": -1},
            # "If rpId is not a valid RP ID, return invalid argument" (W3C WebAuthn L3 11.8):
            # a URL or a host:port never equals a request's RP ID (a session 16 review).
            {**good, "privateKey": private, "rpId": "https://example.com"},
            {**good, "privateKey": private, "rpId": "example.com:443"},
            {**good, "privateKey": private, "rpId": "bad example"},
            # hasResidentKey false: no resident credentials (section 11.7).
            {**good, "privateKey": private, "isResidentCredential": True, "userHandle": "YQ"},
        ):
            with pytest.raises(WebAuthnError) as info:
                key.webauthn_add_credential(params)
            assert info.value.code == "invalid argument"
        assert key.webauthn_get_credentials() == []
        with pytest.raises(WebAuthnError, match="no credential"):
            key.webauthn_remove_credential(b"nope")


def test_null_sign_count_and_an_unsupported_large_blob_are_taken_as_the_spec_says() -> None:
    """W3C WebAuthn L3 11.8 (Add Credential): a counter starting "equal to the parameters'
    signCount or 0 if signCount is null"; a largeBlob on an authenticator without the
    extension: "Otherwise: Let largeBlob be null" (both were invalid argument: a session 16
    review)."""
    params = {
        "credentialId": b64(b"resident"),
        "isResidentCredential": True,
        "rpId": RP_ID,
        "privateKey": b64(pkcs8(ec.generate_private_key(ec.SECP256R1()))),
        "userHandle": b64(b"alice"),
        "largeBlob": b64(b"a blob nobody can store"),
    }
    with VirtualKey.from_webauthn_options({**CTAP2_OPTIONS, "protocol": "ctap2_1"}) as key:
        key.webauthn_add_credential({**params, "signCount": None})
        (listed,) = key.webauthn_get_credentials()
        assert listed["signCount"] == 0 and "largeBlob" not in listed
    # vfido's own callers (a key not made from WebDriver options, `vfido ctl webauthn`) are
    # told instead of losing the blob silently (a second diff review).
    with VirtualKey(persona="ctap21pre") as key, pytest.raises(WebAuthnError) as info:
        key.webauthn_add_credential(params)
    assert info.value.code == "invalid argument" and "largeBlob" in str(info.value)


# --- Remove Credential / Remove All Credentials ----------------------------------------------


def test_removed_credentials_no_longer_sign() -> None:
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    with VirtualKey.from_webauthn_options(CTAP2_OPTIONS) as key:
        for n, private in enumerate(keys):
            key.webauthn_add_credential(
                {
                    "credentialId": b64(bytes([n + 1]) * 8),
                    "isResidentCredential": n == 0,
                    "rpId": RP_ID,
                    "privateKey": b64(pkcs8(private)),
                    "userHandle": b64(b"u%d" % n),
                }
            )
        assert len(key.webauthn_get_credentials()) == 3
        first = stored(b"\x01" * 8, cose.ES256.from_cryptography_key(keys[0].public_key()))
        second = stored(b"\x02" * 8, cose.ES256.from_cryptography_key(keys[1].public_key()))
        key.webauthn_remove_credential(b64(b"\x02" * 8))
        with pytest.raises(ClientError):
            sign_in(key, [second])
        server, state, response, _ = sign_in(key, [first])
        server.authenticate_complete(state, [first], response)
        key.webauthn_remove_all_credentials()
        assert key.webauthn_get_credentials() == []
        with pytest.raises(ClientError):
            sign_in(key, [first])


def test_a_key_that_keeps_no_record_says_so_when_asked_to_remove_a_server_side_credential() -> None:
    """A key not made from WebDriver options keeps its server-side credentials only in their
    IDs: Remove Credential cannot find one, and says why in its error (a session 20 review:
    "no credential with that credentialId" for a credential the key still signed with)."""
    server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))
    with VirtualKey() as key:
        options, state = server.register_begin(
            PublicKeyCredentialUserEntity(id=b"alice", name="alice", display_name="Alice")
        )
        made = key.client(ORIGIN).make_credential(options.public_key)
        credential = server.register_complete(state, made).credential_data
        assert credential is not None
        assert key.webauthn_get_credentials() == []
        with pytest.raises(WebAuthnError, match="keeps no record of the server-side") as info:
            key.webauthn_remove_credential(bytes(credential.credential_id))
        assert info.value.code == "invalid argument"
        key.webauthn_remove_all_credentials()
        server_, state, response, _ = sign_in(key, [credential])  # still signs, as documented
        server_.authenticate_complete(state, [credential], response)


# --- options, Set User Verified, backup flags -------------------------------------------------


def test_options_validation_follows_the_spec() -> None:
    with pytest.raises(WebAuthnError, match="protocol"):
        AuthenticatorOptions.from_json({"transport": "usb"})
    with pytest.raises(WebAuthnError, match="transport"):
        AuthenticatorOptions.from_json({"protocol": "ctap2", "transport": "carrier-pigeon"})
    with pytest.raises(WebAuthnError) as info:
        AuthenticatorOptions.from_json({**CTAP2_OPTIONS, "extensions": ["teleport"]})
    assert info.value.code == "unsupported operation"
    # "If there is no matching key for |key| in |parameters|": a misspelt option is an invalid
    # argument, not the default (a session 20 review: "hasResidentKeys" made a key without).
    with pytest.raises(WebAuthnError, match="unknown option 'hasResidentKeys'") as info:
        AuthenticatorOptions.from_json({**CTAP2_OPTIONS, "hasResidentKeys": True})
    assert info.value.code == "invalid argument"
    # uvm (L2 11.2) is a list of UVM entries, of no effect on a key without the extension.
    with pytest.raises(WebAuthnError, match="uvm") as info:
        AuthenticatorOptions.from_json({**CTAP2_OPTIONS, "uvm": True})
    assert info.value.code == "invalid argument"
    for entries in ([], [[2, 1, 1]]):
        AuthenticatorOptions.from_json({**CTAP2_OPTIONS, "uvm": entries})
    options = AuthenticatorOptions.from_json(
        {"protocol": "ctap2_1", "transport": "internal", "extensions": ["prf", "largeBlob"]}
    )
    # The spec's defaults (section 11.2).
    assert options.to_json() == {
        "protocol": "ctap2_1",
        "transport": "internal",
        "hasResidentKey": False,
        "hasUserVerification": False,
        "isUserConsenting": True,
        "isUserVerified": False,
        "extensions": ["prf", "largeBlob"],
        "defaultBackupEligibility": False,
        "defaultBackupState": False,
    }


@pytest.mark.parametrize(
    ("protocol", "versions"),
    [("ctap2_1", {"FIDO_2_1", "FIDO_2_0", "U2F_V2"}), ("ctap2", {"FIDO_2_0"})],
)
def test_protocol_is_what_get_info_reports(protocol: str, versions: set[str]) -> None:
    with VirtualKey.from_webauthn_options({**CTAP2_OPTIONS, "protocol": protocol}) as key:
        assert set(Ctap2(key.device).get_info().versions) >= versions
        if protocol == "ctap2":
            assert "FIDO_2_1" not in Ctap2(key.device).get_info().versions
        assert key.webauthn_options_json()["protocol"] == protocol


def test_u2f_protocol_is_a_u2f_only_key() -> None:
    with VirtualKey.from_webauthn_options({**CTAP2_OPTIONS, "protocol": "ctap1/u2f"}) as key:
        assert not key.device.capabilities & 0x04  # no CBOR: python-fido2 talks U2F


def test_set_user_verified_makes_user_verification_fail_and_succeed() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = cose.ES256.from_cryptography_key(private.public_key())
    with VirtualKey.from_webauthn_options(CTAP2_OPTIONS) as key:
        key.webauthn_add_credential(
            {
                "credentialId": "AQIDBA",
                "isResidentCredential": False,
                "rpId": RP_ID,
                "privateKey": b64(pkcs8(private)),
            }
        )
        cred = [stored(bytes([1, 2, 3, 4]), public)]
        server, state, response, _ = sign_in(key, cred, uv="required")
        assert auth_data(response).is_user_verified()
        key.webauthn_set_user_verified(False)
        assert key.webauthn_options_json()["isUserVerified"] is False
        with pytest.raises(ClientError):
            sign_in(key, cred, uv="required")
        key.webauthn_set_user_verified(True)
        server, state, response, _ = sign_in(key, cred, uv="required")
        server.authenticate_complete(state, cred, response)


def test_is_user_consenting_false_refuses_presence() -> None:
    options = {**CTAP2_OPTIONS, "isUserConsenting": False}
    with VirtualKey.from_webauthn_options(options, presence_timeout=1) as key:
        server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))
        begin, _ = server.register_begin(PublicKeyCredentialUserEntity(id=b"u", name="u"))
        with pytest.raises(ClientError):
            key.client(ORIGIN).make_credential(begin.public_key)


def test_backup_flags_per_credential_and_by_default() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = cose.ES256.from_cryptography_key(private.public_key())
    options = {**CTAP2_OPTIONS, "defaultBackupEligibility": True, "defaultBackupState": True}
    with VirtualKey.from_webauthn_options(options) as key:
        # A credential the browser makes gets the defaults.
        server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))
        begin, state = server.register_begin(PublicKeyCredentialUserEntity(id=b"u", name="u"))
        made = key.client(ORIGIN).make_credential(begin.public_key)
        flags = made.response.attestation_object.auth_data
        assert flags.is_backup_eligible() and flags.is_backed_up()
        # A discoverable one too: "This value MUST be reflected by the BS authenticator data
        # flag when performing an authenticatorMakeCredential operation" (BS was 0 for
        # discoverable credentials: a session 16 review).
        begin, state = server.register_begin(
            PublicKeyCredentialUserEntity(id=b"passkey", name="p"),
            resident_key_requirement=ResidentKeyRequirement.REQUIRED,
        )
        made = key.client(ORIGIN).make_credential(begin.public_key)
        flags = made.response.attestation_object.auth_data
        assert flags.is_backup_eligible() and flags.is_backed_up()
        listed = key.webauthn_get_credentials()  # this one and the server-side one above
        assert len(listed) == 2 and {c["isResidentCredential"] for c in listed} == {True, False}
        assert all(c["backupEligibility"] and c["backupState"] for c in listed), listed
        key.webauthn_remove_all_credentials()
        for resident, cred_id in ((False, b"server-side"), (True, b"resident")):
            key.webauthn_add_credential(
                {
                    "credentialId": b64(cred_id),
                    "isResidentCredential": resident,
                    "rpId": RP_ID,
                    "privateKey": b64(pkcs8(private)),
                    "userHandle": b64(b"user"),
                    "backupEligibility": True,
                    "backupState": False,
                }
            )
            cred = [stored(cred_id, public)]
            _, _, response, _ = sign_in(key, cred)
            assert auth_data(response).is_backup_eligible()
            assert not auth_data(response).is_backed_up()
            key.webauthn_set_credential_properties(cred_id, backup_state=True)
            _, _, response, _ = sign_in(key, cred)
            assert auth_data(response).is_backed_up()
            key.webauthn_set_credential_properties(
                cred_id, backup_eligibility=False, backup_state=False
            )
            server, state, response, _ = sign_in(key, cred)
            assert not auth_data(response).is_backup_eligible()
            server.authenticate_complete(state, cred, response)
        listed = {c["credentialId"]: c for c in key.webauthn_get_credentials()}
        assert listed[b64(b"resident")]["backupEligibility"] is False


def _made_flags(key: VirtualKey, resident: bool) -> tuple[bool, bool]:
    """(BE, BS) of a credential the client makes now (discoverable or server-side)."""
    server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))
    begin, _ = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"rk" if resident else b"ss", name="u"),
        resident_key_requirement=(
            ResidentKeyRequirement.REQUIRED if resident else ResidentKeyRequirement.DISCOURAGED
        ),
    )
    data = key.client(ORIGIN).make_credential(begin.public_key).response.attestation_object
    return data.auth_data.is_backup_eligible(), data.auth_data.is_backed_up()


def test_default_backup_state_is_the_keys_not_the_keystores(tmp_path: Path) -> None:
    """defaultBackupState holds for as long as the key runs (an authenticatorReset included)
    and for credentials added over the control API, and never reaches the keystore: a plain
    key on the same keystore later says BS=0 (a second diff review of session 16: it was
    keystore state, lost by a reset and kept after the session)."""
    directory = tmp_path / "ks"
    result = vfido(["init", "--backup-eligible", "--keystore", str(directory)])
    assert result.returncode == 0, result.stderr
    options = {**CTAP2_OPTIONS, "defaultBackupEligibility": True, "defaultBackupState": True}
    opened = {"keystore": directory, "passphrase": PASSPHRASE}
    sock = tmp_path / "ctl" / "key.sock"
    with VirtualKey.from_webauthn_options(options, control_socket=sock, **opened) as key:
        assert _made_flags(key, True) == _made_flags(key, False) == (True, True)
        Ctap2(key.device).reset()  # within the reset window of a key just plugged in
        assert _made_flags(key, True) == _made_flags(key, False) == (True, True)
        with key.controller() as ctl:
            ctl.add_credential(RP_ID, user_id=b"added")
        listed = key.webauthn_get_credentials()
        added = [c for c in listed if c.get("userHandle") == b64(b"added")]
        assert [(c["backupEligibility"], c["backupState"]) for c in added] == [(True, True)]
    with VirtualKey(**opened) as plain:  # never exported: nothing is backed up
        assert _made_flags(plain, True) == _made_flags(plain, False) == (True, False)


def test_default_backup_state_false_overrides_an_exported_keystore() -> None:
    """defaultBackupState false on a keystore already exported (or marked so by earlier
    versions of this API, which wrote the export flag): the key's credentials say BS=0, as
    the options say (a third diff review: the export flag won for server-side ones)."""
    from vfido.authenticator.authdata import BACKUP_DONE_STATE
    from vfido.backup import backup_eligible_identity
    from vfido.keystore.sqlite_store import SqliteKeyStore

    store = SqliteKeyStore.ephemeral(identity=backup_eligible_identity())
    store.put_state({BACKUP_DONE_STATE: b"\x01"})
    options = {**CTAP2_OPTIONS, "defaultBackupEligibility": True, "defaultBackupState": False}
    with VirtualKey.from_webauthn_options(options, store=store) as key:
        assert key.webauthn_options_json()["defaultBackupState"] is False
        assert _made_flags(key, True) == _made_flags(key, False) == (True, False)
        assert {c["backupState"] for c in key.webauthn_get_credentials()} == {False}


def test_default_backup_eligibility_off_by_default() -> None:
    with VirtualKey.from_webauthn_options(CTAP2_OPTIONS) as key:
        server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))
        begin, _ = server.register_begin(PublicKeyCredentialUserEntity(id=b"u", name="u"))
        made = key.client(ORIGIN).make_credential(begin.public_key)
        assert not made.response.attestation_object.auth_data.is_backup_eligible()


def test_large_blob_is_what_the_platform_reads() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    options = {**CTAP2_OPTIONS, "protocol": "ctap2_1", "extensions": ["largeBlob"]}
    with VirtualKey.from_webauthn_options(options) as key:
        key.webauthn_add_credential(
            {
                "credentialId": b64(b"blobby"),
                "isResidentCredential": True,
                "rpId": RP_ID,
                "privateKey": b64(pkcs8(private)),
                "userHandle": b64(b"user"),
                "largeBlob": b64(b"hello large blob"),
            }
        )
        (listed,) = key.webauthn_get_credentials()
        assert unb64(listed["largeBlob"]) == b"hello large blob"
        # python-fido2 reads the blob through authenticatorLargeBlobs, as a browser does.
        server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))
        request, _ = server.authenticate_begin(
            [stored(b"blobby", cose.ES256.from_cryptography_key(private.public_key()))]
        )
        public_key = dict(request.public_key)
        public_key["extensions"] = {"largeBlob": {"read": True}}
        result = key.client(ORIGIN).get_assertion(public_key).get_response(0)
        assert result.client_extension_results["largeBlob"]["blob"] == b64(b"hello large blob")


# --- the control API and `vfido ctl webauthn` ------------------------------------------------


def test_control_api_and_ctl_cli_speak_the_webdriver_shapes(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = cose.ES256.from_cryptography_key(private.public_key())
    sock = tmp_path / "ctl" / "key.sock"
    with VirtualKey(control_socket=sock) as key, key.controller() as ctl:
        options = ctl.webauthn_options()
        assert options["protocol"] == "ctap2_1" and options["hasUserVerification"] is True
        params = {
            "credentialId": "AQIDBA",
            "isResidentCredential": True,
            "rpId": RP_ID,
            "privateKey": b64(pkcs8(private)),
            "userHandle": b64(b"carol"),
            "signCount": 3,
        }
        added = ctl.webauthn_add_credential(params)
        assert "privateKey" not in added  # the caller has it; printed, it lands in CI logs
        assert {k: added[k] for k in params if k != "privateKey"} == {
            **{k: v for k, v in params.items() if k != "privateKey"},
            "credentialId": "AQIDBA",
        }
        with pytest.raises(ControlError) as info:
            ctl.webauthn_add_credential({**params, "privateKey": "AAAA"})
        assert info.value.webdriver_error == "invalid argument"
        cred = [stored(bytes([1, 2, 3, 4]), public)]
        server, state, response, _ = sign_in(key, cred)
        server.authenticate_complete(state, cred, response)
        assert ctl.webauthn_get_credentials()[0]["signCount"] == 4
        ctl.webauthn_set_credential_properties(b"\x01\x02\x03\x04", backup_eligibility=True)
        assert ctl.webauthn_get_credentials()[0]["backupEligibility"] is True
        ctl.webauthn_set_user_verified(False)
        assert key.presence.mode == "deny-uv"

        def ctl_cli(*argv: str) -> Any:
            result = vfido(["ctl", "--socket", str(sock), "webauthn", *argv])
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout) if result.stdout.strip() else None

        assert ctl_cli("set-user-verified", "true") is None
        assert key.presence.mode == "auto"
        (listed,) = ctl_cli("credentials")
        assert listed["credentialId"] == "AQIDBA"
        other = {**params, "credentialId": "BQYHCA", "userHandle": b64(b"dave")}
        added = ctl_cli("add-credential", json.dumps(other))
        assert added["credentialId"] == "BQYHCA"
        assert "privateKey" not in added  # printed back, it would land in a CI log
        assert added["signCount"] == other["signCount"]
        # A private key need not be on the command line, which every local user can read
        # (/proc/PID/cmdline; a security review): @FILE, or - for standard input.
        held = tmp_path / "credential.json"
        held.write_text(json.dumps({**other, "credentialId": "CQoLDA", "userHandle": b64(b"erin")}))
        assert ctl_cli("add-credential", f"@{held}")["credentialId"] == "CQoLDA"
        piped = subprocess.run(
            [
                *(sys.executable, "-m", "vfido", "ctl", "--socket", str(sock)),
                *("webauthn", "add-credential", "-"),
            ],
            input=json.dumps({**other, "credentialId": "DQ4PEA", "userHandle": b64(b"finn")}),
            env=env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert piped.returncode == 0, piped.stderr
        assert json.loads(piped.stdout)["credentialId"] == "DQ4PEA"
        for argument, said in (
            (f"@{tmp_path / 'missing.json'}", "cannot read JSON file"),
            ("@/dev/zero", "longer than"),
        ):
            bad = vfido(["ctl", "--socket", str(sock), "webauthn", "add-credential", argument])
            assert bad.returncode == 1 and said in bad.stderr, bad.stderr
            assert bad.stderr.count("\n") == 1
        for gone in ("CQoLDA", "DQ4PEA", "AQIDBA"):
            ctl_cli("remove-credential", gone)
        assert [c["credentialId"] for c in ctl_cli("credentials")] == ["BQYHCA"]
        ctl_cli("remove-all-credentials")
        assert ctl_cli("credentials") == []
        bad = vfido(["ctl", "--socket", str(sock), "webauthn", "remove-credential", "AQIDBA"])
        assert bad.returncode == 1 and "no credential" in bad.stderr
        assert "Traceback" not in bad.stderr


def test_u2f_key_signs_with_an_added_credential_under_its_own_key_handle() -> None:
    """protocol ctap1/u2f: a platform talking U2F presents the test's key handle."""
    import hashlib

    from fido2.ctap1 import APDU, ApduError, Ctap1

    private = ec.generate_private_key(ec.SECP256R1())
    public_point = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    with VirtualKey.from_webauthn_options({**CTAP2_OPTIONS, "protocol": "ctap1/u2f"}) as key:
        key.webauthn_add_credential(
            {
                "credentialId": b64(b"u2f-handle"),
                "isResidentCredential": False,
                "rpId": RP_ID,
                "privateKey": b64(pkcs8(private)),
                "signCount": 9,
            }
        )
        app, client = hashlib.sha256(RP_ID.encode()).digest(), bytes(range(32))
        signed = Ctap1(key.device).authenticate(client, app, b"u2f-handle")
        signed.verify(app, client, public_point)
        assert signed.counter == 10
        with pytest.raises(ApduError) as info:
            Ctap1(key.device).authenticate(client, app, b"other-handle")
        assert info.value.code == APDU.WRONG_DATA


#: A CTAP 2.1 key speaks U2F too (versions U2F_V2, FIDO_2_0, FIDO_2_1).
CTAP2_1_OPTIONS: dict[str, Any] = {**CTAP2_OPTIONS, "protocol": "ctap2_1"}


def test_a_removed_credential_no_longer_signs_over_u2f_either() -> None:
    """A credential this key made, then removed (Remove Credential), is not "one of ours"
    over U2F any more: AUTHENTICATE and its check-only form answer "wrong data" (U2F raw
    messages 1.2 section 5.1), as for a key handle the key never issued."""
    import hashlib

    from fido2.ctap1 import APDU, ApduError, Ctap1

    with VirtualKey.from_webauthn_options(CTAP2_1_OPTIONS) as key:
        server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))
        options, state = server.register_begin(
            PublicKeyCredentialUserEntity(id=b"carol", name="carol"),
            resident_key_requirement=ResidentKeyRequirement.DISCOURAGED,
        )
        made = server.register_complete(
            state, key.client(ORIGIN).make_credential(options.public_key)
        )
        assert made.credential_data is not None
        credential_id = made.credential_data.credential_id
        app, client = hashlib.sha256(RP_ID.encode()).digest(), bytes(range(32))
        Ctap1(key.device).authenticate(client, app, credential_id)  # ours before removal
        key.webauthn_remove_credential(b64(credential_id))
        for check_only in (False, True):
            with pytest.raises(ApduError) as info:
                Ctap1(key.device).authenticate(client, app, credential_id, check_only)
            assert info.value.code == APDU.WRONG_DATA


def test_a_u2f_registration_serves_ctap2_on_a_key_that_records_credentials() -> None:
    """A key handle from U2F REGISTER is bound to SHA-256(appId): a platform presents it in a
    getAssertion for that rpIdHash (the appid extension), and makeCredential's excludeList
    must see it (CTAP 2.1 section 6.1.2 step 12, "contains a credential ID created by this
    authenticator, that is bound to the specified rp.id"), on a WebDriver key as on any."""
    import hashlib

    from fido2.ctap import CtapError
    from fido2.ctap1 import Ctap1

    app_id = "https://u2f.example.com"
    app = hashlib.sha256(app_id.encode()).digest()
    with VirtualKey.from_webauthn_options(CTAP2_1_OPTIONS) as key:
        registration = Ctap1(key.device).register(bytes(32), app)
        handle = {"type": "public-key", "id": registration.key_handle}
        ctap2 = Ctap2(key.device)
        assertion = ctap2.get_assertion(app_id, bytes(32), allow_list=[handle])
        assert assertion.credential["id"] == registration.key_handle
        with pytest.raises(CtapError) as info:
            ctap2.make_credential(
                bytes(32),
                {"id": app_id, "name": "u2f"},
                {"id": b"u", "name": "u"},
                [{"type": "public-key", "alg": -7}],
                exclude_list=[handle],
            )
        assert info.value.code == CtapError.ERR.CREDENTIAL_EXCLUDED


# --- an outside review's findings (session 14): each failed before its fix --------------------


def _resident(
    credential_id: bytes, user: bytes, private: Any, rp_id: str = RP_ID
) -> dict[str, Any]:
    return {
        "credentialId": b64(credential_id),
        "isResidentCredential": True,
        "rpId": rp_id,
        "privateKey": b64(pkcs8(private)),
        "userHandle": b64(user),
    }


def test_set_user_verified_changes_only_user_verification() -> None:
    """Section 11.11 sets isUserVerified, nothing else: a key that is not consenting stays
    so, and one answered by hand (``manual``) keeps waiting for `vfido approve`."""
    options = {**CTAP2_OPTIONS, "isUserConsenting": False}
    with VirtualKey.from_webauthn_options(options, presence_timeout=1) as key:
        key.webauthn_set_user_verified(True)
        assert key.webauthn_options_json()["isUserConsenting"] is False
        server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))
        begin, _ = server.register_begin(PublicKeyCredentialUserEntity(id=b"u", name="u"))
        with pytest.raises(ClientError):
            key.client(ORIGIN).make_credential(begin.public_key)
    with VirtualKey(uv=True, presence="manual") as key:
        key.webauthn_set_user_verified(False)
        assert key.presence.mode == "manual" and key.presence.uv_fails
        assert key.webauthn_options_json()["isUserVerified"] is False
        key.webauthn_set_user_verified(True)
        assert key.presence.mode == "manual" and not key.presence.uv_fails
        assert key.webauthn_options_json()["isUserVerified"] is True


def test_a_credential_id_already_there_is_refused_and_nothing_is_replaced() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    with VirtualKey.from_webauthn_options(CTAP2_OPTIONS) as key:
        key.webauthn_add_credential(_resident(b"\x01\x02\x03\x04", b"alice", private))
        for again in (
            _resident(b"\x01\x02\x03\x04", b"bob", private),
            {**_resident(b"\x01\x02\x03\x04", b"bob", private, "other.example")}
            | {"isResidentCredential": False},
        ):
            with pytest.raises(WebAuthnError) as info:
                key.webauthn_add_credential(again)
            assert info.value.code == "invalid argument"
        (listed,) = key.webauthn_get_credentials()
        assert (listed["rpId"], unb64(listed["userHandle"])) == (RP_ID, b"alice")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"isUserConsenting": None}, "isUserConsenting must be a boolean"),
        ({"protocol": "ctap2", "extensions": ["largeBlob"]}, "needs a ctap2_1 authenticator"),
        ({"protocol": "ctap1/u2f", "extensions": ["prf"]}, "needs a ctap2_1 authenticator"),
        ({"defaultBackupState": True}, "BS without BE"),
    ],
)
def test_options_chrome_refuses_are_refused(change: dict[str, Any], why: str) -> None:
    with pytest.raises(WebAuthnError) as info:
        AuthenticatorOptions.from_json({**CTAP2_OPTIONS, **change})
    assert info.value.code == "invalid argument" and why in str(info.value)


def test_backup_state_without_backup_eligibility_is_refused() -> None:
    """WebAuthn L3 section 6.1.3: BE 0, BS 1: "This combination is not allowed." Get
    Credentials would have said BS while every assertion said neither."""
    private = ec.generate_private_key(ec.SECP256R1())
    with VirtualKey.from_webauthn_options(CTAP2_OPTIONS) as key:
        with pytest.raises(WebAuthnError, match="BS without BE"):
            key.webauthn_add_credential({**_resident(b"\x05", b"u", private), "backupState": True})
        key.webauthn_add_credential(_resident(b"\x06", b"v", private))
        with pytest.raises(WebAuthnError, match="BS without BE"):
            key.webauthn_set_credential_properties(b"\x06", backup_state=True)
        (listed,) = key.webauthn_get_credentials()
        assert (listed["backupEligibility"], listed["backupState"]) == (False, False)


@pytest.mark.parametrize(
    ("persona", "protocol", "extensions"),
    [
        ("u2f", "ctap1/u2f", []),
        ("ctap20", "ctap2", ["prf"]),
        ("ctap21pre", "ctap2", ["prf"]),  # 2.1-PRE is not CTAP 2.1
        ("ctap21", "ctap2_1", ["largeBlob", "credBlob", "minPinLength", "prf"]),
    ],
)
def test_a_persona_reports_its_own_protocol_and_extensions(
    persona: str, protocol: str, extensions: list[str]
) -> None:
    """A persona's options are what it is, and options Add Virtual Authenticator accepts
    (a u2f persona said ctap2_1; then, a CTAP 2.0 persona listed largeBlob: second review)."""
    with VirtualKey(persona=persona) as key:
        options = key.webauthn_options_json()
        assert (options["protocol"], options["extensions"]) == (protocol, extensions)
        assert AuthenticatorOptions.from_json(options).to_json() == options
        if protocol == "ctap1/u2f":
            assert not options["hasResidentKey"] and not options["hasUserVerification"]


@pytest.mark.parametrize(
    ("versions", "protocol", "extensions"),
    [("FIDO_2_0", "ctap2", ["prf"]), ("U2F_V2", "ctap1/u2f", [])],
)
def test_a_versions_behaviour_reports_options_add_virtual_authenticator_takes(
    versions: str, protocol: str, extensions: list[str]
) -> None:
    with VirtualKey(behaviours={"versions": versions}) as key:
        options = key.webauthn_options_json()
        assert (options["protocol"], options["extensions"]) == (protocol, extensions)
        assert AuthenticatorOptions.from_json(options).to_json() == options
