"""Relying-party side for tests: two independent verifiers (python-fido2 and py_webauthn).

Every registration and assertion produced by the key in the end-to-end tests
goes through both, including the attestation trust path up to the keystore's
own attestation root.

The ceremonies themselves, for any python-fido2 ``Fido2Client`` (an in-process key's, a
:class:`vfido.api.VirtualKey`'s, one over UDP to a running service): :func:`register`,
:func:`sign_in`, and :func:`assertion` for a sign-in the test verifies itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import webauthn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fido2.attestation.base import AttestationVerifier
from fido2.client import Fido2Client
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestationObject,
    AttestedCredentialData,
    AuthenticationResponse,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    RegistrationResponse,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.structs import AttestationFormat

ORIGIN = "https://example.com"
RP_ID = "example.com"

#: What py_webauthn can verify (it has no ES384).
WEBAUTHN_ALGS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.ECDSA_SHA_512,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]


class _RootVerifier(AttestationVerifier):
    """python-fido2 attestation verifier trusting exactly one root certificate.

    A self attestation (the credential signs for itself) has no certificate, so no trust
    path: python-fido2 would check the root alone against itself and call the attestation
    trusted. So it is refused unless the RP says it accepts one (``uncertified``), and a
    test that expects a chain to the root cannot pass without one.
    """

    def __init__(self, root_der: bytes, uncertified: bool = False) -> None:
        super().__init__()
        self._root = root_der
        self._uncertified = uncertified

    def ca_lookup(self, attestation_result: Any, auth_data: Any) -> bytes | None:
        if not attestation_result.trust_path and not self._uncertified:
            return None  # UntrustedAttestation: "No root found for Authenticator"
        return self._root


@dataclass
class RelyingParty:
    """A relying party that checks everything twice."""

    root_der: bytes | None = None  # trust anchor for packed/fido-u2f attestation
    rp_id: str = RP_ID
    origin: str = ORIGIN
    attestation: str = "direct"
    credentials: list[AttestedCredentialData] = field(default_factory=list)
    counters: dict[bytes, int] = field(default_factory=dict)
    public_keys: dict[bytes, bytes] = field(default_factory=dict)  # id -> COSE (py_webauthn)
    #: Accept a self attestation (no certificate) beside ``root_der``'s chain.
    uncertified: bool = False

    def __post_init__(self) -> None:
        verifier = _RootVerifier(self.root_der, self.uncertified) if self.root_der else None
        self.server = Fido2Server(
            PublicKeyCredentialRpEntity(name="Example", id=self.rp_id),
            attestation=self.attestation,  # type: ignore[arg-type]
            verify_attestation=verifier,
        )

    # --- registration ----------------------------------------------------
    def begin_registration(
        self,
        user_id: bytes = b"user-1",
        user_name: str = "alice",
        **kwargs: Any,
    ) -> tuple[Any, Any]:
        return self.server.register_begin(
            PublicKeyCredentialUserEntity(id=user_id, name=user_name, display_name=user_name),
            self.credentials,
            **kwargs,
        )

    def complete_registration(
        self, state: Any, response: RegistrationResponse, challenge: bytes
    ) -> AttestedCredentialData:
        auth_data = self.server.register_complete(state, response)
        cred = auth_data.credential_data
        assert cred is not None
        # Independent check with py_webauthn, attestation trust path included.
        roots = None
        if self.root_der:
            pem = x509.load_der_x509_certificate(self.root_der).public_bytes(
                serialization.Encoding.PEM
            )
            roots = {AttestationFormat.PACKED: [pem], AttestationFormat.FIDO_U2F: [pem]}
        alg = cred.public_key[3]
        if alg in [a.value for a in WEBAUTHN_ALGS]:
            verified = webauthn.verify_registration_response(
                credential=json.dumps(dict(response)),
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                supported_pub_key_algs=WEBAUTHN_ALGS,
                pem_root_certs_bytes_by_fmt=roots,
            )
            assert verified.credential_id == cred.credential_id
            self.public_keys[cred.credential_id] = verified.credential_public_key
        self.credentials.append(cred)
        self.counters[cred.credential_id] = auth_data.counter
        return cred

    # --- authentication --------------------------------------------------
    def begin_authentication(self, **kwargs: Any) -> tuple[Any, Any]:
        return self.server.authenticate_begin(self.credentials, **kwargs)

    def complete_authentication(
        self, state: Any, response: AuthenticationResponse, challenge: bytes
    ) -> int:
        """Verify with both libraries; return the new signature counter."""
        self.server.authenticate_complete(state, self.credentials, response)
        auth_data = response.response.authenticator_data
        cred_id = response.raw_id
        previous = self.counters.get(cred_id, 0)
        if cred_id in self.public_keys:
            verified = webauthn.verify_authentication_response(
                credential=json.dumps(dict(response)),
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                credential_public_key=self.public_keys[cred_id],
                credential_current_sign_count=previous,
            )
            assert verified.new_sign_count == auth_data.counter
        self.counters[cred_id] = auth_data.counter
        return auth_data.counter


def challenge_of(options: Any) -> bytes:
    return bytes(options.public_key.challenge)


def attestation_fmt(response: RegistrationResponse) -> str:
    obj: AttestationObject = response.response.attestation_object
    return obj.fmt


def random_user() -> tuple[bytes, str]:
    uid = os.urandom(16)
    return uid, "user-" + uid.hex()[:8]


# --- the ceremonies ------------------------------------------------------------------------


def register(
    client: Fido2Client,
    rp: RelyingParty,
    *,
    rk: bool = False,
    uv: str | None = None,
    user: tuple[bytes, str] | None = None,
) -> RegistrationResponse:
    """One registration: ``rp`` asks for a credential for ``user`` (id, name; a random one by
    default), ``client`` makes it, ``rp`` verifies it with both libraries and keeps it. Raises
    what the client or the RP raises. ``rk`` asks for a discoverable credential.

    ``uv`` defaults to "discouraged", but to "preferred" for ``rk`` on a key with built-in UV
    (as browsers do): such a key without a PIN refuses a discoverable credential without UV
    with OPERATION_DENIED (CTAP 2.1 section 6.1.2 step 7: PUAT_REQUIRED only "if ClientPin
    option ID is true"), and python-fido2 retries with UV only on PUAT_REQUIRED."""
    if uv is None:
        uv = "preferred" if rk and client.info.options.get("uv") else "discouraged"
    user_id, name = user or random_user()
    options, state = rp.begin_registration(
        user_id,
        name,
        resident_key_requirement=(
            ResidentKeyRequirement.REQUIRED if rk else ResidentKeyRequirement.DISCOURAGED
        ),
        user_verification=UserVerificationRequirement(uv),
    )
    response = client.make_credential(options.public_key)
    rp.complete_registration(state, response, challenge_of(options))
    return response


def assertion(
    client: Fido2Client, rp: RelyingParty, *, allow: bool = True
) -> tuple[Any, AuthenticationResponse, bytes]:
    """One sign-in up to the client's answer, not yet verified: (state, response, challenge)
    for :meth:`RelyingParty.complete_authentication`. The allowList holds ``rp``'s
    credentials, or is empty with ``allow=False`` (a discoverable credential answers)."""
    options, state = rp.server.authenticate_begin(
        rp.credentials if allow else None,
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    response = client.get_assertion(options.public_key).get_response(0)
    return state, response, challenge_of(options)


def sign_in(client: Fido2Client, rp: RelyingParty, *, allow: bool = True) -> int:
    """A sign-in both RP libraries accept (see :func:`assertion`); the new counter."""
    state, response, challenge = assertion(client, rp, allow=allow)
    return rp.complete_authentication(state, response, challenge)
