"""Device identity: AAGUID, credential-sealing key and packed attestation material.

:func:`new_identity` makes a self-signed P-256 attestation root CA and a batch
certificate issued by it that meets the FIDO packed attestation certificate
requirements (WebAuthn Level 2, section 8.2.1):

* X.509 version 3;
* subject C (ISO 3166 two-letter code), O (vendor), OU = "Authenticator
  Attestation", CN (vendor-chosen);
* Basic Constraints CA=false (marked critical);
* the non-critical extension id-fido-gen-ce-aaguid (1.3.6.1.4.1.45724.1.1.4)
  whose value is the DER OCTET STRING holding the 16-byte AAGUID.
"""

from __future__ import annotations

import datetime
from dataclasses import replace

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vfido.keystore import entropy
from vfido.keystore.store import DeviceIdentity

AAGUID_SIZE = 16
CREDENTIAL_KEY_SIZE = 32

ID_FIDO_GEN_CE_AAGUID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")

COUNTRY = "US"
ORGANIZATION = "vfido"
BATCH_OU = "Authenticator Attestation"
BATCH_CN = "vfido Batch Certificate"
ROOT_CN = "vfido Attestation Root CA"

_VALIDITY = datetime.timedelta(days=20 * 365)


def _name(ou: str, cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def aaguid_extension_value(aaguid: bytes) -> bytes:
    """DER OCTET STRING of ``aaguid`` (the value of id-fido-gen-ce-aaguid)."""
    if len(aaguid) != AAGUID_SIZE:
        raise ValueError("AAGUID must be 16 bytes")
    return bytes([0x04, AAGUID_SIZE]) + aaguid


def _make_chain(aaguid: bytes) -> tuple[bytes, bytes, bytes]:
    """(batch key PKCS#8 DER, batch cert DER, root cert DER)."""
    not_before = entropy.utc_now() - datetime.timedelta(days=1)
    not_after = not_before + _VALIDITY

    root_key = entropy.ec_private_key(ec.SECP256R1())
    root_name = _name("Attestation Root", ROOT_CN)
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root_cert = entropy.sign_certificate(
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(entropy.x509_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(root_ski, critical=False),
        root_key,
    )

    batch_key = entropy.ec_private_key(ec.SECP256R1())
    batch_cert = entropy.sign_certificate(
        x509.CertificateBuilder()
        .subject_name(_name(BATCH_OU, BATCH_CN))
        .issuer_name(root_name)
        .public_key(batch_key.public_key())
        .serial_number(entropy.x509_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(batch_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(ID_FIDO_GEN_CE_AAGUID, aaguid_extension_value(aaguid)),
            critical=False,
        ),
        root_key,
    )
    # The root private key is discarded: nothing else is ever signed by it.
    batch_der = batch_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return (
        batch_der,
        batch_cert.public_bytes(serialization.Encoding.DER),
        root_cert.public_bytes(serialization.Encoding.DER),
    )


def new_identity(aaguid: bytes | None = None) -> DeviceIdentity:
    """A fresh device identity (random AAGUID unless given)."""
    if aaguid is None:
        aaguid = entropy.random_bytes(AAGUID_SIZE)
    if len(aaguid) != AAGUID_SIZE:
        raise ValueError("AAGUID must be 16 bytes")
    attestation_key, batch_cert, root_cert = _make_chain(aaguid)
    return DeviceIdentity(
        aaguid=aaguid,
        credential_key=entropy.random_bytes(CREDENTIAL_KEY_SIZE),
        attestation_key=attestation_key,
        attestation_chain=(batch_cert, root_cert),
    )


def rotate_credential_key(identity: DeviceIdentity) -> DeviceIdentity:
    """The same identity with a new random credential key (for authenticatorReset)."""
    return replace(identity, credential_key=entropy.random_bytes(CREDENTIAL_KEY_SIZE))


# --- serialization (used by the keystore to store the identity) -------------

_F_AAGUID = 1
_F_CREDENTIAL_KEY = 2
_F_ATTESTATION_KEY = 3
_F_CHAIN = 4
_F_BACKUP_ELIGIBLE = 5  # present only when true


def identity_to_bytes(identity: DeviceIdentity) -> bytes:
    """Canonical CBOR encoding of ``identity`` (contains secrets: encrypt before storing)."""
    data: dict[int, object] = {
        _F_AAGUID: identity.aaguid,
        _F_CREDENTIAL_KEY: identity.credential_key,
        _F_ATTESTATION_KEY: identity.attestation_key,
        _F_CHAIN: list(identity.attestation_chain),
    }
    if identity.backup_eligible:
        data[_F_BACKUP_ELIGIBLE] = True
    return bytes(cbor2.dumps(data, canonical=True))


def identity_from_bytes(data: bytes) -> DeviceIdentity:
    """Inverse of :func:`identity_to_bytes`. Raises ValueError if malformed."""
    try:
        m = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types
        raise ValueError("malformed device identity") from exc
    if not isinstance(m, dict):
        raise ValueError("malformed device identity")
    aaguid = m.get(_F_AAGUID)
    cred_key = m.get(_F_CREDENTIAL_KEY)
    att_key = m.get(_F_ATTESTATION_KEY)
    chain = m.get(_F_CHAIN)
    backup_eligible = m.get(_F_BACKUP_ELIGIBLE, False)
    if (
        not isinstance(aaguid, bytes)
        or len(aaguid) != AAGUID_SIZE
        or not isinstance(cred_key, bytes)
        or len(cred_key) != CREDENTIAL_KEY_SIZE
        or not isinstance(att_key, bytes)
        or not isinstance(chain, list)
        or not chain
        or not all(isinstance(c, bytes) for c in chain)
        or type(backup_eligible) is not bool
    ):
        raise ValueError("malformed device identity")
    return DeviceIdentity(
        aaguid=aaguid,
        credential_key=cred_key,
        attestation_key=att_key,
        attestation_chain=tuple(chain),
        backup_eligible=backup_eligible,
    )
