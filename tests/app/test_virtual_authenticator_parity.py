"""WebDriver parity with Chromium's built-in virtual authenticator (issue #17):

* ``hasResidentKey: false`` is a key without discoverable-credential storage: getInfo says
  ``rk`` false and a makeCredential with ``rk`` is refused with UNSUPPORTED_OPTION (CTAP 2.1
  section 6.1.2 step 5.4), so the browser is never offered discoverable credentials;
* Get Credentials lists the server-side credentials the browser made on a key created through
  the virtual-authenticator API, and Remove Credential revokes one. The key records their
  sealed IDs in its keystore: nothing secret in plaintext on disk.

python-fido2 drives the key over CTAPHID; fido2.server verifies with the public key the
listed private key derives, never with what the key says about its credentials.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from fido2 import cose
from fido2.client import ClientError
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestedCredentialData,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from tests.rp import ORIGIN, RP_ID
from vfido.api import VirtualKey

OPTIONS: dict[str, Any] = {
    "protocol": "ctap2",
    "transport": "usb",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserConsenting": True,
    "isUserVerified": True,
}
NO_RK = {**OPTIONS, "hasResidentKey": False}


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def server() -> Fido2Server:
    return Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))


def register(key: VirtualKey, user: bytes, rk: str = "discouraged") -> AttestedCredentialData:
    rp = server()
    options, state = rp.register_begin(
        PublicKeyCredentialUserEntity(id=user, name=user.decode()),
        resident_key_requirement=ResidentKeyRequirement(rk),
    )
    made = key.client(ORIGIN).make_credential(options.public_key)
    data = rp.register_complete(state, made)
    assert data.credential_data is not None
    return data.credential_data


def sign_in(key: VirtualKey, credentials: list[AttestedCredentialData]) -> None:
    rp = server()
    options, state = rp.authenticate_begin(
        credentials, user_verification=UserVerificationRequirement.DISCOURAGED
    )
    response = key.client(ORIGIN).get_assertion(options.public_key).get_response(0)
    rp.authenticate_complete(state, credentials, response)


def test_has_resident_key_false_says_rk_false_and_refuses_rk() -> None:
    with VirtualKey.from_webauthn_options(NO_RK) as key:
        ctap2 = Ctap2(key.device)
        info = ctap2.get_info()
        assert info.options["rk"] is False
        assert info.remaining_disc_creds in (None, 0)
        # CTAP 2.1 section 6.1.2 step 5.4: rk that the key cannot serve -> UNSUPPORTED_OPTION.
        with pytest.raises(CtapError) as refused:
            ctap2.make_credential(
                b"\x01" * 32,
                {"id": RP_ID, "name": "Example"},
                {"id": b"u", "name": "u"},
                [{"type": "public-key", "alg": -7}],
                options={"rk": True},
            )
        assert refused.value.code == CtapError.ERR.UNSUPPORTED_OPTION
        # The client sees no rk: residentKey "required" fails, "preferred" makes a
        # server-side credential that is listed as such.
        with pytest.raises(ClientError):
            register(key, b"alice", "required")
        made = register(key, b"bob", "preferred")
        (listed,) = key.webauthn_get_credentials()
        assert unb64(listed["credentialId"]) == made.credential_id
        assert listed["isResidentCredential"] is False
        assert key.webauthn_options_json()["hasResidentKey"] is False


def test_has_resident_key_true_keeps_rk() -> None:
    with VirtualKey.from_webauthn_options(OPTIONS) as key:
        assert Ctap2(key.device).get_info().options["rk"] is True
        register(key, b"carol", "required")
        assert key.webauthn_get_credentials()[0]["isResidentCredential"] is True
    # A key not made from options keeps its rk storage too.
    with VirtualKey() as plain:
        assert Ctap2(plain.device).get_info().options["rk"] is True


def test_get_credentials_lists_the_server_side_credentials_the_browser_made() -> None:
    with VirtualKey.from_webauthn_options(OPTIONS) as key:
        made = [register(key, b"dave"), register(key, b"erin", "required")]
        listed = {unb64(c["credentialId"]): c for c in key.webauthn_get_credentials()}
        assert set(listed) == {m.credential_id for m in made}
        server_side = listed[made[0].credential_id]
        assert server_side["isResidentCredential"] is False and server_side["rpId"] == RP_ID
        assert "userHandle" not in server_side
        # Its private key is the credential's: the key it derives verifies a sign-in.
        private = serialization.load_der_private_key(unb64(server_side["privateKey"]), None)
        public = cose.CoseKey.for_alg(made[0].public_key[3]).from_cryptography_key(
            private.public_key()  # type: ignore[arg-type]
        )
        assert dict(public) == dict(made[0].public_key)
        sign_in(key, [AttestedCredentialData.create(bytes(16), made[0].credential_id, public)])
        counted = [
            c
            for c in key.webauthn_get_credentials()
            if c["credentialId"] == server_side["credentialId"]
        ]
        assert counted[0]["signCount"] >= 1
        # Remove Credential revokes it, as in the browser's own authenticator.
        key.webauthn_remove_credential(made[0].credential_id)
        with pytest.raises(ClientError):
            sign_in(key, [made[0]])
        assert [unb64(c["credentialId"]) for c in key.webauthn_get_credentials()] == [
            made[1].credential_id
        ]
        key.webauthn_remove_all_credentials()
        assert key.webauthn_get_credentials() == []


def test_server_side_credentials_on_a_plain_key_are_not_recorded() -> None:
    # A key not made through the virtual-authenticator API keeps nothing for them: a
    # credential lives in its ID (the relying party keeps it), as on a hardware key.
    with VirtualKey() as key:
        made = register(key, b"frank")
        assert key.webauthn_get_credentials() == []
        sign_in(key, [made])


def test_the_record_keeps_nothing_secret_in_plaintext(tmp_path: Path) -> None:
    # A keystore on disk: a key made from options with it, a credential made by a client.
    store_dir = tmp_path / "ks"
    with VirtualKey.from_webauthn_options(
        OPTIONS, keystore=store_dir, passphrase="pass phrase", create=True
    ) as key:
        made = register(key, b"grace")
        (listed,) = key.webauthn_get_credentials()
        private = unb64(listed["privateKey"])
        raw_private = serialization.load_der_private_key(private, None)
    numbers = raw_private.private_numbers()  # type: ignore[union-attr]
    secret = numbers.private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    files = [p for p in store_dir.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        assert secret not in data and private not in data
        assert path.stat().st_mode & 0o077 == 0
    assert made.credential_id  # the ID itself is the sealed private key, public by design
